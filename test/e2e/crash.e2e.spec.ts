import { describe, expect, it, jest } from '@jest/globals';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ansibleConfig } from '../support/ansible.js';
import { ADMIN_KEY, Client, basic, ledgerFile } from '../support/server.js';
import { setTimeout as sleep } from 'node:timers/promises';

jest.setTimeout(300_000);
const MAIN = fileURLToPath(new URL('../../dist/src/main.js', import.meta.url));


async function poll<T>(what: string, probe: () => Promise<T | undefined>, ms = 120_000): Promise<T> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function server(dataDir: string, config: string, port: number): ChildProcess {
  return spawn(process.execPath, [MAIN], {
    env: { ...process.env, DUFFY_DATA_DIR: dataDir, DUFFY_CONFIG: config, DUFFY_PORT: String(port), DUFFY_ADMIN_KEY: ADMIN_KEY, NODE_OPTIONS: '' },
    stdio: 'ignore',
  });
}

describe('kill -9 while playbooks run', () => {
  it('after restart: the hand-over whose caller died with the process ends, and its machines go back, each provisioned at most once for it', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-crash-'));
    const config = ansibleConfig([{ name: 'k', contextualize: true }], [{ hostname: 'crash-1.test', pool: 'k' }, { hostname: 'crash-2.test', pool: 'k' }]);
    const port = 20000 + Math.floor(Math.random() * 20000);
    const url = `http://127.0.0.1:${port}`;
    const file = join(dataDir, 'ledger.sqlite');
    const admin = new Client(url, basic('admin', ADMIN_KEY));

    let child = server(dataDir, config, port);
    try {
      await poll('the server', async () => ((await admin.get('/api/v1/pools')).status === 200 ? true : undefined));
      // The request waits for provisioning; kill the server as soon as a playbook for it is running.
      void admin.post('/api/v1/sessions', { nodes_specs: [{ pool: 'k', quantity: 2 }] }).catch(() => undefined);
      await poll('a running playbook of the hand-over', async () =>
        (await ledgerFile(file)).some((e) => e.type === 'PlaybookStarted' && e.data.sessionId !== null) ? true : undefined,
      );
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const before = await ledgerFile(file);
      expect(before.some((e) => e.type === 'MachineContextualized')).toBe(false);
      const sessionId = before.find((e) => e.type === 'MachineRequested')!.data.sessionId as number;

      child = server(dataDir, config, port);
      const session = await poll('the orphaned session to end', async () => {
        const s = (await admin.get(`/api/v1/sessions/${sessionId}`)).body?.session;
        return s && !s.active ? s : undefined;
      });
      expect(session.active).toBe(false);
      // Both machines back in the pool (unused or ready, as far as their provisioning got), free for the next request.
      await poll('both machines back', async () => {
        const nodes = (await admin.get('/api/v1/nodes')).body?.nodes ?? [];
        return nodes.length === 2 && nodes.every((n: { state: string }) => n.state === 'ready' || n.state === 'unused') ? true : undefined;
      });
      expect((await admin.post('/api/v1/sessions', { nodes_specs: [{ pool: 'k', quantity: 2 }] })).status).toBe(201);
      const after = await ledgerFile(file);
      expect(after.find((e) => e.type === 'SessionFailed' && e.data.sessionId === sessionId)?.data.reason).toMatch(/Duffy restarted before the machines were handed over/);
      for (const host of ['crash-1.test', 'crash-2.test']) {
        const mine = after.filter((e) => e.stream === `machine-${host}`);
        expect(mine.filter((e) => e.type === 'MachineProvisioned' && e.data.sessionId === sessionId).length).toBeLessThanOrEqual(1);
        expect(mine.filter((e) => e.type === 'MachineContextualized' && e.data.sessionId === sessionId)).toHaveLength(0);
      }
    } finally {
      child.kill('SIGKILL');
    }
  });
});
