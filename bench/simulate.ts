/**
 * `npm run simulate [-- --seed N --hours H --seeds K]`: compares the allocation policies on one simulated workload
 * (virtual clock; see src/domain/simulator.ts). With --seeds K it also runs seeds N..N+K-1 and prints one
 * line per seed, to see whether the ordering of the policies holds beyond one draw.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_CONFIG, compare, formatReports } from '../src/domain/simulator.js';
import { formatTable } from '../src/domain/text-table.js';

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
      `${(100 * duffy.affinityHitRate).toFixed(1)}%`,
      ...run.map((r) => String(r.served)),
      ...run.map((r) => String(r.abandoned)),
      ...run.map((r) => `${(100 * r.utilisation).toFixed(1)}%`),
      others.every((o) => duffy.wearGiniMean < o.wearGiniMean) ? 'yes' : 'no',
      others.every((o) => duffy.jain > o.jain) ? 'yes' : 'no',
      others.every((o) => duffy.served >= o.served && duffy.abandoned <= o.abandoned) ? 'yes' : 'no',
    ]);
  }
  // Short column names so the table fits: d = duffy, r = random, f = first-free.
  const short = reports.map((r) => ({ duffy: 'd', random: 'r', 'first-free': 'f' })[r.policy as string] ?? r.policy);
  console.log('');
  console.log(
    formatTable(
      [
        'seed',
        ...short.map((n) => `Gini ${n}`),
        ...short.map((n) => `Jain ${n}`),
        'affinity d',
        ...short.map((n) => `served ${n}`),
        ...short.map((n) => `abandoned ${n}`),
        ...short.map((n) => `util ${n}`),
        'd lowest Gini',
        'd highest Jain',
        'd served most, abandoned least',
      ],
      rows,
    ),
  );
}
console.log(`\n(${((performance.now() - t0) / 1000).toFixed(1)} s of real time)`);
