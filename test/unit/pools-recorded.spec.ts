import { describe, expect, it } from '@jest/globals';
import { NOTHING_IN_FLIGHT, decideRecordPools, poolProfileChanges } from '../../src/domain/decide.js';
import type { DuffyEvent, PoolProfile } from '../../src/domain/events.js';
import { AT, given, machine } from '../support/given.js';

const pa: PoolProfile = { name: 'pa', type: 'baremetal', arch: 'x86_64', platform: 'intel' };
const pb: PoolProfile = { name: 'pb', type: 'vm', arch: 'x86_64', platform: 'intel' };
const recorded = (...pools: PoolProfile[]): [string, DuffyEvent] => ['pools', { type: 'PoolsConfigured', data: { pools, at: AT } }];

describe("the configuration's pools in the ledger (PoolsConfigured)", () => {
  it('given none recorded, when Duffy starts, then its pools are recorded; given the same, nothing is', () => {
    const first = decideRecordPools(given(), [pa, pb], AT, NOTHING_IN_FLIGHT);
    expect(first).toEqual([{ stream: 'pools', expected: 'no_stream', events: [{ type: 'PoolsConfigured', data: { pools: [pa, pb], at: AT } }] }]);
    expect(decideRecordPools(given(recorded(pa, pb)), [pb, pa], AT, NOTHING_IN_FLIGHT)).toEqual([]);
  });

  it('given a pool whose platform and arch changed in the file, then that is recorded, and said for a pool that has machines', () => {
    const changed = { ...pa, arch: 'aarch64', platform: 'arm' };
    const w = given(recorded(pa, pb), machine(1, 'a1', 'pa'), machine(2, 'a2', 'pa'));
    expect(decideRecordPools(w, [changed, pb], AT, NOTHING_IN_FLIGHT)).toEqual([{ stream: 'pools', expected: 0, events: [{ type: 'PoolsConfigured', data: { pools: [changed, pb], at: AT } }] }]);
    expect(poolProfileChanges(w, [changed, pb])).toEqual(['pool pa: arch x86_64 -> aarch64, platform intel -> arm (its 2 machine(s) now serve as such)']);
    // A pool added or removed, or one without machines, moves no machine.
    expect(poolProfileChanges(w, [pa, { ...pb, type: 'baremetal' }, { ...pb, name: 'pc' }])).toEqual([]);
    // Nothing recorded yet (a ledger from before Duffy recorded pools): nothing to compare with.
    expect(poolProfileChanges(given(machine(1, 'a1', 'pa')), [changed])).toEqual([]);
  });
});
