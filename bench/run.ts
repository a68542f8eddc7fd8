/**
 * `npm run bench [-- --only p2,p4,p5,p7,p1 --seconds 10]`: prints figures, asserts nothing.
 *
 * P2 ledger appends/s on the embedded store, group commit vs one fsync per append;
 * P4 decision time at 100, 10k and 100k machines;
 * P7 memory of a World with 100k machines after folding 1M events (in a child process, so nothing else counts);
 * P1 request+release throughput and latency over HTTP against the real app, and a bare Express app as the yardstick.
 * The HTTP clients run in a worker thread, so they do not share the server's event loop.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { ExpectedRevision } from '../src/eventstore/event-store.port.js';
import { SqliteEventStore } from '../src/eventstore/sqlite-event-store.js';
import { p5 } from './read-side.js';
import { decideRequestSession } from '../src/ledger/decide.js';
import type { DuffyEvent, MachineState, NodeSpec } from '../src/ledger/events.js';
import { type Machine, type World, emptyWorld, evolve, newMachine } from '../src/ledger/world.js';
import { percentile } from '../src/scheduling/metrics.js';
import { type PoolProfile, planAllocation } from '../src/scheduling/policy.js';

const SCRIPT = fileURLToPath(import.meta.url);
const ms = (x: number) => `${x.toFixed(x < 10 ? 2 : 1)} ms`;
const us = (x: number) => `${(x * 1000).toFixed(x * 1000 < 100 ? 1 : 0)} µs`;
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const count = (n: number) => n.toLocaleString('en-US');

/** A tiny seeded PRNG (mulberry32), so the synthetic clusters are the same on every run. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const POOLS: PoolProfile[] = [
  { name: 'metal-intel-x86_64', type: 'baremetal', arch: 'x86_64', platform: 'intel' },
  { name: 'metal-amd-x86_64', type: 'baremetal', arch: 'x86_64', platform: 'amd' },
  { name: 'metal-arm-aarch64', type: 'baremetal', arch: 'aarch64', platform: 'arm' },
  { name: 'vm-intel-x86_64', type: 'vm', arch: 'x86_64', platform: 'intel' },
  { name: 'vm-arm-aarch64', type: 'vm', arch: 'aarch64', platform: 'arm' },
];
/** Share of machines per pool, as in the simulator's default farm (20/16/10/8/6 of 60). */
const POOL_SHARE = [20 / 60, 16 / 60, 10 / 60, 8 / 60, 6 / 60];
const poolFor = (i: number, n: number) => {
  let edge = 0;
  for (let p = 0; p < POOLS.length; p++) {
    edge += POOL_SHARE[p] * n;
    if (i < edge) return POOLS[p].name;
  }
  return POOLS[POOLS.length - 1].name;
};

// ---------------------------------------------------------------------------------------------------------------
// P2: appends per second on the embedded ledger.

async function p2(seconds: number): Promise<void> {
  const appenders = 64;
  const results: string[] = [];
  for (const groupCommit of [true, false]) {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-bench-p2-'));
    const store = new SqliteEventStore(join(dir, 'ledger.sqlite'), groupCommit);
    const latencies: number[] = [];
    const start = performance.now();
    const end = start + seconds * 1000;
    await Promise.all(
      Array.from({ length: appenders }, async (_, i) => {
        let expected: ExpectedRevision = 'no_stream';
        for (let n = 0; performance.now() < end; n++) {
          const t0 = performance.now();
          const r = await store.append([
            {
              stream: `machine-bench-${i}`,
              events: [{ type: 'MachineReserved', data: { machineId: i, hostname: `bench-${i}`, sessionId: n, tenantId: 1, pool: 'p', platform: 'intel', affinity: 'kept', contextualize: false, at: new Date().toISOString() } }],
              expected,
            },
          ]);
          latencies.push(performance.now() - t0);
          expected = r.nextExpectedRevisions[0];
        }
      }),
    );
    const elapsed = (performance.now() - start) / 1000;
    await store.close();
    rmSync(dir, { recursive: true, force: true });
    const rate = latencies.length / elapsed;
    results.push(`${groupCommit ? 'group commit' : 'fsync per append'} ${count(Math.round(rate))} appends/s (p50 ${ms(percentile(latencies, 50))}, p99 ${ms(percentile(latencies, 99))})`);
  }
  console.log(`P2 ledger appends, SqliteEventStore, ${appenders} concurrent appenders to distinct streams, ${seconds} s each, file in ${tmpdir()}: ${results.join('; ')}`);
}

// ---------------------------------------------------------------------------------------------------------------
// P4: decision time against cluster size.

function machine(id: number, pool: string, state: MachineState, busyMs: number, allocations: number): Machine {
  return Object.assign(newMachine({ id, hostname: `m${id}.bench`, ipaddr: null, pool, reusable: true, data: {}, state, createdAt: '2026-01-01T00:00:00.000Z', revision: 0 }), { busyMs, allocations });
}

function medianTime(calls: number, f: () => unknown): number {
  for (let i = 0; i < Math.min(20, calls); i++) f(); // warm up the JIT
  const times: number[] = [];
  for (let i = 0; i < calls; i++) {
    const t0 = performance.now();
    f();
    times.push(performance.now() - t0);
  }
  return percentile(times, 50);
}

function p4(): void {
  const parts: string[] = [];
  const spec: NodeSpec = { type: 'baremetal', arch: 'x86_64', quantity: 2 };
  for (const n of [100, 10_000, 100_000]) {
    const rnd = prng(n);
    // Half the machines are busy; the free ones carry random wear, so the sort has work to do.
    const free = new Map<string, Machine[]>(POOLS.map((p) => [p.name, []]));
    const world = emptyWorld();
    let position = 0n;
    evolve(world, {
      type: 'TenantRegistered',
      data: { tenantId: 1, name: 'bench', apiKeyDigest: 'x', isAdmin: false, sshKey: 'ssh-ed25519 AAAA', nodeQuota: 1000, sessionLifetime: null, sessionLifetimeMax: null, at: '2026-01-01T00:00:00.000Z' },
      revision: 0,
      position: ++position,
    });
    world.tenants.get(1)!.platform = 'intel';
    for (let id = 1; id <= n; id++) {
      const pool = poolFor(id - 1, n);
      const busy = rnd() < 0.5;
      const m = machine(id, pool, busy ? 'deployed' : 'ready', Math.floor(rnd() * 1e9), Math.floor(rnd() * 500));
      if (!busy) free.get(pool)!.push(m);
      evolve(world, {
        type: 'MachineRegistered',
        data: { machineId: id, hostname: m.hostname, ipaddr: null, pool, reusable: true, data: {}, state: m.state, at: m.createdAt },
        revision: 0,
        position: ++position,
      });
      Object.assign(world.machines.get(id)!, { busyMs: m.busyMs, allocations: m.allocations });
    }
    const calls = Math.max(30, Math.min(2000, Math.round(2e6 / n)));
    const plan = medianTime(calls, () => planAllocation({ specs: [spec], pools: POOLS, free: (p) => free.get(p)!, tenantPlatform: 'intel' }));
    const decide = medianTime(calls, () =>
      decideRequestSession(world, POOLS, { nodeQuota: 10, sessionLifetime: 3600, sessionLifetimeMax: 7200 }, {
        sessionId: 1,
        tenantId: 1,
        specs: [spec],
        now: '2026-01-02T00:00:00.000Z',
        contextualize: () => false,
      }),
    );
    parts.push(`${count(n)} machines: planAllocation ${us(plan)}, decideRequestSession ${us(decide)}`);
  }
  console.log(`P4 decision time (median per call; 2 baremetal x86_64 by type, half the machines free): ${parts.join('; ')}`);
}

// ---------------------------------------------------------------------------------------------------------------
// P7: memory of the World after folding 1M events.

function p7(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const before = process.memoryUsage();
  const machines = 100_000;
  const tenants = 10;
  const total = 1_000_000;
  const world: World = emptyWorld();
  let position = 0n;
  let folded = 0;
  let clock = Date.parse('2026-01-01T00:00:00.000Z');
  const at = () => new Date((clock += 1000)).toISOString();
  const fold = (event: DuffyEvent, revision: number) => {
    evolve(world, { ...event, revision, position: ++position });
    folded += 1;
  };
  const t0 = performance.now();
  for (let t = 1; t <= tenants; t++) {
    fold(
      { type: 'TenantRegistered', data: { tenantId: t, name: `tenant-${t}`, apiKeyDigest: `digest-${t}`, isAdmin: false, sshKey: 'ssh-ed25519 AAAA', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null, at: at() } },
      0,
    );
  }
  for (let id = 1; id <= machines; id++) {
    fold({ type: 'MachineRegistered', data: { machineId: id, hostname: `m${id}.bench`, ipaddr: null, pool: poolFor(id - 1, machines), reusable: true, data: {}, state: 'ready', at: at() } }, 0);
  }
  // Then whole session cycles (8 events each) round the machines until 1M events.
  let sessionId = 0;
  while (folded + 8 <= total) {
    sessionId += 1;
    const machineId = ((sessionId - 1) % machines) + 1;
    const tenantId = ((sessionId - 1) % tenants) + 1;
    const m = world.machines.get(machineId)!;
    const t = world.tenants.get(tenantId)!;
    const pool = POOLS.find((p) => p.name === m.pool)!;
    const now = at();
    fold({ type: 'MachineRequested', data: { sessionId, tenantId, tenant: t.name, specs: [{ pool: m.pool, quantity: 1 }], expiresAt: now, at: now } }, 0);
    fold({ type: 'QuotaClaimed', data: { tenantId, sessionId, count: 1, at: now } }, t.revision + 1);
    fold(
      { type: 'MachineReserved', data: { machineId, hostname: m.hostname, sessionId, tenantId, pool: m.pool, platform: pool.platform, affinity: 'kept', contextualize: false, at: now } },
      m.revision + 1,
    );
    fold({ type: 'SessionStarted', data: { sessionId, machineIds: [machineId], at: now } }, 1);
    const later = at();
    fold({ type: 'SessionReleased', data: { sessionId, reason: 'done', at: later } }, 2);
    fold({ type: 'MachineReleased', data: { machineId, sessionId, reason: 'done', at: later } }, m.revision + 1);
    fold({ type: 'QuotaReturned', data: { tenantId, sessionId, count: 1, at: later } }, t.revision + 1);
    fold({ type: 'MachineRecycled', data: { machineId, policy: 'reuse', state: 'ready', at: later } }, m.revision + 1);
  }
  // The real ledger has IdAllocated events too (ids of tenants and machines): they make up the round million.
  // (ids-machine already counts one per machine: revisions go on from there.)
  for (let revision = machines; folded < total; revision++) fold({ type: 'IdAllocated', data: { kind: 'machine' } }, revision);
  const seconds = (performance.now() - t0) / 1000;
  gc?.();
  const after = process.memoryUsage();
  console.log(
    `P7 World of ${count(world.machines.size)} machines, ${count(world.sessions.size)} sessions, ${count(world.tenants.size)} tenants after folding ${count(folded)} events ` +
      `(${count(Math.round(folded / seconds))} events/s): RSS ${mb(after.rss)} (${mb(before.rss)} before the fold), ` +
      `heap used ${mb(after.heapUsed)} of ${mb(after.heapTotal)} ${gc ? 'after a full GC' : '(no --expose-gc: not after a GC)'} (${mb(before.heapUsed)} before)`,
  );
}

// ---------------------------------------------------------------------------------------------------------------
// P1: HTTP request+release against the real app, and a bare Express app.

interface LoadJob {
  url: string;
  /** Authorization header per client. */
  auths: string[];
  seconds: number;
  warmupSeconds: number;
}

interface LoadResult {
  cycles: number;
  requests: number;
  seconds: number;
  post: number[];
  put: number[];
  statuses: Record<string, number>;
}

function call(agent: http.Agent, url: string, method: string, path: string, auth: string | undefined, body: unknown): Promise<{ status: number; text: string }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url + path,
      {
        method,
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...(auth ? { authorization: auth } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** Runs in the worker: each client loops POST /sessions, PUT /sessions/{id} {"active": false}. */
async function clientLoop(job: LoadJob): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.auths.length });
  const begin = performance.now();
  const measureFrom = begin + job.warmupSeconds * 1000;
  const end = measureFrom + job.seconds * 1000;
  const result: LoadResult = { cycles: 0, requests: 0, seconds: job.seconds, post: [], put: [], statuses: {} };
  const note = (status: number, method: string, t0: number) => {
    if (t0 < measureFrom) return;
    const key = `${method} ${status}`;
    result.statuses[key] = (result.statuses[key] ?? 0) + 1;
    result.requests += 1;
    (method === 'POST' ? result.post : result.put).push(performance.now() - t0);
  };
  const spec = { nodes_specs: [{ type: 'baremetal', arch: 'x86_64', quantity: 1 }] };
  await Promise.all(
    job.auths.map(async (auth) => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const r = await call(agent, job.url, 'POST', '/api/v1/sessions', auth, spec);
        note(r.status, 'POST', t0);
        if (r.status !== 201) continue;
        const id = (JSON.parse(r.text) as { session: { id: number } }).session.id;
        const t1 = performance.now();
        const d = await call(agent, job.url, 'PUT', `/api/v1/sessions/${id}`, auth, { active: false });
        note(d.status, 'PUT', t1);
        if (t0 >= measureFrom && d.status === 200) result.cycles += 1;
      }
    }),
  );
  agent.destroy();
  result.seconds = (performance.now() - measureFrom) / 1000;
  return result;
}

function load(job: LoadJob): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(SCRIPT, { workerData: job });
    worker.once('message', (r: LoadResult) => resolve(r));
    worker.once('error', reject);
    worker.once('exit', (code) => code !== 0 && reject(new Error(`load worker exited with ${code}`)));
  });
}

function describeLoad(name: string, r: LoadResult): { rps: number; line: string } {
  const all = [...r.post, ...r.put];
  const rps = r.requests / r.seconds;
  const statuses = Object.entries(r.statuses)
    .sort()
    .map(([k, v]) => `${k}: ${count(v)}`)
    .join(', ');
  return {
    rps,
    line:
      `${name}: ${count(Math.round(r.cycles / r.seconds))} request+release/s, ${count(Math.round(rps))} HTTP req/s, ` +
      `latency p50 ${ms(percentile(all, 50))} p99 ${ms(percentile(all, 99))} ` +
      `(POST p50 ${ms(percentile(r.post, 50))} p99 ${ms(percentile(r.post, 99))}, PUT p50 ${ms(percentile(r.put, 50))} p99 ${ms(percentile(r.put, 99))}) [${statuses}]`,
  };
}

const basic = (name: string, key: string) => `Basic ${Buffer.from(`${name}:${key}`).toString('base64')}`;

async function p1(seconds: number): Promise<void> {
  const clients = 64;
  const tenants = 8;
  const machines = 200;
  const warmupSeconds = 1;

  // The real app: embedded ledger in a temp dir, one pool of 200 ready machines, no playbooks on the hand-over path.
  // Request logs (pino, when the app has it) would flood the output and cost the server time: silent unless asked.
  process.env.DUFFY_LOG_LEVEL ??= 'silent';
  const { createApp } = await import('../src/main.js');
  const { loadConfig } = await import('../src/config/config.js');
  const { stringify } = await import('yaml');
  const dataDir = mkdtempSync(join(tmpdir(), 'duffy-bench-p1-'));
  const configFile = join(dataDir, 'bench.yaml');
  writeFileSync(
    configFile,
    stringify({
      defaults: { 'node-quota': 1000, 'session-lifetime': 3600, 'session-lifetime-max': 7200 },
      pools: [
        { name: 'metal-bench', type: 'baremetal', arch: 'x86_64', platform: 'intel', driver: 'local', 'release-policy': 'reuse', contextualize: false, 'collect-artifacts': false, 'fill-level': 0 },
      ],
      machines: Array.from({ length: machines }, (_, i) => ({ hostname: `bench-${String(i + 1).padStart(3, '0')}.test`, pool: 'metal-bench', state: 'ready' })),
    }),
  );
  const adminKey = '00000000-0000-4000-8000-00000000beef';
  const { app } = await createApp(
    { port: 0, dataDir, configFile, adminName: 'admin', adminKey, config: loadConfig(configFile) },
    { logger: false, reconcileEveryMs: 60_000 },
  );
  await app.listen(0, '127.0.0.1');
  const url = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
  const agent = new http.Agent({ keepAlive: true });
  const auths: string[] = [];
  for (let t = 0; t < tenants; t++) {
    const r = await call(agent, url, 'POST', '/api/v1/tenants', basic('admin', adminKey), { name: `bench-${t}`, ssh_key: `ssh-ed25519 AAAAC3Nza bench-${t}@ci`, node_quota: 1000 });
    if (r.status !== 201) throw new Error(`tenant bench-${t}: ${r.status} ${r.text}`);
    auths.push(basic(`bench-${t}`, (JSON.parse(r.text) as { tenant: { api_key: string } }).tenant.api_key));
  }
  agent.destroy();
  const duffy = describeLoad('Duffy', await load({ url, auths: Array.from({ length: clients }, (_, i) => auths[i % tenants]), seconds, warmupSeconds }));
  await app.close();
  rmSync(dataDir, { recursive: true, force: true });

  // The yardstick: Express with the same JSON body parsing and the same two routes, answering at once.
  const { default: express } = await import('express');
  const bare = express();
  bare.use(express.json());
  let next = 0;
  bare.post('/api/v1/sessions', (_req, res) => {
    res.status(201).json({ action: 'post', session: { id: ++next } });
  });
  bare.put('/api/v1/sessions/:id', (req, res) => {
    res.json({ action: 'put', session: { id: Number(req.params.id), active: false } });
  });
  const server = await new Promise<http.Server>((resolve) => {
    const s = bare.listen(0, '127.0.0.1', () => resolve(s));
  });
  const bareUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const hello = describeLoad('bare Express', await load({ url: bareUrl, auths: Array.from({ length: clients }, () => ''), seconds, warmupSeconds }));
  await new Promise((resolve) => server.close(resolve));

  console.log(`P1 HTTP, ${clients} keep-alive clients on loopback (${tenants} tenants, ${machines} machines), ${seconds} s after ${warmupSeconds} s warm-up:`);
  console.log(`   ${duffy.line}`);
  console.log(`   ${hello.line}`);
  console.log(`   Duffy / bare Express: ${(duffy.rps / hello.rps).toFixed(3)} of the HTTP requests per second`);
}

// ---------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      only: { type: 'string', default: 'p2,p4,p5,p7,p1' },
      seconds: { type: 'string', default: '10' },
      'append-seconds': { type: 'string', default: '3' },
    },
  });
  const only = new Set(values.only!.split(',').map((s) => s.trim().toLowerCase()));
  const seconds = Number(values.seconds);
  const appendSeconds = Number(values['append-seconds']);
  if (only.has('p2')) await p2(appendSeconds);
  if (only.has('p4')) p4();
  if (only.has('p5')) await p5();
  if (only.has('p7')) {
    if (only.size === 1) p7();
    else {
      // A fresh process: the RSS of this one already holds what P2 and P4 allocated.
      const child = spawnSync(process.execPath, ['--expose-gc', SCRIPT, '--only', 'p7'], { stdio: 'inherit' });
      if (child.status !== 0) console.log(`P7 failed (exit ${child.status})`);
    }
  }
  if (only.has('p1')) await p1(seconds);
}

if (isMainThread) {
  main().then(
    () => process.exit(0),
    (err) => {
      console.error('bench failed:', err);
      process.exit(1);
    },
  );
} else {
  clientLoop(workerData as LoadJob).then((r) => parentPort!.postMessage(r));
}
