/**
 * `npm run bench [-- --only p2,p4,p5,p7,audit,p8,p1,soak --seconds 5 --p1-rounds 3 --p5-events 1000000 --p7-events 1000000 --soak-sessions 20000]`: prints figures, asserts nothing.
 *
 * P2 ledger appends/s on the embedded store, group commit vs one fsync per append;
 * P4 decision time at 100, 10k and 100k machines;
 * P5 projection rebuild rate; P7 memory of a World with 100k machines after folding a ledger file of 1M events
 * (`--p7-events`) as the server does at start (in a child process, so nothing else counts); AUDIT `duffy audit verify` of that
 * ledger (time, peak RSS); P8 start-up of the built server with a 200- and a 20,000-machine inventory;
 * P1 request+release throughput and latency over HTTP against the real app, and a bare Express app as the yardstick.
 * P1 runs Duffy and bare Express each in a process of its own; the load comes from this one (bench/p1-http.ts).
 * SOAK memory of the built server as its history grows (`--soak-sessions`, about a minute by default), and after a restart (bench/soak.ts).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ExpectedRevision } from '../src/application/ports/event-store.port.js';
import type { EventBus } from '@nestjs/cqrs';
import { SqliteEventStore } from '../src/adapters/eventstore/sqlite-event-store.js';
import { Ledger } from '../src/application/ledger.service.js';
import { p5 } from './read-side.js';
import { POOLS, poolFor, writeLedgerFile } from './ledger-file.js';
import { p1 } from './p1-http.js';
import { p8 } from './startup.js';
import { soak } from './soak.js';
import { decideRequestSession, freeMachines } from '../src/domain/decide.js';
import type { MachineState, NodeSpec } from '../src/domain/events.js';
import { type Machine, emptyWorld, evolve, file, newMachine, unfile } from '../src/domain/world.js';
import { percentile } from '../src/domain/statistics.js';
import { planAllocation } from '../src/domain/policy.js';
import { mulberry32 } from '../src/domain/simulator.js';
import { verifyLedger } from '../src/cli/audit.js';

const SCRIPT = fileURLToPath(import.meta.url);
const ms = (x: number) => `${x.toFixed(x < 10 ? 2 : 1)} ms`;
const us = (x: number) => `${(x * 1000).toFixed(x * 1000 < 100 ? 1 : 0)} µs`;
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const count = (n: number) => n.toLocaleString('en-US');


// ---------------------------------------------------------------------------------------------------------------
// P2: appends per second on the embedded ledger.

async function p2(seconds: number): Promise<void> {
  const appenders = 64;
  const results: string[] = [];
  for (const groupCommit of [true, false]) {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-bench-p2-'));
    const store = new SqliteEventStore(join(dir, 'ledger.sqlite'), { groupCommit });
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
    const rnd = mulberry32(n);
    // Half the machines are busy; the free ones carry random wear, so the order has work to do.
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
      evolve(world, {
        type: 'MachineRegistered',
        data: { machineId: id, hostname: m.hostname, ipaddr: null, pool, reusable: true, data: {}, state: m.state, at: m.createdAt },
        revision: 0,
        position: ++position,
      });
      // Synthetic wear, set behind evolve's back: the machine is filed again under it.
      const folded = world.machines.get(id)!;
      unfile(world, folded);
      Object.assign(folded, { busyMs: m.busyMs, allocations: m.allocations });
      file(world, folded);
    }
    const calls = Math.max(30, Math.min(2000, Math.round(2e6 / n)));
    const notBusy = () => false;
    const plan = medianTime(calls, () => planAllocation({ specs: [spec], pools: POOLS, free: (p) => freeMachines(world, p, notBusy), tenantPlatform: 'intel' }));
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
// P7: memory of the World after folding a ledger of 1M events (--p7-events).

/** The farm of the ledger P7 folds (writeLedgerFile), written by a process of its own so its garbage is not the fold's. */
const P7_FARM = { machines: 100_000, tenants: 10 };

/** AUDIT: `duffy audit verify` of the P7 ledger (chained as the writer chains it), in a process of its own: its time and peak RSS. */
async function auditBench(total: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'duffy-audit-'));
  const file = join(dir, 'ledger.db');
  try {
    const writer = spawnSync(process.execPath, [SCRIPT, '--p7-write', file, '--p7-events', String(total)], { stdio: 'inherit' });
    if (writer.status !== 0) throw new Error(`writing the ledger failed (exit ${writer.status})`);
    const child = spawnSync(process.execPath, [SCRIPT, '--audit-verify', file], { stdio: 'inherit' });
    if (child.status !== 0) console.log(`AUDIT verify failed (exit ${child.status})`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function auditVerify(file: string): Promise<void> {
  const t0 = performance.now();
  const v = await verifyLedger(file);
  const seconds = (performance.now() - t0) / 1000;
  const events = Number(v.verified[0]?.match(/^(\d+) events/)?.[1] ?? 0);
  console.log(
    `AUDIT verify of a ledger of ${count(events)} events: ${seconds.toFixed(1)} s (${count(Math.round(events / seconds))} events/s), ` +
      `peak RSS ${mb(process.resourceUsage().maxRSS * 1024)}; ${v.problems.length === 0 ? 'OK' : `TAMPERED (${v.problems.length} problems: the bench ledger is not what the writer writes)`}`,
  );
}

/**
 * P7: the World of a server that starts on a ledger of `total` events. The fold is the server's own (Ledger.start):
 * pages of FOLD_PAGE events read from the embedded ledger file (`readAll`: rows parsed by `toRecorded`), each
 * event folded by `evolve` and its stream head noted; what is measured is all the Ledger keeps. The ledger is written first by a child process; memory is measured in this one.
 */
async function p7(total: number): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  const dir = mkdtempSync(join(tmpdir(), 'duffy-p7-'));
  const file = join(dir, 'ledger.db');
  try {
    const writer = spawnSync(process.execPath, [SCRIPT, '--p7-write', file, '--p7-events', String(total)], { stdio: 'inherit' });
    if (writer.status !== 0) throw new Error(`writing the P7 ledger failed (exit ${writer.status})`);
    const store = new SqliteEventStore(file, { readonly: true });
    gc?.();
    const before = process.memoryUsage();
    let folded = 0;
    // V8 collects the old space when it chooses: the RSS it reached during the fold is shown too (sampled per page read).
    let peak = before.rss;
    const readAll = store.readAll.bind(store);
    store.readAll = async (after, limit) => {
      peak = Math.max(peak, process.memoryUsage.rss());
      const page = await readAll(after, limit);
      folded += page.length;
      return page;
    };
    // The server's own fold and what it keeps beside the World (stream heads for the hash chain).
    const ledger = new Ledger(store, { publish: () => undefined } as unknown as EventBus);
    const world = ledger.world;
    const t0 = performance.now();
    await ledger.start();
    const seconds = (performance.now() - t0) / 1000;
    gc?.();
    const after = process.memoryUsage();
    // V8 hands freed pages back to the system in the background: what a server shows once it has been idle a second.
    await new Promise((r) => setTimeout(r, 1000));
    gc?.();
    await new Promise((r) => setTimeout(r, 500));
    const idle = process.memoryUsage();
    await ledger.onApplicationShutdown();
    console.log(
      `P7 World of ${count(world.machines.size)} machines, ${count(world.sessions.size)} sessions kept (${count(world.lastSessionId)} recorded), ${count(world.tenants.size)} tenants after folding ${count(folded)} events ` +
        `(${count(Math.round(folded / seconds))} events/s, read from the ledger file): RSS ${mb(after.rss)} right after a full GC, ${mb(idle.rss)} after 1.5 s idle (${mb(before.rss)} before the fold, ${mb(peak)} at most during it), ` +
        `heap used ${mb(after.heapUsed)} of ${mb(after.heapTotal)} ${gc ? 'after a full GC' : '(no --expose-gc: not after a GC)'} (${mb(before.heapUsed)} before)`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      only: { type: 'string', default: 'p2,p4,p5,p7,audit,p8,p1,soak' },
      seconds: { type: 'string', default: '5' },
      'p1-rounds': { type: 'string', default: '3' },
      'append-seconds': { type: 'string', default: '3' },
      'p5-events': { type: 'string', default: '1000000' },
      'p7-events': { type: 'string', default: '1000000' },
      'p7-write': { type: 'string' },
      'audit-verify': { type: 'string' },
      'soak-sessions': { type: 'string', default: '20000' },
      'soak-port': { type: 'string' },
    },
  });
  const only = new Set(values.only!.split(',').map((s) => s.trim().toLowerCase()));
  const seconds = Number(values.seconds);
  const appendSeconds = Number(values['append-seconds']);
  const p7Events = Number(values['p7-events']);
  if (values['p7-write']) return void (await writeLedgerFile(values['p7-write'], p7Events, P7_FARM));
  if (values['audit-verify']) return auditVerify(values['audit-verify']);
  if (only.has('p2')) await p2(appendSeconds);
  if (only.has('p4')) p4();
  if (only.has('p5')) await p5(Number(values['p5-events']));
  if (only.has('p7')) {
    if (only.size === 1) await p7(p7Events);
    else {
      // A fresh process: the RSS of this one already holds what P2 and P4 allocated.
      const child = spawnSync(process.execPath, ['--expose-gc', SCRIPT, '--only', 'p7', '--p7-events', String(p7Events)], { stdio: 'inherit' });
      if (child.status !== 0) console.log(`P7 failed (exit ${child.status})`);
    }
  }
  if (only.has('audit')) await auditBench(p7Events);
  if (only.has('p8')) await p8();
  if (only.has('p1')) await p1(seconds, Number(values['p1-rounds']));
  if (only.has('soak')) await soak(Number(values['soak-sessions']), values['soak-port'] ? Number(values['soak-port']) : undefined);
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error('bench failed:', err);
    process.exit(1);
  },
);
