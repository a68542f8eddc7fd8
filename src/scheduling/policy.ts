import { type MachineType, type NodeSpec } from '../ledger/events.js';
import { type Machine } from '../ledger/world.js';

/** What the scheduler knows of a pool (from configuration). */
export interface PoolProfile {
  name: string;
  type: MachineType;
  arch: string;
  platform: string;
}

export type Affinity = 'kept' | 'established' | 'fallback';

export interface Pick {
  machine: Machine;
  platform: string;
  affinity: Affinity;
}

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
  if (spec.pool !== undefined) return `pool ${spec.pool}`;
  const parts = [spec.type ?? 'any type', spec.arch, spec.platform].filter(Boolean);
  return parts.join(' ');
}

/** Wear levelling (invariant 8): least busy time, then fewest allocations, then lowest id, so ties are deterministic. */
export function lessStressed(a: Machine, b: Machine): number {
  return a.busyMs - b.busyMs || a.allocations - b.allocations || a.id - b.id;
}

/** A ready machine serves at once; an unused one needs provisioning first. */
const readiness = (m: Machine) => (m.state === 'ready' ? 0 : 1);

/**
 * Choose machines for every spec of one request, or say why not.
 * Platform affinity (invariant 7): a tenant with an established platform family gets it whenever it can be served;
 * another family only when the spec names a pool or a platform itself (an explicit choice).
 */
export function planAllocation(args: {
  specs: readonly NodeSpec[];
  pools: readonly PoolProfile[];
  free: (pool: string) => Iterable<Machine>;
  tenantPlatform: string | null;
}): PlanResult {
  const taken = new Set<number>();
  const picks: Pick[] = [];
  // Within one request, the first pick establishes the family for the rest.
  let platform = args.tenantPlatform;
  for (const spec of args.specs) {
    const pools = eligiblePools(args.pools, spec);
    if (pools.length === 0) return { ok: false, reason: `no pool matches ${describeSpec(spec)}` };
    const candidates: Array<{ machine: Machine; platform: string }> = [];
    for (const pool of pools) {
      for (const machine of args.free(pool.name)) {
        if (!taken.has(machine.id)) candidates.push({ machine, platform: pool.platform });
      }
    }
    candidates.sort((a, b) => readiness(a.machine) - readiness(b.machine) || lessStressed(a.machine, b.machine));
    const explicit = spec.pool !== undefined || spec.platform !== undefined;
    const preferred = platform === null ? candidates : candidates.filter((c) => c.platform === platform);
    let chosen = preferred.slice(0, spec.quantity);
    if (chosen.length < spec.quantity && explicit) chosen = candidates.slice(0, spec.quantity);
    if (chosen.length < spec.quantity) {
      const where = platform !== null && !explicit ? ` on platform ${platform}` : '';
      return {
        ok: false,
        reason: `${describeSpec(spec)}: ${spec.quantity} requested, ${chosen.length} available${where}`,
      };
    }
    for (const c of chosen) {
      const affinity: Affinity = platform === null ? 'established' : c.platform === platform ? 'kept' : 'fallback';
      if (platform === null) platform = c.platform;
      taken.add(c.machine.id);
      picks.push({ machine: c.machine, platform: c.platform, affinity });
    }
  }
  return { ok: true, picks };
}
