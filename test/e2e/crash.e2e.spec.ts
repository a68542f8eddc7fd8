import { describe, expect, it, jest } from '@jest/globals';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
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

describe('two starts at once after a kill -9', () => {
  it('only one of two processes taking over a dead holder\'s lock at the same instant gets it', async () => {
    // Each child takes the lock at an agreed instant and says whether it got it; each trial starts from a dead pid's lock.
    const lockModule = fileURLToPath(new URL('../../dist/src/adapters/eventstore/data-dir-lock.js', import.meta.url));
    const work = mkdtempSync(join(tmpdir(), 'duffy-lock-race-'));
    const child = join(work, 'take.mjs');
    writeFileSync(
      child,
      `const { lockDataDir } = await import(${JSON.stringify(lockModule)});
      const at = Number(process.argv[3]);
      while (Date.now() < at) {}
      try { lockDataDir(process.argv[2]); console.log('held'); } catch { console.log('refused'); }
      setTimeout(() => {}, 200);`,
    );
    const take = (dir: string, at: number) =>
      new Promise<string>((resolve) => {
        const c = spawn(process.execPath, [child, dir, String(at)], { env: { ...process.env, NODE_OPTIONS: '' } });
        let out = '';
        c.stdout!.on('data', (d) => (out += d));
        c.once('exit', () => resolve(out.trim()));
      });
    const outcomes: string[] = [];
    for (let trial = 0; trial < 24; trial++) {
      const dir = mkdtempSync(join(work, 'data-'));
      writeFileSync(join(dir, 'duffy.lock'), JSON.stringify({ pid: 2 ** 22 + 1, host: hostname(), since: '2026-01-01T00:00:00Z' }) + '\n');
      const at = Date.now() + 500;
      outcomes.push((await Promise.all([take(dir, at), take(dir, at)])).sort().join('+'));
    }
    // Before the takeover was serialized about one trial in four had both hold it: two writers on one embedded ledger.
    expect(outcomes.filter((o) => o !== 'held+refused')).toEqual([]);
  });
});
