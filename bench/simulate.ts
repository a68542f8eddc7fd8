/**
 * `npm run simulate [-- --seed N --hours H --seeds K]`: compares the allocation policies on one simulated workload
 * (virtual clock; see src/scheduling/simulator.ts). With --seeds K it also runs seeds N..N+K-1 and prints one
 * line per seed, to see whether the ordering of the policies holds beyond one draw.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_CONFIG, compare, formatReports, formatTable } from '../src/domain/simulator.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string', default: String(DEFAULT_CONFIG.seed) },
    hours: { type: 'string', default: String(DEFAULT_CONFIG.hours) },
    seeds: { type: 'string', default: '1' },
  },
});

function positive(name: string, raw: string): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`simulate: --${name} must be a positive number, got ${raw}`);
    process.exit(2);
  }
  return n;
}

const seed = Math.floor(positive('seed', values.seed!));
const hours = positive('hours', values.hours!);
const seeds = Math.floor(positive('seeds', values.seeds!));

const t0 = performance.now();
const config = { ...DEFAULT_CONFIG, seed, hours };
const { workload, reports, ablations } = compare(config, { ablations: true });
console.log(formatReports(config, workload, reports, ablations));

if (seeds > 1) {
  const rows: string[][] = [];
  for (let s = seed; s < seed + seeds; s++) {
    const run = compare({ ...config, seed: s }).reports;
    const by = (p: string) => run.find((r) => r.policy === p)!;
    const duffy = by('duffy');
    const others = run.filter((r) => r.policy !== 'duffy');
    rows.push([
      String(s),
      ...run.map((r) => r.wearGiniMean.toFixed(3)),
      ...run.map((r) => r.jain.toFixed(3)),
      others.every((o) => duffy.wearGiniMean < o.wearGiniMean) ? 'yes' : 'no',
      others.every((o) => duffy.jain > o.jain) ? 'yes' : 'no',
    ]);
  }
  const names = reports.map((r) => r.policy);
  console.log('');
  console.log(
    formatTable(['seed', ...names.map((n) => `Gini ${n}`), ...names.map((n) => `Jain ${n}`), 'duffy lowest Gini', 'duffy highest Jain'], rows),
  );
}
console.log(`\n(${((performance.now() - t0) / 1000).toFixed(1)} s of real time)`);
