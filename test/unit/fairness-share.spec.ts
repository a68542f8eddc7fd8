import { describe, expect, it } from '@jest/globals';
import { type Demand, fairShareJain } from '../../projections/fairness.projection.js';

const H = 3600_000;
const hold = (tenant: string, n: number, start = 0, end = H, resource = 'baremetal/x86_64'): Demand => ({ tenant, resource, start, end, held: n, waiting: 0 });
const wait = (tenant: string, n: number, start = 0, end = H, resource = 'baremetal/x86_64'): Demand => ({ tenant, resource, start, end, held: 0, waiting: n });

describe("Jain's index of machine time over the max-min fair share (the simulator's definition)", () => {
  it('is 1 without contention, however unequal the machine time (raw machine-hours would give 0.67)', () => {
    const r = fairShareJain([hold('a', 4), hold('b', 1), hold('c', 2, 0, H / 2)], 0, H);
    expect(r.index).toBe(1);
    expect([...r.shares.values()]).toEqual([1, 1, 1]);
  });

  it('falls when one tenant holds everything while another waits', () => {
    // 4 machines, a holds all 4, b wants 2: fair split 2 / 2, so x = 2 and 0, Jain = 4 / (2 * 4).
    const r = fairShareJain([hold('a', 4), wait('b', 2)], 0, H);
    expect(r.shares.get('a')).toBe(2);
    expect(r.shares.get('b')).toBe(0);
    expect(r.index).toBe(0.5);
  });

  it('judges each resource class apart, and only inside the window', () => {
    const r = fairShareJain([hold('a', 2, 0, H, 'vm/x86_64'), wait('b', 2, 0, H, 'baremetal/x86_64'), hold('c', 1, -10 * H, -H), wait('c', 5, -10 * H, -H)], 0, H);
    expect(r.index).toBe(1);
    expect(r.shares.has('b')).toBe(false);
  });

  it('is null when nobody held anything', () => {
    expect(fairShareJain([wait('a', 1)], 0, H).index).toBeNull();
  });
});
