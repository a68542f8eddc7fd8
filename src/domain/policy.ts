import { type MachineType, type NodeSpec } from './events.js';
import { unmet } from './hardware.js';
import { type Machine } from './world.js';

/** What the scheduler knows of a pool (from configuration). */
export interface PoolProfile {
  name: string;
  type: MachineType;
  arch: string;
  platform: string;
}

export type Affinity = 'kept' | 'established' | 'fallback' | 'not-offered' | 'overflow';

export interface Pick {
  machine: Machine;
  platform: string;
  affinity: Affinity;
}

/**
 * Soft affinity and waiting: a request that may wait gives its tenant's own family this share of its wait before
 * another family may serve it (one that cannot wait may be served from another family at once). Chosen with the
 * simulator: at 0.5 affinity stays about 90 %, while serving at once drops it to about 70 % for a few fewer abandoned
 * requests (README, scheduling).
 */
export const OVERFLOW_AFTER_SHARE_OF_WAIT = 0.5;

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

/** Wear levelling (invariant 8): least busy time, then fewest allocations, then lowest id, so ties are deterministic. */
export function lessStressed(a: Machine, b: Machine): number {
  return a.busyMs - b.busyMs || a.allocations - b.allocations || a.id - b.id;
}

/** A ready machine serves at once; an unused one needs provisioning first. */
const readiness = (m: Machine) => (m.state === 'ready' ? 0 : 1);
const byPreference = (a: { machine: Machine }, b: { machine: Machine }) =>
  readiness(a.machine) - readiness(b.machine) || lessStressed(a.machine, b.machine);

/** The k smallest items in order, without sorting them all: a request wants a few machines out of many. */
function smallest<T>(items: readonly T[], k: number, cmp: (a: T, b: T) => number): T[] {
  const best: T[] = [];
  for (const item of items) {
    if (best.length === k && cmp(item, best[k - 1]) >= 0) continue;
    let i = best.length < k ? best.length : k - 1;
    while (i > 0 && cmp(item, best[i - 1]) < 0) i -= 1;
    best.splice(i, 0, item);
    if (best.length > k) best.pop();
  }
  return best;
}

/**
 * Choose machines for every spec of one request, or say why not.
 * Platform affinity (invariant 7): a tenant with an established platform family gets it whenever it can be served;
 * another family when the spec names a pool or a platform itself (an explicit choice), or when its own family
 * has too few free machines of the kind asked for and another family has enough (overflow, soft affinity).
 */
export function planAllocation(args: {
  specs: readonly NodeSpec[];
  pools: readonly PoolProfile[];
  free: (pool: string) => Iterable<Machine>;
  tenantPlatform: string | null;
  /** Soft affinity may serve from another family (default: yes); a request that waits first gives its family time. */
  overflow?: boolean;
}): PlanResult {
  const taken = new Set<number>();
  const picks: Pick[] = [];
  // Within one request, the first pick establishes the family for the rest.
  let platform = args.tenantPlatform;
  for (const spec of args.specs) {
    const pools = eligiblePools(args.pools, spec);
    if (pools.length === 0) return { ok: false, reason: `no pool matches ${describeSpec(spec)}` };
    const candidates: Array<{ machine: Machine; platform: string }> = [];
    // Hardware requirements: only machines that meet them all are candidates; count what each one rules out.
    const ruledOut = new Map<string, number>();
    for (const pool of pools) {
      for (const machine of args.free(pool.name)) {
        if (taken.has(machine.id)) continue;
        const misses = unmet(machine.hardware ?? {}, spec.hardware);
        for (const r of misses) ruledOut.set(r, (ruledOut.get(r) ?? 0) + 1);
        if (misses.length === 0) candidates.push({ machine, platform: pool.platform });
      }
    }
    const hw = ruledOut.size ? `; hardware ${[...ruledOut].map(([r, n]) => `${r} rules out ${n} free machine${n === 1 ? '' : 's'}`).join(', ')}` : '';
    const explicit = spec.pool !== undefined || spec.platform !== undefined;
    // The family this spec must come from (null: any). A spec naming a pool or platform is the tenant's own choice;
    // affinity binds only where the tenant's family is offered for this kind of machine at all.
    const offered = platform !== null && pools.some((p) => p.platform === platform);
    let family = explicit ? null : platform === null ? roomiestFamily(candidates, spec.quantity) : offered ? platform : null;
    // Soft affinity: when the tenant's family has too few free machines of this type and arch, another family
    // that has enough serves rather than nobody (the pick says `overflow`). A spec naming a pool or platform stays strict.
    let overflow = false;
    if (args.overflow !== false && !explicit && family !== null && family === platform && candidates.filter((c) => c.platform === family).length < spec.quantity) {
      const other = roomiestFamily(candidates.filter((c) => c.platform !== family), spec.quantity);
      if (other !== null) [family, overflow] = [other, true];
    }
    if (!explicit && platform === null && family === null) {
      const perFamily = countBy(candidates.map((c) => c.platform));
      const most = Math.max(0, ...perFamily.values());
      const detail = perFamily.size > 1 ? `at most ${most} available on one platform family (${candidates.length} in all)` : `${most} available`;
      return { ok: false, reason: `${describeSpec(spec)}: ${spec.quantity} requested, ${detail}${hw}` };
    }
    const chosen = smallest(family === null ? candidates : candidates.filter((c) => c.platform === family), spec.quantity, byPreference);
    if (chosen.length < spec.quantity) {
      const where = family !== null && !explicit ? ` on platform ${family}` : '';
      return { ok: false, reason: `${describeSpec(spec)}: ${spec.quantity} requested, ${chosen.length} available${where}${hw}` };
    }
    for (const c of chosen) {
      const affinity: Affinity =
        platform === null ? 'established' : !explicit && !offered ? 'not-offered' : c.platform === platform ? 'kept' : overflow ? 'overflow' : 'fallback';
      if (platform === null) platform = c.platform;
      taken.add(c.machine.id);
      picks.push({ machine: c.machine, platform: c.platform, affinity });
    }
  }
  return { ok: true, picks };
}

/**
 * A tenant's first family: the one with the most free machines of the kind it asked for, so that tenants
 * spread over families instead of all landing on the first one; ties go to the least worn machine's family.
 */
function roomiestFamily(candidates: ReadonlyArray<{ machine: Machine; platform: string }>, quantity: number): string | null {
  const free = countBy(candidates.map((c) => c.platform));
  const leastWorn = smallest(candidates, 1, byPreference)[0]?.platform ?? null;
  let best = leastWorn;
  for (const [platform, n] of free) if (best === null || n > free.get(best)! || (n === free.get(best)! && platform === leastWorn)) best = platform;
  // A family that cannot serve the whole request is no better than none.
  return best !== null && free.get(best)! >= quantity ? best : null;
}

function countBy(values: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return counts;
}
