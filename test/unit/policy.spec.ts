import { describe, expect, it } from '@jest/globals';
import { familyCrowding, machinesToHold, planAllocation } from '../../src/domain/policy.js';
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

  it('establishes a new tenant on the least crowded family, even when another has more free machines', () => {
    // Given intel with 3 free machines and amd with 1, and intel more crowded (tenants per machine) than amd,
    const crowding = (platform: string) => (platform === 'intel' ? 0.5 : 0.25);
    // when a new tenant asks for one baremetal machine by type, it lands on amd;
    const plan = planAllocation({ specs: [{ type: 'baremetal', quantity: 1 }], pools: POOLS, free, tenantPlatform: null, crowding });
    expect(plan.ok && plan.picks.map((p) => [p.machine.id, p.platform, p.affinity])).toEqual([[4, 'amd', 'established']]);
    // but not when amd cannot serve the request whole: then the less crowded family is no better than none.
    const two = planAllocation({ specs: [{ type: 'baremetal', quantity: 2 }], pools: POOLS, free, tenantPlatform: null, crowding });
    expect(two.ok && two.picks.map((p) => p.platform)).toEqual(['intel', 'intel']);
    // Equally crowded families: the one with more free machines, as without crowding.
    const even = planAllocation({ specs: [{ type: 'baremetal', quantity: 1 }], pools: POOLS, free, tenantPlatform: null, crowding: () => 0.1 });
    expect(even.ok && even.picks.map((p) => p.platform)).toEqual(['intel']);
  });

  it('counts crowding as established tenants per machine of the family and arch, every machine type included', () => {
    // Given intel with 20 baremetal and 8 vm x86_64 machines, amd with 14 baremetal, and tenants on intel, intel, amd,
    const pools = POOLS.map((p) => ({ ...p, machines: p.name === 'metal-intel' ? 20 : p.name === 'vm-intel' ? 8 : 14 }));
    const crowding = familyCrowding(pools, ['intel', 'intel', 'amd', null]);
    // then intel has 2 / 28 tenants per machine, amd 1 / 14, and a family with no machine of the arch no division by 0.
    expect(crowding('intel', 'x86_64')).toBeCloseTo(2 / 28);
    expect(crowding('amd', 'x86_64')).toBeCloseTo(1 / 14);
    expect(crowding('arm', 'aarch64')).toBe(0);
  });

  it('holds, for an urgent request that does not fit, the free machines its own family could serve it from', () => {
    // Given a tenant on amd asking for 2 baremetal machines where amd has 1 free and intel 3,
    const spec = [{ type: 'baremetal' as const, quantity: 2 }];
    // when it may not overflow yet, it holds amd's one free machine only;
    expect(machinesToHold({ specs: spec, pools: POOLS, free, tenantPlatform: 'amd', overflow: false }).map((x) => x.id)).toEqual([4]);
    // once it may overflow, the most preferred of any family, up to what it asks for;
    expect(machinesToHold({ specs: spec, pools: POOLS, free, tenantPlatform: 'amd', overflow: true }).map((x) => x.id)).toEqual([4, 3]);
    // a spec naming a pool holds in that pool only, and a machine is held once across specs;
    expect(machinesToHold({ specs: [{ pool: 'metal-intel', quantity: 2 }, { pool: 'metal-intel', quantity: 5 }], pools: POOLS, free, tenantPlatform: 'amd', overflow: false }).map((x) => x.id)).toEqual([3, 2, 1]);
    // hardware requirements leave out machines that miss them.
    const withRam = [{ ...m(6, 'metal-amd'), hardware: { ram_gb: 64 } }, { ...m(7, 'metal-amd'), hardware: { ram_gb: 8 } }] as Machine[];
    const held = machinesToHold({ specs: [{ type: 'baremetal', quantity: 2, hardware: { min_ram_gb: 32 } }], pools: POOLS, free: (p) => withRam.filter((x) => x.pool === p), tenantPlatform: 'amd', overflow: false });
    expect(held.map((x) => x.id)).toEqual([6]);
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
