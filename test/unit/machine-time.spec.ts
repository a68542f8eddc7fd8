import { describe, expect, it } from '@jest/globals';
import { HOUR_MS, MINUTE_MS, addHold, machineTimeMs } from '../../src/domain/machine-time.js';
import { recentMachineTimeMs } from '../../src/domain/world.js';
import type { DuffyEvent } from '../../src/domain/events.js';
import { given, machine, tenant } from '../support/given.js';

const T0 = Date.parse('2026-12-01T10:00:00.000Z');

describe('machine time per bucket', () => {
  it('splits a hold at bucket bounds and counts a window in whole buckets, open holds up to now', () => {
    const b = {};
    // 10:00:30 -> 10:02:15 spans three minutes.
    addHold(b, T0 + 30_000, T0 + 135_000, MINUTE_MS, 61);
    expect(Object.values(b)).toEqual([30_000, 60_000, 15_000]);
    const now = T0 + 61 * MINUTE_MS;
    // The hour up to 11:01 begins at 10:01, in whole minutes: 10:00's 30 s are out.
    expect(machineTimeMs(b, [], now, HOUR_MS, MINUTE_MS)).toBe(75_000);
    expect(machineTimeMs(b, [now - 10_000], now, HOUR_MS, MINUTE_MS)).toBe(85_000);
    // A hold open since before the window counts from the window's start.
    expect(machineTimeMs({}, [T0], now, HOUR_MS, MINUTE_MS)).toBe(HOUR_MS);
  });

  it('keeps only the last buckets, however many holds', () => {
    const b: Record<string, number> = {};
    for (let i = 0; i < 10_000; i++) addHold(b, T0 + i * 1_000, T0 + i * 1_000 + 500, MINUTE_MS, 61);
    expect(Object.keys(b).length).toBeLessThanOrEqual(61);
    // 10,000 holds of 0.5 s over 166 minutes: the last hour's, in whole minutes, are 60 (+ the current) minutes of 30 s.
    const now = T0 + 10_000 * 1_000;
    expect(machineTimeMs(b, [], now, HOUR_MS, MINUTE_MS)).toBe(Object.values(b).reduce((x, y) => x + y, 0));
    expect(machineTimeMs(b, [], now, HOUR_MS, MINUTE_MS)).toBeGreaterThanOrEqual(60 * 30_000);
  });

  it('keeps exactly the buckets a scan of every bucket keeps, for holds of any length and gap added as they end', () => {
    // The plain rule: add the hold's buckets, then drop every bucket more than `keep` before the newest.
    const scan = (b: Record<string, number>, start: number, end: number, bucketMs: number, keep: number) => {
      if (end <= start) return;
      const last = Math.floor(end / bucketMs);
      for (let k = Math.max(Math.floor(start / bucketMs), last - keep + 1); k <= last; k++) {
        const ms = Math.min(end, (k + 1) * bucketMs) - Math.max(start, k * bucketMs);
        if (ms > 0) b[k] = (b[k] ?? 0) + ms;
      }
      for (const k of Object.keys(b)) if (Number(k) <= last - keep) delete b[k];
    };
    let seed = 7;
    const random = (n: number) => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31), seed % n);
    for (const [bucketMs, keep] of [[MINUTE_MS, 61], [HOUR_MS, 169], [MINUTE_MS, 3]]) {
      const fast: Record<string, number> = {};
      const plain: Record<string, number> = {};
      let clock = T0;
      for (let i = 0; i < 1_000; i++) {
        // Mostly short gaps, sometimes idle for longer than the kept range; holds from a second to days.
        clock += random(10) === 0 ? random(keep * 3) * bucketMs : random(bucketMs);
        const start = clock - random(10) * random(keep + 5) * bucketMs - random(bucketMs);
        addHold(fast, start, clock, bucketMs, keep);
        scan(plain, start, clock, bucketMs, keep);
        expect(fast).toEqual(plain);
      }
    }
  });

  it("given a tenant's long hold, then 500 short ones, its last hour still counts the long one (a capped list of holds lost it)", () => {
    const at = (ms: number) => new Date(T0 + ms).toISOString();
    const events: Array<[string, DuffyEvent]> = [tenant(1, 'heavy'), machine(1, 'a.test', 'p'), machine(2, 'b.test', 'p')];
    const hold = (machineId: number, session: number, from: number, to: number) => {
      const host = machineId === 1 ? 'a.test' : 'b.test';
      events.push(
        [`machine-${host}`, { type: 'MachineReserved', data: { machineId, hostname: host, sessionId: session, tenantId: 1, pool: 'p', platform: 'intel', affinity: 'established', contextualize: false, at: at(from) } }],
        [`machine-${host}`, { type: 'MachineReleased', data: { machineId, sessionId: session, reason: 'done', at: at(to) } }],
      );
    };
    hold(1, 1, 0, 600_000);
    for (let i = 0; i < 500; i++) hold(2, 2 + i, 600_000 + i * 20, 600_000 + i * 20 + 10);
    const t = given(...events).tenants.get(1)!;
    expect(recentMachineTimeMs(t, T0 + 30 * MINUTE_MS)).toBe(600_000 + 500 * 10);
  });
});
