import type { MachineType, NodeSpec } from './events.js';
import { type Machine, newMachine } from './world.js';
import { type BusyInterval, HeldMachines, type WaitingRequest, fairOrder, holdsMachines, recentUsageMs } from './fair-queue.js';
import { gini, jain, maxMinFair, percentile } from './statistics.js';
import { formatTable } from './text-table.js';
import { OVERFLOW_AFTER_SHARE_OF_WAIT, type PoolProfile, eligiblePools, familyCrowding, machinesToHold, planAllocation } from './policy.js';

/**
 * Discrete-event simulation of a CI farm on a virtual clock (ms; no timers, no I/O), to compare allocation
 * policies on one and the same workload: the arrivals, job lengths and machine failures are drawn once from the
 * seed, then replayed against each policy.
 *
 * - `duffy`: the real `planAllocation` (platform affinity, least-stressed machine), waiting requests in `fairOrder`
 *   of the tenants' machine time over the last `fairWindowMin`, an urgent one that does not fit holding machines
 *   (`HeldMachines`, as the server's queue pass does);
 * - `random`: a random eligible free machine, waiting requests first-in first-out;
 * - `first-free`: the eligible free machine with the lowest id, first-in first-out.
 *
 * A request that cannot be served waits; whenever something changes, the waiting requests are tried in the
 * policy's order and each one that fits is served (a request that does not fit does not hold up the others).
 * A request still waiting after `maxWaitHours` is abandoned (the CI job times out). A machine failing under a job
 * ends that job. Released machines are recycled (`recycleMin`) before they serve again.
 */

export type PolicyName = 'duffy' | 'random' | 'first-free';
export const POLICIES: readonly PolicyName[] = ['duffy', 'random', 'first-free'];

export interface SimPool extends PoolProfile {
  machines: number;
  /** Minutes from release until the machine is ready again (reinstall, wipe). */
  recycleMin: number;
}

export interface SimTenant {
  name: string;
  /** Architecture its jobs need. */
  arch: string;
  /** Mean request rate over a day (requests per hour). */
  jobsPerHour: number;
  /** Median job length in minutes (log-normal). */
  medianJobMin: number;
  /** Log-normal shape: 0.7 puts the mean at 1.28 x the median and p95 at 3.2 x. */
  sigma: number;
  /** Share of requests for VMs (by type and arch). */
  vmShare: number;
  /** Share of baremetal requests that name a pool (`pinnedPool`); the rest ask by type and arch. */
  poolShare: number;
  pinnedPool: string;
  /** Largest number of machines in one request. */
  maxQuantity: number;
}

export interface SimConfig {
  seed: number;
  hours: number;
  pools: SimPool[];
  tenants: SimTenant[];
  /** Arrival rates follow 1 + a*sin over 24 h, lowest at hour 0, highest at hour 12. */
  diurnalAmplitude: number;
  /** Mean time between failures of one machine, and mean repair time (both exponential). */
  mtbfHours: number;
  meanRepairHours: number;
  /** Sliding window of the machine time `fairOrder` looks at. */
  fairWindowMin: number;
  maxWaitHours: number;
  /** Jobs are cut at the session lifetime. */
  maxJobHours: number;
}

/**
 * The default farm: the five pool shapes of config/demo.yaml scaled to 60 machines; 12 tenants, 10 of them on
 * x86_64, from heavy (kernel CI: frequent, long, several machines) to light. Offered baremetal x86_64 load averages
 * about 85 % of those 36 machines and peaks above capacity around hour 12 of each day.
 */
export const DEFAULT_CONFIG: SimConfig = {
  seed: 1,
  hours: 72,
  pools: [
    { name: 'metal-intel-x86_64', type: 'baremetal', arch: 'x86_64', platform: 'intel', machines: 20, recycleMin: 10 },
    { name: 'metal-amd-x86_64', type: 'baremetal', arch: 'x86_64', platform: 'amd', machines: 16, recycleMin: 10 },
    { name: 'metal-arm-aarch64', type: 'baremetal', arch: 'aarch64', platform: 'arm', machines: 10, recycleMin: 15 },
    { name: 'vm-intel-x86_64', type: 'vm', arch: 'x86_64', platform: 'intel', machines: 8, recycleMin: 1 },
    { name: 'vm-arm-aarch64', type: 'vm', arch: 'aarch64', platform: 'arm', machines: 6, recycleMin: 1 },
  ],
  tenants: [
    tenant('kernel-ci', 'x86_64', 4, 60, 4, 'metal-intel-x86_64'),
    tenant('systemd', 'x86_64', 3, 45, 2, 'metal-amd-x86_64'),
    tenant('podman', 'x86_64', 3, 30, 2, 'metal-intel-x86_64'),
    tenant('qemu', 'x86_64', 2, 90, 3, 'metal-amd-x86_64'),
    tenant('glibc', 'x86_64', 1, 60, 1, 'metal-intel-x86_64'),
    tenant('anaconda', 'x86_64', 1.5, 120, 2, 'metal-amd-x86_64'),
    tenant('cockpit', 'x86_64', 2, 20, 1, 'metal-intel-x86_64'),
    tenant('fedora-ci', 'x86_64', 4, 40, 3, 'metal-amd-x86_64'),
    tenant('ostree', 'x86_64', 1, 45, 1, 'metal-intel-x86_64'),
    tenant('rust', 'x86_64', 0.5, 30, 1, 'metal-amd-x86_64'),
    tenant('arm-kernel', 'aarch64', 2, 60, 2, 'metal-arm-aarch64'),
    tenant('arm-distro', 'aarch64', 1.5, 45, 2, 'metal-arm-aarch64'),
  ],
  diurnalAmplitude: 0.6,
  mtbfHours: 500,
  meanRepairHours: 6,
  fairWindowMin: 60,
  maxWaitHours: 4,
  maxJobHours: 6,
};

function tenant(name: string, arch: string, jobsPerHour: number, medianJobMin: number, maxQuantity: number, pinnedPool: string): SimTenant {
  return { name, arch, jobsPerHour, medianJobMin, sigma: 0.7, vmShare: 0.1, poolShare: 0.25, pinnedPool, maxQuantity };
}

// ---------------------------------------------------------------------------------------------------------------
// Randomness: a seeded 32-bit generator, and the distributions built on it.

/** mulberry32: a tiny seeded PRNG, uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Independent streams from one seed (a different constant per purpose). */
const stream = (seed: number, purpose: number) => mulberry32(Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(purpose, 0xc2b2ae35));

const exponential = (rng: () => number, mean: number) => -Math.log(1 - rng()) * mean;

function standardNormal(rng: () => number): number {
  // Box-Muller; 1 - u keeps the logarithm finite.
  const u = 1 - rng();
  const v = rng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

// ---------------------------------------------------------------------------------------------------------------
// The workload: drawn once, replayed against every policy.

const MIN = 60_000;
const HOUR = 3_600_000;

export interface Arrival {
  id: number;
  tenant: number;
  at: number;
  spec: NodeSpec;
  durationMs: number;
  /** `type/arch` of the pools it can use: the resource class fairness is measured in. */
  resource: string;
}

export interface Failure {
  at: number;
  machine: number;
  repairMs: number;
}

export interface Workload {
  arrivals: Arrival[];
  failures: Failure[];
}

/** Machines get ids 1..n in pool order; index = id - 1. */
function machinePools(config: SimConfig): SimPool[] {
  return config.pools.flatMap((p) => Array.from({ length: p.machines }, () => p));
}

const resourceOf = (type: MachineType, arch: string) => `${type}/${arch}`;

export function generateWorkload(config: SimConfig): Workload {
  const horizon = config.hours * HOUR;
  const arrivals: Omit<Arrival, 'id'>[] = [];
  config.tenants.forEach((t, index) => {
    const rng = stream(config.seed, 1000 + index);
    const peak = t.jobsPerHour * (1 + config.diurnalAmplitude);
    const pinned = config.pools.find((p) => p.name === t.pinnedPool);
    if (!pinned) throw new Error(`tenant ${t.name}: unknown pool ${t.pinnedPool}`);
    // Non-homogeneous Poisson process by thinning: candidates at the peak rate, kept with rate(t) / peak.
    for (let at = exponential(rng, HOUR / peak); at < horizon; at += exponential(rng, HOUR / peak)) {
      const rate = t.jobsPerHour * (1 + config.diurnalAmplitude * Math.sin((2 * Math.PI * at) / (24 * HOUR) - Math.PI / 2));
      const keep = rng() < rate / peak;
      const vm = rng() < t.vmShare;
      const byPool = rng() < t.poolShare;
      const q = rng();
      const quantity = Math.min(t.maxQuantity, q < 0.65 ? 1 : q < 0.85 ? 2 : q < 0.95 ? 3 : 4);
      const duration = Math.min(config.maxJobHours * HOUR, Math.max(2 * MIN, t.medianJobMin * MIN * Math.exp(t.sigma * standardNormal(rng))));
      if (!keep) continue;
      const spec: NodeSpec = vm
        ? { type: 'vm', arch: t.arch, quantity }
        : byPool
          ? { pool: pinned.name, quantity }
          : { type: 'baremetal', arch: t.arch, quantity };
      const resource = vm ? resourceOf('vm', t.arch) : byPool ? resourceOf(pinned.type, pinned.arch) : resourceOf('baremetal', t.arch);
      arrivals.push({ tenant: index, at: Math.round(at), spec, durationMs: Math.round(duration), resource });
    }
  });
  arrivals.sort((a, b) => a.at - b.at || a.tenant - b.tenant);

  const failures: Failure[] = [];
  const rng = stream(config.seed, 7);
  machinePools(config).forEach((_, machine) => {
    for (let at = exponential(rng, config.mtbfHours * HOUR); at < horizon; ) {
      const repairMs = Math.round(exponential(rng, config.meanRepairHours * HOUR));
      failures.push({ at: Math.round(at), machine, repairMs });
      at += repairMs + exponential(rng, config.mtbfHours * HOUR);
    }
  });
  failures.sort((a, b) => a.at - b.at || a.machine - b.machine);
  return { arrivals: arrivals.map((a, i) => ({ ...a, id: i + 1 })), failures };
}

// ---------------------------------------------------------------------------------------------------------------
// The event loop.

type SimEvent =
  | { kind: 'arrive'; arrival: Arrival }
  | { kind: 'end'; session: number }
  | { kind: 'recycled'; machine: number; epoch: number }
  | { kind: 'fail'; failure: Failure }
  | { kind: 'repair'; machine: number }
  | { kind: 'timeout'; request: number };

/** Binary min-heap on (time, insertion order), so equal times keep their order and a run is deterministic. */
class Agenda {
  private items: Array<{ at: number; seq: number; event: SimEvent }> = [];
  private seq = 0;

  get size() {
    return this.items.length;
  }

  push(at: number, event: SimEvent): void {
    const items = this.items;
    items.push({ at, seq: this.seq++, event });
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      [items[i], items[parent]] = [items[parent], items[i]];
      i = parent;
    }
  }

  pop(): { at: number; event: SimEvent } {
    const items = this.items;
    const top = items[0];
    const last = items.pop()!;
    if (items.length > 0) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < items.length && this.before(l, best)) best = l;
        if (r < items.length && this.before(r, best)) best = r;
        if (best === i) break;
        [items[i], items[best]] = [items[best], items[i]];
        i = best;
      }
    }
    return top;
  }

  peekAt(): number {
    return this.items[0].at;
  }

  private before(i: number, j: number): boolean {
    const a = this.items[i];
    const b = this.items[j];
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }
}

interface SimMachine {
  index: number;
  /** What planAllocation reads: id, pool, busyMs and allocations (wear), state. */
  m: Machine;
  pool: SimPool;
  status: 'ready' | 'busy' | 'recycling' | 'failed';
  /** Bumped when a failure cuts a recycling short, so its `recycled` event is void. */
  epoch: number;
  /** Machine time of every job it ran, including one running at the end (the wear compared). */
  wearMs: number;
  busySince: number;
  session: number | null;
  interval: BusyInterval | null;
}

interface SimTenantState {
  family: string | null;
  intervals: BusyInterval[];
}

interface Running {
  arrival: Arrival;
  machines: SimMachine[];
  start: number;
}

/** For ablation: another waiting-queue order than the policy's own; `duffy` without platform affinity. */
export interface SimOptions {
  queue?: 'fair' | 'fifo';
  /** `duffy` only: false calls planAllocation with no tenant platform, so it picks the least-stressed machine anywhere. */
  affinity?: boolean;
}

export interface PolicyReport {
  policy: PolicyName;
  /** The policy and any option that differs from its own defaults. */
  label: string;
  queue: 'fair' | 'fifo';
  /** Abandoned requests by shape: `vm by type`, `baremetal by type`, `by pool`. */
  abandonedBy: Record<string, number>;
  requests: number;
  served: number;
  abandoned: number;
  waitingAtEnd: number;
  /** Jobs cut short by a failing machine. */
  interrupted: number;
  /** Gini of the machine time of each machine, per pool, and their mean. */
  wearGini: Record<string, number>;
  wearGiniMean: number;
  /** Jain's index over tenants of served machine time / max-min fair share (see `simulate`). */
  jain: number;
  /** Machines handed to type-based requests of tenants whose family was established: share on that family. */
  affinityHitRate: number;
  affinityChecked: number;
  /** Virtual seconds from arrival until served; abandoned and still-waiting requests count with the time they waited. */
  waitP50s: number;
  waitP95s: number;
  waitP99s: number;
  /** Machine time used / machine time of the whole farm. */
  utilisation: number;
  /** Established platform family -> tenants. */
  families: Record<string, number>;
}

/**
 * Runs one policy over the workload.
 *
 * Fairness (Jain's index): at every instant, per resource class (`type/arch`), the machines the tenants hold are
 * compared with the max-min fair split of those same machines over what each tenant wants (held + waiting).
 * Integrated over the run, tenant i gets x_i = held machine time / fair machine time; Jain's index of the x_i is
 * 1 when every tenant got exactly its fair share (Jain, Chiu, Hawe 1984, fairness relative to an optimal
 * allocation). It only moves under contention: when nobody waits, held = wanted = fair for everyone.
 */
export function simulate(config: SimConfig, workload: Workload, policy: PolicyName, options: SimOptions = {}): PolicyReport {
  const ownQueue = policy === 'duffy' ? 'fair' : 'fifo';
  const fairQueue = (options.queue ?? ownQueue) === 'fair';
  const affinity = options.affinity ?? true;
  const label = [policy, ...(fairQueue !== (ownQueue === 'fair') ? [fairQueue ? 'fair queue' : 'FIFO queue'] : []), ...(policy === 'duffy' && !affinity ? ['no affinity'] : [])].join(', ');
  const horizon = config.hours * HOUR;
  const rng = stream(config.seed, 99);
  const pools = config.pools;
  const byPool = new Map<string, SimMachine[]>(pools.map((p) => [p.name, []]));
  const machines: SimMachine[] = machinePools(config).map((pool, index) => {
    const sm: SimMachine = { index, m: simMachine(index + 1, pool.name), pool, status: 'ready', epoch: 0, wearMs: 0, busySince: 0, session: null, interval: null };
    byPool.get(pool.name)!.push(sm);
    return sm;
  });
  const platformOf = new Map(pools.map((p) => [p.name, p.platform]));
  const tenants: SimTenantState[] = config.tenants.map(() => ({ family: null, intervals: [] }));
  const queue: Arrival[] = [];
  const running = new Map<number, Running>();
  const waits: number[] = [];
  let served = 0;
  let abandoned = 0;
  const abandonedBy: Record<string, number> = {};
  let interrupted = 0;
  let affinityHits = 0;
  let affinityChecked = 0;
  let freeCount = machines.length;

  // Fairness bookkeeping: machines held and wanted per resource class and tenant, integrated over time.
  const resources = [...new Set(pools.map((p) => resourceOf(p.type, p.arch)))];
  const rIndex = new Map(resources.map((r, i) => [r, i]));
  const nT = config.tenants.length;
  const held = resources.map(() => new Array<number>(nT).fill(0));
  const waiting = resources.map(() => new Array<number>(nT).fill(0));
  const heldTime = new Array<number>(nT).fill(0);
  const fairTime = new Array<number>(nT).fill(0);
  let fair: number[][] = resources.map(() => new Array<number>(nT).fill(0));
  let fairDirty = false;
  let clock = 0;
  const advance = (to: number) => {
    const dt = to - clock;
    if (dt <= 0) return;
    if (fairDirty) {
      fair = resources.map((_, r) => {
        const capacity = held[r].reduce((a, b) => a + b, 0);
        return maxMinFair(capacity, held[r].map((h, t) => h + waiting[r][t]));
      });
      fairDirty = false;
    }
    for (let r = 0; r < resources.length; r++) {
      for (let t = 0; t < nT; t++) {
        heldTime[t] += held[r][t] * dt;
        fairTime[t] += fair[r][t] * dt;
      }
    }
    clock = to;
  };

  const agenda = new Agenda();
  for (const a of workload.arrivals) agenda.push(a.at, { kind: 'arrive', arrival: a });
  for (const f of workload.failures) agenda.push(f.at, { kind: 'fail', failure: f });

  const freeIn = (pool: string, held: (id: number) => boolean = () => false) => byPool.get(pool)!.filter((x) => x.status === 'ready' && !held(x.m.id));
  const usage = (t: number) => {
    const window = config.fairWindowMin * MIN;
    const intervals = tenants[t].intervals;
    // Forget what ended before the window.
    if (intervals.length > 0 && intervals[0].end !== null && intervals[0].end < clock - window) {
      tenants[t].intervals = intervals.filter((i) => i.end === null || i.end >= clock - window);
    }
    return recentUsageMs(tenants[t].intervals, clock, window);
  };

  const mayOverflow = (a: Arrival) => clock - a.at >= OVERFLOW_AFTER_SHARE_OF_WAIT * config.maxWaitHours * HOUR;

  // As the server (decide.ts): a new tenant's family is the least crowded one.
  const crowding = () => familyCrowding(pools, tenants.map((t) => t.family));

  /** `held`: machines held back from this request (duffy). */
  function choose(a: Arrival, held?: (id: number) => boolean): Array<{ sm: SimMachine; platform: string }> | null {
    const spec = a.spec;
    if (policy === 'duffy') {
      const tenantPlatform = affinity ? tenants[a.tenant].family : null;
      const plan = planAllocation({
        specs: [spec],
        pools,
        free: (p) => freeIn(p, held).map((x) => x.m),
        tenantPlatform,
        overflow: mayOverflow(a),
        crowding: affinity && tenantPlatform === null ? crowding() : undefined,
      });
      return plan.ok ? plan.picks.map((p) => ({ sm: machines[p.machine.id - 1], platform: p.platform })) : null;
    }
    const candidates = eligiblePools(pools, spec).flatMap((p) => freeIn(p.name));
    if (candidates.length < spec.quantity) return null;
    if (policy === 'first-free') candidates.sort((x, y) => x.m.id - y.m.id);
    else {
      // Partial Fisher-Yates: the first `quantity` are a uniform random choice.
      for (let i = 0; i < spec.quantity; i++) {
        const j = i + Math.floor(rng() * (candidates.length - i));
        [candidates[i], candidates[j]] = [candidates[j], candidates[i]];
      }
    }
    return candidates.slice(0, spec.quantity).map((sm) => ({ sm, platform: platformOf.get(sm.pool.name)! }));
  }

  function start(a: Arrival, picks: Array<{ sm: SimMachine; platform: string }>) {
    const t = tenants[a.tenant];
    const typeBased = a.spec.pool === undefined && a.spec.platform === undefined;
    const establishedBefore = t.family;
    for (const { sm, platform } of picks) {
      if (typeBased && establishedBefore !== null) {
        affinityChecked += 1;
        if (platform === establishedBefore) affinityHits += 1;
      }
      sm.status = 'busy';
      sm.m.state = 'deployed';
      sm.m.allocations += 1;
      sm.m.sessionId = a.id;
      sm.session = a.id;
      sm.busySince = clock;
      sm.interval = { start: clock, end: null };
      t.intervals.push(sm.interval);
      freeCount -= 1;
    }
    // As in the ledger (world.ts): the first reservation fixes the tenant's family.
    if (t.family === null) t.family = picks[0].platform;
    const r = rIndex.get(a.resource)!;
    waiting[r][a.tenant] -= a.spec.quantity;
    held[r][a.tenant] += a.spec.quantity;
    fairDirty = true;
    waits.push(clock - a.at);
    served += 1;
    running.set(a.id, { arrival: a, machines: picks.map((p) => p.sm), start: clock });
    agenda.push(clock + a.durationMs, { kind: 'end', session: a.id });
  }

  function end(sessionId: number) {
    const s = running.get(sessionId);
    if (!s) return;
    running.delete(sessionId);
    for (const sm of s.machines) {
      const busy = clock - sm.busySince;
      sm.wearMs += busy;
      sm.m.busyMs += busy;
      sm.m.sessionId = null;
      sm.session = null;
      sm.interval!.end = clock;
      sm.interval = null;
      if (sm.status === 'busy') {
        sm.status = 'recycling';
        sm.m.state = 'deprovisioning';
        agenda.push(clock + sm.pool.recycleMin * MIN, { kind: 'recycled', machine: sm.index, epoch: sm.epoch });
      }
    }
    const r = rIndex.get(s.arrival.resource)!;
    held[r][s.arrival.tenant] -= s.arrival.spec.quantity;
    fairDirty = true;
  }

  const waitingRequest = (a: Arrival): WaitingRequest => ({ sessionId: a.id, tenantId: a.tenant, quantity: a.spec.quantity, enqueuedAt: a.at, until: a.at + config.maxWaitHours * HOUR });

  function schedule() {
    if (queue.length === 0 || freeCount === 0) return;
    let order: Arrival[] = queue;
    if (fairQueue) {
      const byId = new Map(queue.map((a) => [a.id, a]));
      order = fairOrder(queue.map(waitingRequest), usage, clock).map((x) => byId.get(x.sessionId)!);
    }
    // Free machines only go down during a pass: a shape that did not fit will not fit later in the same pass
    // (while no machine is held: a held machine is free to some requests and not to others).
    const misses = new Set<string>();
    const done = new Set<number>();
    const held = new HeldMachines();
    const used = new Map<number, number>();
    const usageOf = (t: number) => used.get(t) ?? used.set(t, usage(t)).get(t)!;
    for (const a of order) {
      if (freeCount === 0) break;
      // A request that may overflow can fit where one of the same shape and family that may not did not.
      const key = `${JSON.stringify(a.spec)}|${policy === 'duffy' ? `${tenants[a.tenant].family}|${mayOverflow(a)}` : ''}`;
      if (held.size === 0 && misses.has(key)) continue;
      const heldFrom = policy === 'duffy' && held.size > 0 ? held.heldFrom(usageOf(a.tenant)) : undefined;
      const picks = choose(a, heldFrom);
      if (!picks) {
        misses.add(key);
        if (policy === 'duffy' && holdsMachines(waitingRequest(a), clock)) {
          const machinesHeld = machinesToHold({ specs: [a.spec], pools, free: (p) => freeIn(p, heldFrom).map((x) => x.m), tenantPlatform: affinity ? tenants[a.tenant].family : null, overflow: mayOverflow(a) });
          held.hold(machinesHeld.map((m) => m.id), usageOf(a.tenant));
        }
        continue;
      }
      start(a, picks);
      done.add(a.id);
    }
    if (done.size > 0) {
      const rest = queue.filter((a) => !done.has(a.id));
      queue.length = 0;
      queue.push(...rest);
    }
  }

  while (agenda.size > 0 && agenda.peekAt() <= horizon) {
    const { at, event } = agenda.pop();
    advance(at);
    switch (event.kind) {
      case 'arrive': {
        const a = event.arrival;
        queue.push(a);
        waiting[rIndex.get(a.resource)!][a.tenant] += a.spec.quantity;
        fairDirty = true;
        agenda.push(at + config.maxWaitHours * HOUR, { kind: 'timeout', request: a.id });
        break;
      }
      case 'timeout': {
        const i = queue.findIndex((a) => a.id === event.request);
        if (i >= 0) {
          const [a] = queue.splice(i, 1);
          waiting[rIndex.get(a.resource)!][a.tenant] -= a.spec.quantity;
          fairDirty = true;
          waits.push(clock - a.at);
          abandoned += 1;
          const shape = a.spec.pool !== undefined ? 'by pool' : `${a.spec.type} by type`;
          abandonedBy[shape] = (abandonedBy[shape] ?? 0) + 1;
        }
        break;
      }
      case 'end':
        end(event.session);
        break;
      case 'recycled': {
        const sm = machines[event.machine];
        if (sm.status === 'recycling' && sm.epoch === event.epoch) {
          sm.status = 'ready';
          sm.m.state = 'ready';
          freeCount += 1;
        }
        break;
      }
      case 'fail': {
        const sm = machines[event.failure.machine];
        if (sm.status === 'failed') break;
        if (sm.status === 'ready') freeCount -= 1;
        if (sm.status === 'busy') {
          interrupted += 1;
          sm.status = 'failed';
          end(sm.session!);
        }
        sm.status = 'failed';
        sm.m.state = 'failed';
        sm.epoch += 1;
        agenda.push(at + event.failure.repairMs, { kind: 'repair', machine: sm.index });
        break;
      }
      case 'repair': {
        const sm = machines[event.machine];
        sm.status = 'ready';
        sm.m.state = 'ready';
        freeCount += 1;
        break;
      }
    }
    schedule();
  }
  advance(horizon);

  // The run ends: jobs still running count up to the horizon, requests still waiting with what they waited.
  for (const sm of machines) if (sm.status === 'busy') sm.wearMs += horizon - sm.busySince;
  for (const a of queue) waits.push(horizon - a.at);
  const wearGini: Record<string, number> = {};
  for (const p of pools) wearGini[p.name] = gini(byPool.get(p.name)!.map((x) => x.wearMs));
  const ginis = Object.values(wearGini);
  const shares: number[] = [];
  for (let t = 0; t < nT; t++) if (fairTime[t] > 0) shares.push(heldTime[t] / fairTime[t]);
  const families: Record<string, number> = {};
  for (const t of tenants) families[t.family ?? 'none'] = (families[t.family ?? 'none'] ?? 0) + 1;
  return {
    policy,
    label,
    queue: fairQueue ? 'fair' : 'fifo',
    abandonedBy,
    requests: workload.arrivals.length,
    served,
    abandoned,
    waitingAtEnd: queue.length,
    interrupted,
    wearGini,
    wearGiniMean: ginis.reduce((a, b) => a + b, 0) / ginis.length,
    jain: jain(shares),
    affinityHitRate: affinityChecked ? affinityHits / affinityChecked : NaN,
    affinityChecked,
    waitP50s: percentile(waits, 50) / 1000,
    waitP95s: percentile(waits, 95) / 1000,
    waitP99s: percentile(waits, 99) / 1000,
    utilisation: machines.reduce((s, x) => s + x.wearMs, 0) / (machines.length * horizon),
    families,
  };
}

/** A Machine as the ledger would fold it: registered ready, never used. */
function simMachine(id: number, pool: string): Machine {
  return newMachine({ id, hostname: `${pool}-${id}.sim`, ipaddr: null, pool, reusable: true, data: {}, state: 'ready', createdAt: new Date(0).toISOString(), revision: 0 });
}

/** Each part of `duffy` switched off or lent to a baseline, to see what each one does. */
export const ABLATIONS: ReadonlyArray<{ policy: PolicyName; options: SimOptions }> = [
  { policy: 'duffy', options: { queue: 'fifo' } },
  { policy: 'duffy', options: { affinity: false } },
  { policy: 'random', options: { queue: 'fair' } },
  { policy: 'first-free', options: { queue: 'fair' } },
];

/** Every policy on the same workload, and the ablations when asked. */
export function compare(config: SimConfig, opts: { ablations?: boolean } = {}): { workload: Workload; reports: PolicyReport[]; ablations: PolicyReport[] } {
  const workload = generateWorkload(config);
  return {
    workload,
    reports: POLICIES.map((p) => simulate(config, workload, p)),
    ablations: opts.ablations ? ABLATIONS.map((a) => simulate(config, workload, a.policy, a.options)) : [],
  };
}

/** Offered load per resource class: machine-hours asked per hour of the run / machines of that class. */
export function offeredLoad(config: SimConfig, workload: Workload): Record<string, number> {
  const capacity = new Map<string, number>();
  for (const p of config.pools) capacity.set(resourceOf(p.type, p.arch), (capacity.get(resourceOf(p.type, p.arch)) ?? 0) + p.machines);
  const asked = new Map<string, number>();
  for (const a of workload.arrivals) asked.set(a.resource, (asked.get(a.resource) ?? 0) + a.spec.quantity * a.durationMs);
  const out: Record<string, number> = {};
  for (const [r, n] of capacity) out[r] = (asked.get(r) ?? 0) / (n * config.hours * HOUR);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Printing.

const fixed = (x: number, digits: number) => (Number.isNaN(x) ? '-' : x.toFixed(digits));

export function formatReports(config: SimConfig, workload: Workload, reports: PolicyReport[], ablations: PolicyReport[] = []): string {
  const load = offeredLoad(config, workload);
  const out: string[] = [];
  const machineCount = config.pools.reduce((n, p) => n + p.machines, 0);
  out.push(
    `seed ${config.seed}, ${config.hours} h virtual, ${machineCount} machines in ${config.pools.length} pools, ${config.tenants.length} tenants, ` +
      `${workload.arrivals.length} requests, ${workload.failures.length} machine failures`,
  );
  out.push(`offered load (machine time asked / capacity): ${Object.entries(load).map(([r, x]) => `${r} ${(100 * x).toFixed(0)}%`).join(', ')}`);
  out.push('');
  out.push(policyTable(reports));
  if (ablations.length > 0) {
    out.push('');
    out.push('ablation, same workload:');
    out.push(policyTable(ablations));
  }
  out.push('');
  const shapes = [...new Set(reports.flatMap((r) => Object.keys(r.abandonedBy)))].sort();
  out.push(
    formatTable(
      ['abandoned requests by shape', ...reports.map((r) => r.label)],
      shapes.map((s) => [s, ...reports.map((r) => String(r.abandonedBy[s] ?? 0))]),
    ),
  );
  out.push('');
  out.push(
    formatTable(
      ['wear Gini per pool', ...reports.map((r) => r.label)],
      config.pools.map((p) => [p.name, ...reports.map((r) => fixed(r.wearGini[p.name], 3))]),
    ),
  );
  out.push('');
  out.push(
    formatTable(
      ['tenants per family', ...reports.map((r) => r.label)],
      [...new Set(reports.flatMap((r) => Object.keys(r.families)))].sort().map((f) => [f, ...reports.map((r) => String(r.families[f] ?? 0))]),
    ),
  );
  return out.join('\n');
}

function policyTable(reports: PolicyReport[]): string {
  return formatTable(
    ['policy', 'wear Gini', 'Jain', 'affinity', 'wait p50 s', 'p95 s', 'p99 s', 'served', 'abandoned', 'waiting', 'util'],
    reports.map((r) => [
      r.label,
      fixed(r.wearGiniMean, 3),
      fixed(r.jain, 3),
      Number.isNaN(r.affinityHitRate) ? '-' : `${(100 * r.affinityHitRate).toFixed(1)}%`,
      fixed(r.waitP50s, 0),
      fixed(r.waitP95s, 0),
      fixed(r.waitP99s, 0),
      String(r.served),
      String(r.abandoned),
      String(r.waitingAtEnd),
      `${(100 * r.utilisation).toFixed(1)}%`,
    ]),
  );
}
