import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECTIONS, type Projection } from '../projections/index.js';
import { SqliteEventStore } from '../src/adapters/eventstore/sqlite-event-store.js';
import { stream } from '../src/domain/events.js';
import { writeLedgerFile } from './ledger-file.js';
import { ProjectionRunner, followTogether } from '../src/application/projector.js';
import { SqliteReadModels } from '../src/adapters/readmodels/sqlite-read-models.js';
import { percentile } from '../src/domain/statistics.js';

const count = (n: number) => Math.round(n).toLocaleString('en-US');

/** The farm of the ledger P5 rebuilds: a million events are then about 125,000 sessions of one machine each. */
const P5_FARM = { machines: 1000, tenants: 50 };
const P5_REBUILDS = 3;

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
  const written = await writeLedgerFile(join(dir, 'ledger.sqlite'), events, P5_FARM);
  const ledger = new SqliteEventStore(join(dir, 'ledger.sqlite'));
  // The last event alone: reading the whole ledger here would leave its garbage to the first rebuild measured.
  const head = (await ledger.readLast(2n ** 62n, 1))[0].position;
  // Three rebuilds, the median printed: this VM's speed moves by a third within a minute.
  const runs: number[] = [];
  for (let i = 0; i < P5_REBUILDS; i++) runs.push(await rebuildSeconds(PROJECTIONS, ledger, join(dir, `readmodels-${i}.sqlite`), head));
  const seconds = percentile(runs, 50);
  console.log(`P5 rebuild: ${count(written)} events (${count(P5_FARM.machines)} machines, ${count(P5_FARM.tenants)} tenants, sessions requested and released as the server records them) through ${PROJECTIONS.length} projections (one shared read of the ledger), median of ${P5_REBUILDS} rebuilds ${seconds.toFixed(2)} s = ${count(written / seconds)} events/s (each: ${runs.map((s) => count(written / s)).join(', ')})`);
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
      const machineId = (i % P5_FARM.machines) + 1;
      const r = await ledger.append([{ stream: stream.machine(`m${machineId}.bench`), events: [{ type: 'MachineQuarantined', data: { machineId, reason: 'bench', at: new Date().toISOString() }, metadata: {} }], expected: 'any' }]);
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
