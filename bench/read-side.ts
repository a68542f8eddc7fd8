import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECTIONS, type Projection } from '../projections/index.js';
import type { NewEvent } from '../src/application/ports/event-store.port.js';
import { SqliteEventStore } from '../src/adapters/eventstore/sqlite-event-store.js';
import type { DuffyEvent } from '../src/domain/events.js';
import { ProjectionRunner, followTogether } from '../src/application/projector.js';
import { SqliteReadModels } from '../src/adapters/readmodels/sqlite-read-models.js';
import { percentile } from '../src/domain/statistics.js';

const count = (n: number) => Math.round(n).toLocaleString('en-US');

/**
 * A synthetic ledger of about `events` events: tenants, machines, then reserve/release cycles (4 events each), as the
 * API writes them. Each
 * phase of a batch of cycles is one atomic multi-stream append: the rows are those of live traffic, written fast
 * enough for a ledger of a million events.
 */
export async function fill(store: SqliteEventStore, events: number, machines = 1000, tenants = 50): Promise<number> {
  const cycles = Math.floor((events - tenants - machines) / 4);
  const at = () => new Date().toISOString();
  const rev = new Map<string, number>();
  let written = 0;
  const put = async (writes: Array<[stream: string, events: DuffyEvent[]]>) => {
    const r = await store.append(
      writes.map(([stream, events]) => ({ stream, events: events.map((e) => ({ ...e, metadata: { at: at() } }) as NewEvent), expected: rev.has(stream) ? rev.get(stream)! : 'no_stream' })),
    );
    writes.forEach(([stream, events], i) => {
      rev.set(stream, r.nextExpectedRevisions[i]);
      written += events.length;
    });
  };
  const tenantRegistered = (t: number): DuffyEvent => ({ type: 'TenantRegistered', data: { tenantId: t, name: `t${t}`, apiKeyDigest: `d${t}`, isAdmin: false, sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null, at: at() } });
  await put(Array.from({ length: tenants }, (_, i) => [`tenant-t${i + 1}`, [tenantRegistered(i + 1)]]));
  await put(
    Array.from({ length: machines }, (_, i) => {
      const m = i + 1;
      return [`machine-m${m}`, [{ type: 'MachineRegistered', data: { machineId: m, hostname: `m${m}`, ipaddr: null, pool: `pool-${m % 10}`, reusable: true, data: {}, state: 'ready', at: at() } }]];
    }),
  );
  // A batch's cycles use distinct machines (batch < machines), so each phase touches a stream once.
  const batch = 200;
  for (let c = 0; c < cycles; c += batch) {
    const made = Array.from({ length: Math.min(batch, cycles - c) }, (_, i) => {
      const s = c + i + 1;
      return { s, m: (s % machines) + 1, t: (s % tenants) + 1 };
    });
    await put(made.map(({ s, m, t }) => [`session-${s}`, [{ type: 'MachineRequested', data: { sessionId: s, tenantId: t, tenant: `t${t}`, specs: [{ pool: `pool-${m % 10}`, quantity: 1 }], expiresAt: at(), at: at() } }]]));
    await put(
      made.map(({ s, m, t }) => [
        `machine-m${m}`,
        [
          { type: 'MachineReserved', data: { machineId: m, hostname: `m${m}`, sessionId: s, tenantId: t, pool: `pool-${m % 10}`, platform: m % 2 ? 'intel' : 'amd', affinity: 'kept', contextualize: false, at: at() } },
          { type: 'MachineReleased', data: { machineId: m, sessionId: s, reason: 'done', at: at() } },
        ],
      ]),
    );
    await put(made.map(({ s }) => [`session-${s}`, [{ type: 'SessionStarted', data: { sessionId: s, machineIds: [], at: at() } }]]));
  }
  return written;
}

/** Seconds to rebuild `projections` from position 0 up to `head` through the server's path, on fresh read models. */
async function rebuildSeconds(projections: readonly Projection[], ledger: SqliteEventStore, file: string, head: bigint): Promise<number> {
  const models = new SqliteReadModels(file);
  const runners = projections.map((p) => new ProjectionRunner(p, ledger, models));
  // What writing the ledger and the previous rebuild left is not this rebuild's garbage (a server starts without it).
  (globalThis as { gc?: () => void }).gc?.();
  const t0 = performance.now();
  const following = await followTogether(runners, ledger, { rebuild: true });
  await Promise.all(runners.map((r) => r.caughtUp(head, 600_000)));
  const seconds = (performance.now() - t0) / 1000;
  await following.close();
  for (const r of runners) await r.stop();
  await models.close();
  return seconds;
}

/** Reading and parsing the ledger alone: the same path with one projection that does nothing. */
const nothing: Projection<null> = { name: 'nothing', version: 1, collections: [], init: () => null, fold: () => undefined, doc: () => undefined, restore: () => undefined };

/**
 * P5: rebuild rate of every projection from position 0 (the aim: 1M events in under 5 s, so a million by default),
 * and live projection lag, on the embedded stores.
 */
export async function p5(events = 1_000_000): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'duffy-bench-p5-'));
  const ledger = new SqliteEventStore(join(dir, 'ledger.sqlite'));
  const written = await fill(ledger, events);
  // The last event alone: reading the whole ledger here would leave its garbage to the first rebuild measured.
  const head = (await ledger.readLast(2n ** 62n, 1))[0].position;
  const seconds = await rebuildSeconds(PROJECTIONS, ledger, join(dir, 'readmodels.sqlite'), head);
  console.log(`P5 rebuild: ${count(written)} events through ${PROJECTIONS.length} projections (one shared read of the ledger) in ${seconds.toFixed(2)} s = ${count(written / seconds)} events/s`);
  const yardstick = await rebuildSeconds([nothing], ledger, join(dir, 'readmodels-yardstick.sqlite'), head);
  console.log(`P5 yardstick, the same path with one projection that does nothing (reading and parsing the ledger): ${yardstick.toFixed(2)} s = ${count(written / yardstick)} events/s`);
  const alone = [];
  for (const p of PROJECTIONS) alone.push(`${p.name} ${count(written / (await rebuildSeconds([p], ledger, join(dir, `readmodels-${p.name}.sqlite`), head)))}`);
  console.log(`P5 each projection alone through the same path, events/s: ${alone.join(', ')}`);

  // The live lag, on read models rebuilt once more: append one event at a time at a steady pace and time until
  // every projection has it.
  const models = new SqliteReadModels(join(dir, 'readmodels-live.sqlite'));
  const runners = PROJECTIONS.map((p) => new ProjectionRunner(p, ledger, models));
  const following = await followTogether(runners, ledger, { rebuild: true });
  await Promise.all(runners.map((r) => r.caughtUp(head, 600_000)));

  // Two ways: a reader waiting for the event (it starts the write at once), and nobody asking (the batch's own time).
  const lagOf = async (count: number, offset: number, written: (position: bigint) => Promise<unknown>) => {
    const lags: number[] = [];
    for (let i = offset; i < offset + count; i++) {
      const start = performance.now();
      const r = await ledger.append([{ stream: `machine-m${(i % 1000) + 1}`, events: [{ type: 'MachineQuarantined', data: { machineId: (i % 1000) + 1, reason: 'bench', at: new Date().toISOString() }, metadata: {} }], expected: 'any' }]);
      await written(r.position);
      lags.push(performance.now() - start);
      await new Promise((res) => setTimeout(res, 2));
    }
    return `p50 ${percentile(lags, 50).toFixed(2)} ms, p99 ${percentile(lags, 99).toFixed(2)} ms`;
  };
  const read = await lagOf(500, 0, (position) => Promise.all(runners.map((x) => x.caughtUp(position))));
  const unread = await lagOf(100, 500, async (position) => {
    while (runners.some((x) => x.position < position)) await new Promise((res) => setTimeout(res, 1));
  });
  console.log(`P5 projection lag (append to every projection written): a reader waiting ${read} (500 events); no reader ${unread} (100 events)`);
  await following.close();
  for (const r of runners) await r.stop();
  await models.close();
  await ledger.close();
  // A million events leave about 1 GB of ledger and read models behind.
  rmSync(dir, { recursive: true, force: true });
}
