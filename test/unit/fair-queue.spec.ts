import { describe, expect, it } from '@jest/globals';
import { HeldMachines, type WaitingRequest, fairOrder, holdsMachines, recentUsageMs } from '../../src/domain/fair-queue.js';

const req = (sessionId: number, tenantId: number, enqueuedAt: number, quantity = 1): WaitingRequest => ({ sessionId, tenantId, quantity, enqueuedAt });
const usage = (table: Record<number, number>) => (t: number) => table[t] ?? 0;
const ids = (rs: WaitingRequest[]) => rs.map((r) => r.sessionId);

describe('fairOrder', () => {
  it('serves the tenant with less recent machine time first', () => {
    const waiting = [req(1, 10, 0), req(2, 20, 5), req(3, 30, 9)];
    expect(ids(fairOrder(waiting, usage({ 10: 3_600_000, 20: 60_000, 30: 0 })))).toEqual([3, 2, 1]);
  });

  it('keeps one tenant first-in first-out', () => {
    const waiting = [req(7, 1, 300), req(4, 1, 100), req(9, 2, 50), req(5, 1, 200)];
    expect(ids(fairOrder(waiting, usage({ 1: 0, 2: 1000 })))).toEqual([4, 5, 7, 9]);
  });

  it('breaks ties by enqueue time, then session id', () => {
    const waiting = [req(3, 1, 100), req(2, 2, 100), req(1, 3, 200)];
    expect(ids(fairOrder(waiting, () => 500))).toEqual([2, 3, 1]);
  });

  it('puts a request that has waited half its wait first, the one that gives up soonest first, then fair share', () => {
    // Tenant 1 used much lately; its requests 1 (waited 60 of 100 s) and 2 (waited 50 of 80 s) are urgent at 60 s, 3 is not.
    const s = 1000;
    const waiting = [{ ...req(1, 1, 0), until: 100 * s }, { ...req(2, 1, 10 * s), until: 90 * s }, { ...req(3, 1, 40 * s), until: 140 * s }, { ...req(4, 2, 30 * s), until: 200 * s }, req(5, 2, 0)];
    const heavy = usage({ 1: 3_600_000, 2: 0 });
    expect(ids(fairOrder(waiting, heavy, 60 * s))).toEqual([2, 1, 5, 4, 3]);
    // Before half their wait, and without a clock, fair share alone.
    expect(ids(fairOrder(waiting, heavy, 40 * s))).toEqual([5, 4, 1, 2, 3]);
    expect(ids(fairOrder(waiting, heavy))).toEqual([5, 4, 1, 2, 3]);
  });

  it('makes no request urgent before it has waited 30 s, whatever its wait: a heavy tenant\'s 4 s waits do not go first', () => {
    const heavy = usage({ 1: 3_600_000, 2: 0 });
    // Tenant 2 (light) waits 60 s from 0; tenant 1 sends a request with a 4 s wait every second.
    const light = { ...req(1, 2, 0), until: 60_000 };
    const flood = Array.from({ length: 5 }, (_, i) => ({ ...req(10 + i, 1, 20_000 + i * 1000), until: 24_000 + i * 1000 }));
    expect(ids(fairOrder([light, ...flood], heavy, 24_500))).toEqual([1, 10, 11, 12, 13, 14]);
    // Past 30 s and half its wait, the light one is urgent too: still first.
    expect(ids(fairOrder([light, ...flood], heavy, 31_000))[0]).toBe(1);
  });

  it('asks each tenant once, leaves its input alone and refuses a usage that is NaN', () => {
    const asked: number[] = [];
    const waiting = [req(1, 1, 0), req(2, 1, 1), req(3, 2, 2)];
    const before = [...waiting];
    fairOrder(waiting, (t) => (asked.push(t), 0));
    expect(asked.sort()).toEqual([1, 2]);
    expect(waiting).toEqual(before);
    expect(() => fairOrder(waiting, () => NaN)).toThrow(RangeError);
    expect(fairOrder([], () => 0)).toEqual([]);
  });

  it('is the same whatever order the requests come in', () => {
    const waiting = [req(1, 1, 0), req(2, 2, 0), req(3, 3, 50), req(4, 1, 60), req(5, 2, 70)];
    const f = usage({ 1: 10, 2: 10, 3: 5 });
    expect(ids(fairOrder([...waiting].reverse(), f))).toEqual(ids(fairOrder(waiting, f)));
    expect(ids(fairOrder(waiting, f))).toEqual([3, 1, 2, 4, 5]);
  });
});

describe('holding machines for urgent requests', () => {
  it('lets an urgent request for at most 2 machines hold, not one that is not urgent yet or asks for more', () => {
    // Given requests that wait from 0 until 100 s,
    const two = { ...req(1, 1, 0, 2), until: 100_000 };
    // a request for 2 holds once half its wait is gone, not before;
    expect(holdsMachines(two, 50_000)).toBe(true);
    expect(holdsMachines(two, 49_999)).toBe(false);
    // one for 3 never holds, nor one without a deadline.
    expect(holdsMachines({ ...req(2, 1, 0, 3), until: 100_000 }, 90_000)).toBe(false);
    expect(holdsMachines(req(3, 1, 0, 1), 90_000)).toBe(false);
    // Nor one whose wait is short: half of it is gone before 30 s.
    expect(holdsMachines({ ...req(4, 1, 0, 1), until: 40_000 }, 29_000)).toBe(false);
  });

  it('holds machines from tenants that used as much or more lately, not from lighter ones', () => {
    // Given machines 1 and 2 held for a tenant that used 1000 ms lately,
    const held = new HeldMachines();
    held.hold([1, 2], 1000);
    // then a tenant that used 1000 or more may not take them, one that used less may, and other machines are free;
    expect([1, 2, 3].map(held.heldFrom(1000))).toEqual([true, true, false]);
    expect([1, 2].map(held.heldFrom(5000))).toEqual([true, true]);
    expect([1, 2].map(held.heldFrom(999))).toEqual([false, false]);
    // when a lighter tenant's request holds machine 2 too, the lighter holder counts for it.
    held.hold([2], 10);
    expect([1, 2].map(held.heldFrom(500))).toEqual([false, true]);
    expect(held.size).toBe(2);
  });
});

describe('recentUsageMs', () => {
  it('counts the overlap of each interval with the window, open ones up to now', () => {
    const now = 10_000;
    const intervals = [
      { start: 0, end: 2_000 }, // wholly before the window (4000, 10000]
      { start: 3_000, end: 5_000 }, // 1000 inside
      { start: 6_000, end: 7_000 }, // 1000 inside
      { start: 9_500, end: null }, // still held: 500
    ];
    expect(recentUsageMs(intervals, now, 6_000)).toBe(2_500);
  });

  it('counts machines separately and ignores intervals that start after now', () => {
    expect(recentUsageMs([{ start: 0, end: null }, { start: 0, end: null }, { start: 20, end: 30 }], 10, 100)).toBe(20);
  });
});
