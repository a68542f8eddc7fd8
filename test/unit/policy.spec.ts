import { describe, expect, it } from '@jest/globals';
import { planAllocation } from '../../src/domain/policy.js';
import type { Machine } from '../../src/domain/world.js';
import { POOLS } from '../support/given.js';

const m = (id: number, pool: string, busyMs = 0, allocations = 0) => ({ id, pool, busyMs, allocations }) as Machine;
const inventory = [m(1, 'metal-intel', 500, 3), m(2, 'metal-intel', 100, 9), m(3, 'metal-intel', 100, 2), m(4, 'metal-amd', 0, 0), m(5, 'vm-intel')];
const free = (pool: string) => inventory.filter((x) => x.pool === pool);

describe('allocation policy', () => {
  it('chooses the least-stressed machine: busy time, then allocations, then id', () => {
    const plan = planAllocation({ specs: [{ pool: 'metal-intel', quantity: 2 }], pools: POOLS, free, tenantPlatform: null });
    expect(plan.ok && plan.picks.map((p) => p.machine.id)).toEqual([3, 2]);
  });

  it('keeps a tenant on its established platform for type-based requests', () => {
    const plan = planAllocation({ specs: [{ type: 'baremetal', quantity: 1 }], pools: POOLS, free, tenantPlatform: 'intel' });
    expect(plan.ok && plan.picks.map((p) => [p.machine.id, p.affinity])).toEqual([[3, 'kept']]);
  });

  it('refuses another family unless the request names it, and says why', () => {
    const plan = planAllocation({ specs: [{ type: 'baremetal', quantity: 4 }], pools: POOLS, free, tenantPlatform: 'intel', overflow: false });
    expect(plan).toEqual({ ok: false, reason: 'baremetal: 4 requested, 3 available on platform intel' });
    const explicit = planAllocation({ specs: [{ type: 'baremetal', platform: 'amd', quantity: 1 }], pools: POOLS, free, tenantPlatform: 'intel' });
    expect(explicit.ok && explicit.picks.map((p) => [p.machine.id, p.affinity])).toEqual([[4, 'fallback']]);
  });

  it("establishes a new tenant on the family with the most free machines, so tenants spread out", () => {
    const plan = planAllocation({ specs: [{ type: 'baremetal', quantity: 1 }], pools: POOLS, free, tenantPlatform: null });
    expect(plan.ok && plan.picks.map((p) => [p.machine.id, p.platform, p.affinity])).toEqual([[3, 'intel', 'established']]);
    const amdHeavy = [m(4, 'metal-amd'), m(6, 'metal-amd'), m(7, 'metal-amd', 1), m(8, 'metal-amd', 2), m(1, 'metal-intel')];
    const spread = planAllocation({ specs: [{ type: 'baremetal', quantity: 1 }], pools: POOLS, free: (p) => amdHeavy.filter((x) => x.pool === p), tenantPlatform: null });
    expect(spread.ok && spread.picks.map((p) => [p.machine.id, p.platform])).toEqual([[4, 'amd']]);
  });

  it('serves a request that no one family can serve whole from several, its own family first, when it may overflow', () => {
    // intel has 3 free, amd 1: four machines only exist across both.
    const plan = planAllocation({ specs: [{ type: 'baremetal', quantity: 4 }], pools: POOLS, free, tenantPlatform: 'intel' });
    expect(plan.ok && plan.picks.map((p) => [p.machine.id, p.platform, p.affinity])).toEqual([
      [3, 'intel', 'kept'],
      [2, 'intel', 'kept'],
      [1, 'intel', 'kept'],
      [4, 'amd', 'overflow'],
    ]);
    // A new tenant: the least worn machine establishes its family, the others are kept or overflow.
    const fresh = planAllocation({ specs: [{ type: 'baremetal', quantity: 4 }], pools: POOLS, free, tenantPlatform: null });
    expect(fresh.ok && fresh.picks.map((p) => [p.machine.id, p.affinity])).toEqual([
      [4, 'established'],
      [3, 'overflow'],
      [2, 'overflow'],
      [1, 'overflow'],
    ]);
    expect(planAllocation({ specs: [{ type: 'baremetal', quantity: 4 }], pools: POOLS, free, tenantPlatform: null, overflow: false })).toEqual({
      ok: false,
      reason: 'baremetal: 4 requested, at most 3 available on one platform family (4 in all)',
    });
    // Not when there are too few in all, nor for a spec that names a platform.
    expect(planAllocation({ specs: [{ type: 'baremetal', quantity: 5 }], pools: POOLS, free, tenantPlatform: 'intel' })).toEqual({ ok: false, reason: 'baremetal: 5 requested, 3 available on platform intel' });
    expect(planAllocation({ specs: [{ type: 'baremetal', platform: 'intel', quantity: 4 }], pools: POOLS, free, tenantPlatform: 'intel' }).ok).toBe(false);
  });

  it('lets a tenant out of its family where its family offers no such machine', () => {
    const plan = planAllocation({ specs: [{ type: 'vm', quantity: 1 }], pools: POOLS, free, tenantPlatform: 'amd' });
    expect(plan.ok && plan.picks.map((p) => [p.machine.id, p.affinity])).toEqual([[5, 'not-offered']]);
  });

  it('treats baremetal and vm as separate capacity', () => {
    const plan = planAllocation({ specs: [{ type: 'vm', quantity: 2 }], pools: POOLS, free, tenantPlatform: null });
    expect(plan).toEqual({ ok: false, reason: 'vm: 2 requested, 1 available' });
  });

  it('never picks one machine twice inside a request', () => {
    const plan = planAllocation({ specs: [{ pool: 'metal-intel', quantity: 2 }, { type: 'baremetal', arch: 'x86_64', quantity: 1 }], pools: POOLS, free, tenantPlatform: null });
    expect(plan.ok && plan.picks.map((p) => p.machine.id)).toEqual([3, 2, 1]);
  });
});
