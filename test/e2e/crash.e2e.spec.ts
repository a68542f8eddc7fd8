import { describe, expect, it, jest } from '@jest/globals';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ansibleConfig } from '../support/ansible.js';
import { ADMIN_KEY, Client, basic, ledgerFile } from '../support/server.js';
import { setTimeout as sleep } from 'node:timers/promises';

jest.setTimeout(300_000);
const MAIN = fileURLToPath(new URL('../../dist/src/main.js', import.meta.url));
const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));


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
      // Its tenant reads why in the session itself, not only in the ledger.
      expect(session.data.failed).toMatch(/Duffy restarted before the machines were handed over/);
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
      setTimeout(() => {}, 60_000);`,
    );
    // Each answers once it has decided, and holds what it got until the trial is over (a holder that exits at once
    // would leave a dead holder's lock, which the other then rightly takes over).
    const take = (dir: string, at: number) =>
      new Promise<{ said: string; child: ReturnType<typeof spawn> }>((resolve) => {
        const c = spawn(process.execPath, [child, dir, String(at)], { env: { ...process.env, NODE_OPTIONS: '' } });
        let out = '';
        c.stdout!.on('data', (d) => {
          out += d;
          if (out.includes('\n')) resolve({ said: out.trim(), child: c });
        });
        c.once('exit', () => resolve({ said: out.trim(), child: c }));
      });
    const outcomes: string[] = [];
    for (let trial = 0; trial < 24; trial++) {
      const dir = mkdtempSync(join(work, 'data-'));
      writeFileSync(join(dir, 'duffy.lock'), JSON.stringify({ pid: 2 ** 22 + 1, host: hostname(), since: '2026-01-01T00:00:00Z' }) + '\n');
      const at = Date.now() + 500;
      const both = await Promise.all([take(dir, at), take(dir, at)]);
      for (const { child: c } of both) c.kill('SIGKILL');
      outcomes.push(both.map((b) => b.said).sort().join('+'));
    }
    // Before the takeover was serialized about one trial in four had both hold it: two writers on one embedded ledger.
    expect(outcomes.filter((o) => o !== 'held+refused')).toEqual([]);
  }, 180_000);
});

describe('kill -9 loops under load, with playbooks, leases and collections under way', () => {
  it('afterwards every machine settles in service, nothing is held or claimed, the read models equal the World and a rebuild, and the audit is clean', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-chaos-'));
    const hosts = (prefix: string, n: number, state: string) => Array.from({ length: n }, (_, i) => ({ hostname: `${prefix}-${i + 1}.test`, pool: prefix, state }));
    const config = ansibleConfig(
      [
        // Timeouts with room for 5 local runs at once on 2 slow cores (a release took 17 s there, so 20 s quarantined
        // machines that were only slow); a killed run's claim is taken back at its deadline, hence not more.
        { name: 'rb', 'release-policy': 'rebuild', 'collect-artifacts': true, 'playbook-timeout': 60, 'handover-timeout': 90 },
        { name: 'ru', contextualize: false },
      ],
      // rb's machines are installed (a hand-over is one contextualize) and are rebuilt after use: a run or two under way at most kills.
      [...hosts('rb', 5, 'ready'), ...hosts('ru', 6, 'ready')],
      // Leases of seconds (longer than a hand-over under this load): expiries land between the kills too.
      { 'node-quota': 3, 'session-lifetime': 12, 'session-lifetime-max': 30 },
    );
    const { url, admin, up, kill, start } = killable(dataDir, config);
    try {
      await up();
      const tenants: Client[] = [];
      for (let i = 0; i < 8; i++) {
        const r = await admin.post('/api/v1/tenants', { name: `chaos-${i}`, ssh_key: `ssh-ed25519 AAAAC3Nza chaos-${i}@ci` });
        tenants.push(new Client(url, basic(`chaos-${i}`, r.body.tenant.api_key)));
      }
      const acknowledged = new Map<number, { nodes: number[]; files: string[] }>();
      for (let round = 0; round < 4; round++) {
        let stop = false;
        const load = Array.from({ length: 32 }, async (_, i) => {
          const c = tenants[i % tenants.length];
          while (!stop) {
            const pool = Math.random() < 0.5 ? 'rb' : 'ru';
            const r = await c.post('/api/v1/sessions', { nodes_specs: [{ pool, quantity: 1 + (i % 2) }] }).catch(() => undefined);
            if (r?.status !== 201) {
              await sleep(200);
              continue;
            }
            const id = r.body.session.id as number;
            // The job leaves a file on each collecting machine: its release must list it in the session. (Under this
            // load a hand-over takes longer than most rounds: the next test kills collections on purpose.)
            const files: string[] = [];
            for (const n of r.body.session.nodes.filter((n: { pool: string }) => n.pool === 'rb')) {
              const dir = join(dataDir, 'machines', n.hostname, 'root', 'artifacts');
              mkdirSync(dir, { recursive: true });
              writeFileSync(join(dir, `s${id}.txt`), `session ${id}`);
              files.push(`${n.hostname}/s${id}.txt`);
            }
            acknowledged.set(id, { nodes: r.body.session.nodes.map((n: { id: number }) => n.id), files });
            // Half are released at once, the rest left to expire.
            if (Math.random() < 0.5) await c.put(`/api/v1/sessions/${id}`, { active: false }).catch(() => undefined);
          }
        });
        await sleep(4000 + Math.random() * 6000);
        await kill();
        stop = true;
        await Promise.all(load);
        // Once more during the next start-up's catch-up.
        start();
        await sleep(200 + Math.random() * 1500);
        await kill();
        start();
        await up();
      }

      // Settles: no session open, every machine in service and ready or unused, within the leases and timeouts.
      let seen = '';
      const nodes = await poll('every machine back', async () => {
        const open = (await admin.get('/api/v1/sessions')).body.sessions.filter((s: { active: boolean }) => s.active);
        const all = (await admin.get('/api/v1/nodes')).body.nodes as Array<{ hostname: string; state: string; service: string }>;
        const away = all.filter((n) => !(n.service === 'in-service' && ['ready', 'unused'].includes(n.state)));
        // What a time-out reports: what was still open or away at the last look.
        seen = JSON.stringify({ open, away });
        return open.length === 0 && away.length === 0 ? all : undefined;
      }, 240_000).catch((err: Error) => {
        throw new Error(`${err.message}; last seen ${seen}`);
      });
      expect(nodes).toHaveLength(11);
      expect(readdirSync(join(dataDir, 'runs'))).toEqual([]);
      // Every acknowledged session is whole: its machines, and the files its job left.
      expect(acknowledged.size).toBeGreaterThan(0);
      if (process.env.DUFFY_TEST_LOG) console.log(`${acknowledged.size} sessions acknowledged, ${[...acknowledged.values()].filter((a) => a.files.length > 0).length} with files`);
      for (const [id, { nodes: held, files }] of acknowledged) {
        const s = (await admin.get(`/api/v1/sessions/${id}`)).body.session;
        expect({ id, nodes: s.nodes.map((n: { id: number }) => n.id).sort() }).toEqual({ id, nodes: [...held].sort() });
        for (const f of files) expect({ id, listed: (s.data.artifacts ?? []).some((a: string) => a.endsWith(f)) }).toEqual({ id, listed: true });
      }
      // The World (metrics) and the read models (pool levels) agree.
      const metrics = String((await admin.get('/metrics')).body);
      for (const pool of ['rb', 'ru']) {
        const levels = Object.entries((await admin.get(`/api/v1/pools/${pool}`)).body.pool.levels as Record<string, number>).filter(([, n]) => n > 0);
        const world = [...metrics.matchAll(new RegExp(`^duffy_machines\\{pool="${pool}",state="([^"]+)"\\} (\\d+)$`, 'gm'))].map((m): [string, number] => [m[1], Number(m[2])]).filter(([, n]) => n > 0);
        expect({ pool, levels: Object.fromEntries(levels) }).toEqual({ pool, levels: Object.fromEntries(world) });
      }
      // Nothing held, no quota left claimed: every tenant takes its whole quota again.
      for (const c of tenants) {
        const r = await poll('a whole quota', async () => {
          const r = await c.post('/api/v1/sessions', { nodes_specs: [{ pool: 'ru', quantity: 3 }] });
          return r.status === 422 ? undefined : r;
        });
        expect(r.status).toBe(201);
        expect((await c.put(`/api/v1/sessions/${r.body.session.id}`, { active: false })).status).toBe(200);
      }
      // The read models after all this equal the ones rebuilt from the ledger.
      const snapshot = async () =>
        JSON.stringify([
          (await admin.get('/api/v1/nodes')).body,
          (await admin.get('/api/v1/tenants')).body,
          ...(await Promise.all([...acknowledged.keys()].map(async (id) => (await admin.get(`/api/v1/sessions/${id}`)).body))),
        ]);
      const before = await snapshot();
      await kill();
      for (const suffix of ['', '-wal', '-shm']) rmSync(join(dataDir, `readmodels.sqlite${suffix}`), { force: true });
      start();
      await up();
      expect(await snapshot()).toBe(before);
      await kill();
      for (const command of ['verify', 'replay']) {
        const r = spawnSync(process.execPath, [CLI, 'audit', '--ledger', join(dataDir, 'ledger.sqlite'), command], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
        expect({ command, status: r.status, out: r.status === 0 ? '' : r.stdout + r.stderr }).toEqual({ command, status: 0, out: '' });
      }
    } finally {
      await kill();
    }
  }, 600_000);
});

describe('kill -9 while a released session\'s artifacts are collected', () => {
  it('after restart every file its job left is listed in the session, and the machines are rebuilt and back', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-crash-collect-'));
    const config = ansibleConfig(
      [{ name: 'c', 'release-policy': 'rebuild', 'collect-artifacts': true }],
      [1, 2].map((i) => ({ hostname: `collect-${i}.test`, pool: 'c', state: 'ready' })),
    );
    const { url, admin, up, kill, start } = killable(dataDir, config);
    try {
      await up();
      const t = await admin.post('/api/v1/tenants', { name: 'job', ssh_key: 'ssh-ed25519 AAAAC3Nza job@ci' });
      const job = new Client(url, basic('job', t.body.tenant.api_key));
      for (let round = 0; round < 3; round++) {
        const r = await poll('a session', async () => {
          const r = await job.post('/api/v1/sessions', { nodes_specs: [{ pool: 'c', quantity: 2 }] });
          return r.status === 201 ? r : undefined;
        });
        const id = r.body.session.id as number;
        const files: string[] = [];
        for (const n of r.body.session.nodes as Array<{ hostname: string }>) {
          const dir = join(dataDir, 'machines', n.hostname, 'root', 'artifacts', 'logs');
          mkdirSync(dir, { recursive: true });
          for (let k = 0; k < 10; k++) writeFileSync(join(dir, `f${k}.log`), `session ${id} ${k}\n`.repeat(1000));
          files.push(...Array.from({ length: 10 }, (_, k) => `${n.hostname}/logs/f${k}.log`));
        }
        expect((await job.put(`/api/v1/sessions/${id}`, { active: false })).status).toBe(200);
        // Somewhere in its collection (moved off the machine, then recorded) or the rebuild after it.
        await poll('the collection under way', async () => ((await ledgerFile(join(dataDir, 'ledger.sqlite'))).some((e) => e.type === 'PlaybookStarted' && e.data.sessionId === id && e.data.action === 'collect_artifacts') ? true : undefined));
        await sleep(Math.random() * 3000);
        await kill();
        start();
        await up();
        await poll('the machines rebuilt and back', async () => {
          const nodes = (await admin.get('/api/v1/nodes')).body.nodes as Array<{ state: string }>;
          return nodes.every((n) => n.state === 'ready') ? true : undefined;
        });
        const listed = ((await job.get(`/api/v1/sessions/${id}`)).body.session.data.artifacts ?? []) as string[];
        expect({ id, missing: files.filter((f) => !listed.some((l) => l.endsWith(f))) }).toEqual({ id, missing: [] });
      }
    } finally {
      await kill();
    }
  });
});

/** The built server on `dataDir`, started at once; `kill` is SIGKILL (awaited), `start` runs it again on the same port. */
function killable(dataDir: string, config: string) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const url = `http://127.0.0.1:${port}`;
  const admin = new Client(url, basic('admin', ADMIN_KEY));
  let child = server(dataDir, config, port);
  return {
    url,
    admin,
    up: () => poll('the server', async () => ((await admin.get('/api/v1/tenants')).status === 200 ? true : undefined)),
    kill: async () => {
      child.kill('SIGKILL');
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
    },
    start: () => void (child = server(dataDir, config, port)),
  };
}
