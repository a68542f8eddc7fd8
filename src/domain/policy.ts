import { type NodeSpec, type PoolProfile } from './events.js';
import { unmet } from './hardware.js';
import { type Machine } from './world.js';

/** What the scheduler knows of a pool (from configuration). */
export type { PoolProfile };

export type Affinity = 'kept' | 'established' | 'fallback' | 'not-offered' | 'overflow';

export interface Pick {
  machine: Machine;
  platform: string;
  affinity: Affinity;
}

/**
 * Soft affinity and waiting: a request that may wait gives its tenant's own family this share of its wait before
 * another family may serve it (one that cannot wait may be served from another family at once). Chosen with the
 * simulator (README, scheduling): with urgent requests holding their family's free machines (fair-queue.ts) the
 * queue drains well enough that the family can have most of the wait; at 0.9 affinity falls under 90 % on half
 * the seeds, at 0.97 the abandoned requests rise by about 25.
 */
export const OVERFLOW_AFTER_SHARE_OF_WAIT = 0.95;

export type PlanResult = { ok: true; picks: Pick[] } | { ok: false; reason: string };

/** Pools a spec may draw from: a named pool, or every pool of that type (and arch, platform when given). */
export function eligiblePools(pools: readonly PoolProfile[], spec: NodeSpec): PoolProfile[] {
  if (spec.pool !== undefined) return pools.filter((p) => p.name === spec.pool);
  return pools.filter(
    (p) =>
      (spec.type === undefined || p.type === spec.type) &&
      (spec.arch === undefined || p.arch === spec.arch) &&
      (spec.platform === undefined || p.platform === spec.platform),
  );
}

export function describeSpec(spec: NodeSpec): string {
  const hw = Object.entries(spec.hardware ?? {}).filter(([, v]) => v !== undefined);
  const needs = hw.length ? ` with ${hw.map(([k, v]) => `${k} ${typeof v === 'string' ? JSON.stringify(v) : v}`).join(', ')}` : '';
  if (spec.pool !== undefined) return `pool ${spec.pool}${needs}`;
  const parts = [spec.type ?? 'any type', spec.arch, spec.platform].filter(Boolean);
  return parts.join(' ') + needs;
}

/** What wear levelling reads of a machine (invariant 8). */
export type Wear = { state: Machine['state']; busyMs: number; allocations: number; id: number };

/** Wear levelling (invariant 8): least busy time, then fewest allocations, then lowest id, so ties are deterministic. */
export function lessStressed(a: Wear, b: Wear): number {
  return a.busyMs - b.busyMs || a.allocations - b.allocations || a.id - b.id;
}

/** The order machines are offered in: a ready machine serves at once, an unused one needs provisioning first. */
export function preferred(a: Wear, b: Wear): number {
  return (a.state === 'ready' ? 0 : 1) - (b.state === 'ready' ? 0 : 1) || lessStressed(a, b);
}

/** The free machines of one pool as the policy reads them: how many, and the most preferred first (lazily). */
export interface FreePool {
  size(): number;
  inOrder(): Iterable<Machine>;
}

/** A plain list of free machines (the simulator, tests, a hardware filter), put in order once. */
function listed(machines: Iterable<Machine>): FreePool {
  const sorted = [...machines].sort(preferred);
  return { size: () => sorted.length, inOrder: () => sorted };
}

export const hasHardware = (spec: NodeSpec) => Object.values(spec.hardware ?? {}).some((v) => v !== undefined);

const isFreePool = (x: FreePool | Iterable<Machine>): x is FreePool => typeof (x as FreePool).inOrder === 'function';

/**
 * A pool's free machines for a spec. With hardware requirements, only those not `taken` that meet them all; each
 * requirement a machine misses is counted in `ruledOut`.
 */
function offerFor(pool: PoolProfile, given: FreePool | Iterable<Machine>, spec: NodeSpec, taken: ReadonlySet<number>, ruledOut?: Map<string, number>): Offer {
  if (!hasHardware(spec)) return { pool, free: isFreePool(given) ? given : listed(given) };
  const fit: Machine[] = [];
  // In registration (id) order, as a plain list is: the reasons are named in the order machines first miss them.
  for (const machine of isFreePool(given) ? [...given.inOrder()].sort((a, b) => a.id - b.id) : given) {
    if (taken.has(machine.id)) continue;
    const misses = unmet(machine.hardware ?? {}, spec.hardware);
    if (ruledOut) for (const r of misses) ruledOut.set(r, (ruledOut.get(r) ?? 0) + 1);
    if (misses.length === 0) fit.push(machine);
  }
  return { pool, free: listed(fit) };
}

interface Offer {
  pool: PoolProfile;
  free: FreePool;
}

/**
 * Choose machines for every spec of one request, or say why not.
 * Platform affinity (invariant 7): a tenant with an established platform family gets it whenever it can be served;
 * another family when the spec names a pool or a platform itself (an explicit choice), or when its own family
 * has too few free machines of the kind asked for and another family has enough (overflow, soft affinity); when
 * no one family has enough, several serve the spec together, the tenant's own family's machines first.
 * `free` gives each pool's free machines: an index in preference order (the World's), or any list. Taking k
 * machines reads O(k) of them per pool, however many are free; a spec with hardware requirements reads them all
 * (the index is not ordered by hardware).
 */
export function planAllocation(args: {
  specs: readonly NodeSpec[];
  pools: readonly PoolProfile[];
  free: (pool: string) => FreePool | Iterable<Machine>;
  tenantPlatform: string | null;
  /** Soft affinity may serve from another family (default: yes); a request that waits first gives its family time. */
  overflow?: boolean;
  /** Established tenants per machine of a family and arch (see `familyCrowding`): a new tenant goes where it is lowest. */
  crowding?: (platform: string, arch: string) => number;
}): PlanResult {
  const taken = new Set<number>();
  const takenPerPool = new Map<string, number>();
  const picks: Pick[] = [];
  // Within one request, the first pick establishes the family for the rest.
  let platform = args.tenantPlatform;
  for (const spec of args.specs) {
    const pools = eligiblePools(args.pools, spec);
    if (pools.length === 0) return { ok: false, reason: `no pool matches ${describeSpec(spec)}` };
    // Hardware requirements: only machines that meet them all are candidates; count what each one rules out.
    const ruledOut = new Map<string, number>();
    const needsHardware = hasHardware(spec);
    const offers = pools.map((pool) => offerFor(pool, args.free(pool.name), spec, taken, ruledOut));
    const hw = ruledOut.size ? `; hardware ${[...ruledOut].map(([r, n]) => `${r} rules out ${n} free machine${n === 1 ? '' : 's'}`).join(', ')}` : '';
    // Free machines of an offer not yet taken by this request's earlier specs (a hardware list left them out already).
    const available = (o: Offer) => o.free.size() - (needsHardware ? 0 : (takenPerPool.get(o.pool.name) ?? 0));
    const explicit = spec.pool !== undefined || spec.platform !== undefined;
    // The family this spec must come from (null: any). A spec naming a pool or platform is the tenant's own choice;
    // affinity binds only where the tenant's family is offered for this kind of machine at all.
    const offered = platform !== null && pools.some((p) => p.platform === platform);
    let family = explicit ? null : platform === null ? roomiestFamily(offers, available, taken, spec.quantity, args.crowding) : offered ? platform : null;
    // Soft affinity: when the tenant's family has too few free machines of this type and arch, another family
    // that has enough serves rather than nobody (the pick says `overflow`). A spec naming a pool or platform stays strict.
    let overflow = false;
    // When no one family can serve it whole, several do: the tenant's own family's machines first (null: not so).
    let mixed: Array<{ machine: Machine; platform: string }> | null = null;
    const mayOverflow = args.overflow !== false && !explicit;
    // (Too few: fewer than `quantity` to take, found by taking them, not by counting the whole family.)
    if (mayOverflow && family !== null && family === platform && leastWorn(offers.filter((o) => o.pool.platform === family), taken, spec.quantity).length < spec.quantity) {
      const other = roomiestFamily(
        offers.filter((o) => o.pool.platform !== family),
        available,
        taken,
        spec.quantity,
      );
      if (other !== null) [family, overflow] = [other, true];
      else mixed = acrossFamilies(offers, platform, taken, spec.quantity);
    } else if (mayOverflow && platform === null && family === null) mixed = acrossFamilies(offers, null, taken, spec.quantity);
    if (mixed !== null) overflow = true;
    if (!explicit && platform === null && family === null && mixed === null) {
      const perFamily = freePerFamily(offers, available);
      const most = Math.max(0, ...perFamily.values());
      const all = [...perFamily.values()].reduce((a, b) => a + b, 0);
      const detail = perFamily.size > 1 ? `at most ${most} available on one platform family (${all} in all)` : `${most} available`;
      return { ok: false, reason: `${describeSpec(spec)}: ${spec.quantity} requested, ${detail}${hw}` };
    }
    const chosen = mixed ?? leastWorn(family === null ? offers : offers.filter((o) => o.pool.platform === family), taken, spec.quantity);
    if (chosen.length < spec.quantity) {
      const where = family !== null && !explicit ? ` on platform ${family}` : '';
      return { ok: false, reason: `${describeSpec(spec)}: ${spec.quantity} requested, ${chosen.length} available${where}${hw}` };
    }
    // The rest of the spec that establishes the family: its family is offered (it was just picked).
    const establishing = platform === null;
    for (const c of chosen) {
      const affinity: Affinity =
        platform === null ? 'established' : !explicit && !offered && !establishing ? 'not-offered' : c.platform === platform ? 'kept' : overflow ? 'overflow' : 'fallback';
      if (platform === null) platform = c.platform;
      taken.add(c.machine.id);
      takenPerPool.set(c.machine.pool, (takenPerPool.get(c.machine.pool) ?? 0) + 1);
      picks.push({ machine: c.machine, platform: c.platform, affinity });
    }
  }
  return { ok: true, picks };
}

/** The k most preferred machines over several pools, not yet taken: a merge of each pool's ordered free machines. */
function leastWorn(offers: readonly Offer[], taken: ReadonlySet<number>, k: number): Array<{ machine: Machine; platform: string }> {
  const heads = offers.map((o) => {
    const it = o.free.inOrder()[Symbol.iterator]();
    return { it, platform: o.pool.platform, machine: nextFree(it, taken) };
  });
  const chosen: Array<{ machine: Machine; platform: string }> = [];
  while (chosen.length < k) {
    let best: (typeof heads)[number] | undefined;
    for (const h of heads) if (h.machine && (!best || preferred(h.machine, best.machine!) < 0)) best = h;
    if (!best) break;
    chosen.push({ machine: best.machine!, platform: best.platform });
    best.machine = nextFree(best.it, taken);
  }
  return chosen;
}

/** `quantity` machines of any family, the ones of `own` first (least worn first within each), or null if too few. */
function acrossFamilies(offers: readonly Offer[], own: string | null, taken: ReadonlySet<number>, quantity: number): Array<{ machine: Machine; platform: string }> | null {
  const first = own === null ? [] : leastWorn(offers.filter((o) => o.pool.platform === own), taken, quantity);
  const rest = leastWorn(offers.filter((o) => o.pool.platform !== own), taken, quantity - first.length);
  return first.length + rest.length === quantity ? [...first, ...rest] : null;
}

function nextFree(it: Iterator<Machine>, taken: ReadonlySet<number>): Machine | undefined {
  for (let r = it.next(); !r.done; r = it.next()) if (!taken.has(r.value.id)) return r.value;
  return undefined;
}

/** Free machines per family, families in the order of the first pool offering any. */
function freePerFamily(offers: readonly Offer[], available: (o: Offer) => number): Map<string, number> {
  const counts = new Map<string, number>();
  for (const o of offers) {
    const n = available(o);
    if (n > 0) counts.set(o.pool.platform, (counts.get(o.pool.platform) ?? 0) + n);
  }
  return counts;
}

/**
 * A tenant's first family, among those with enough free machines of the kind asked for: the least crowded (fewest
 * established tenants per machine, when `crowding` is given), then the one with the most free machines, so that
 * tenants spread over families instead of all landing on the first one; ties go to the least worn machine's family.
 * (Free machines alone are a poor guide: tenants arrive when the farm is quiet, and the bigger family took most.)
 */
function roomiestFamily(
  offers: readonly Offer[],
  available: (o: Offer) => number,
  taken: ReadonlySet<number>,
  quantity: number,
  crowding?: (platform: string, arch: string) => number,
): string | null {
  const free = freePerFamily(offers, available);
  const leastWornFamily = leastWorn(offers, taken, 1)[0]?.platform ?? null;
  const crowded = (platform: string) => (crowding ? crowding(platform, offers.find((o) => o.pool.platform === platform)!.pool.arch) : 0);
  let best: string | null = null;
  for (const [platform, n] of free) {
    if (n < quantity) continue;
    // Negative: `platform` is the better first family.
    const better = best === null ? -1 : crowded(platform) - crowded(best) || free.get(best)! - n || (platform === leastWornFamily ? -1 : best === leastWornFamily ? 1 : 0);
    if (better < 0) best = platform;
  }
  return best;
}

/**
 * `crowding` for planAllocation: established tenants per machine of each family and arch, all machine types
 * counted (a family that also offers VMs of the arch keeps a tenant's VM requests in the family too).
 */
export function familyCrowding(pools: ReadonlyArray<PoolProfile & { machines: number }>, families: Iterable<string | null>): (platform: string, arch: string) => number {
  const tenants = new Map<string, number>();
  for (const f of families) if (f !== null) tenants.set(f, (tenants.get(f) ?? 0) + 1);
  return (platform, arch) => {
    const machines = pools.filter((p) => p.platform === platform && p.arch === arch).reduce((n, p) => n + p.machines, 0);
    return (tenants.get(platform) ?? 0) / Math.max(1, machines);
  };
}

/**
 * The free machines an urgent request that does not fit holds back from the requests after it (fair-queue.ts,
 * `HeldMachines`): for each spec, the most preferred free machines it could be served from, up to its quantity,
 * only its own family's while it may not overflow. Held, they add up until the request fits, instead of each one
 * that frees going to a request that came later.
 */
export function machinesToHold(args: {
  specs: readonly NodeSpec[];
  pools: readonly PoolProfile[];
  free: (pool: string) => FreePool | Iterable<Machine>;
  tenantPlatform: string | null;
  overflow: boolean;
}): Machine[] {
  const held = new Set<number>();
  const out: Machine[] = [];
  for (const spec of args.specs) {
    const pools = eligiblePools(args.pools, spec);
    const explicit = spec.pool !== undefined || spec.platform !== undefined;
    const own = !explicit && !args.overflow && args.tenantPlatform !== null && pools.some((p) => p.platform === args.tenantPlatform);
    const offers = pools.filter((p) => !own || p.platform === args.tenantPlatform).map((pool) => offerFor(pool, args.free(pool.name), spec, held));
    for (const c of leastWorn(offers, held, spec.quantity)) {
      held.add(c.machine.id);
      out.push(c.machine);
    }
  }
  return out;
}
