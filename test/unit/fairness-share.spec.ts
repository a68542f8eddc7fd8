import { describe, expect, it } from '@jest/globals';
import { type Demand, fairShareJain, fairness } from '../../projections/fairness.projection.js';
import { foldAll } from '../../projections/projection.js';

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

describe('fairness projection: busy intervals in chunks', () => {
  const HOUR = 3600_000;
  const t0 = Date.parse('2026-11-01T00:00:00.000Z');
  const iso = (ms: number) => new Date(ms).toISOString();
  /** One tenant holding machine 1 for an hour, `n` times in a row, every `everyMs`. */
  function history(n: number, everyMs: number) {
    const events: Array<Record<string, unknown>> = [{ type: 'TenantRegistered', data: { tenantId: 7, name: 'seven', at: iso(t0) } }];
    for (let i = 0; i < n; i++) {
      const start = t0 + i * everyMs;
      events.push({ type: 'MachineReserved', data: { machineId: 1, sessionId: i + 1, tenantId: 7, pool: 'p', at: iso(start) } });
      events.push({ type: 'MachineReleased', data: { machineId: 1, sessionId: i + 1, reason: 'done', at: iso(start + HOUR) } });
    }
    return events.map((e, i) => ({ ...e, stream: 's', revision: i, position: BigInt(i + 1), metadata: {} }));
  }
  const intervalsOf = (events: ReturnType<typeof history>) => {
    const { state } = foldAll(fairness, events as never[]);
    const tenant = fairness.doc(state, 'tenant_usage', '7')!;
    const chunks: Array<Array<[number, number, string]>> = [];
    for (let n = Number(tenant.first_chunk); n <= Number(tenant.last_chunk); n++) chunks.push(fairness.doc(state, 'usage_intervals', `7/${n}`)!.intervals as never);
    return { tenant, chunks };
  };

  it('keeps the newest intervals, at most 500, in chunks of at most 50, oldest first; the tenant document holds none', () => {
    const { tenant, chunks } = intervalsOf(history(1234, 5 * 60_000));
    const all = chunks.flat();
    expect(tenant.intervals).toBeUndefined();
    expect(chunks.every((c) => c.length <= 50)).toBe(true);
    expect(all.length).toBeLessThanOrEqual(500);
    expect(all.length).toBeGreaterThan(450);
    expect(all.at(-1)).toEqual([t0 + 1233 * 5 * 60_000, t0 + 1233 * 5 * 60_000 + HOUR, 'p']);
    expect(all.map(([start]) => start)).toEqual([...all.map(([start]) => start)].sort((a, b) => a - b));
  });

  it('lets whole chunks older than 7 days go', () => {
    const { chunks } = intervalsOf(history(400, 12 * HOUR));
    const all = chunks.flat();
    const newest = all.at(-1)![1];
    // Every chunk but the one holding the 7-day edge is inside the window.
    expect(chunks.slice(1).flat().every(([, end]) => end >= newest - 7 * 24 * HOUR)).toBe(true);
    expect(all.length).toBeLessThan(400);
  });

  it("counts every hold's machine time per minute and per hour, beyond the intervals' 500 (a heavy tenant's long holds were lost)", () => {
    // 1234 holds of an hour every 5 minutes (machine 1 held 12 times over, as far as the figures go).
    const events = history(1234, 5 * 60_000);
    const { state } = foldAll(fairness, events as never[]);
    const time = fairness.doc(state, 'machine_time', '7')!;
    const end = t0 + 1233 * 5 * 60_000 + HOUR;
    const now = end;
    const sum = (buckets: unknown, from: number, bucketMs: number) => Object.entries(buckets as Record<string, number>).filter(([b]) => Number(b) * bucketMs >= from).reduce((n, [, ms]) => n + ms, 0);
    // The last 24 whole hours and the current one: 12 machines at once for all of it, but the tail's ramp-down.
    const inDay = sum(time.hours, Math.floor((now - 24 * HOUR) / HOUR) * HOUR, HOUR);
    const releases = (events as Array<{ type?: unknown; data?: unknown }>).filter((e) => e.type === 'MachineReleased');
    expect(inDay).toBe(releases.reduce((n, e) => {
      const stop = Date.parse(String((e.data as { at: string }).at));
      const from = Math.max(stop - HOUR, Math.floor((now - 24 * HOUR) / HOUR) * HOUR);
      return n + Math.max(0, stop - from);
    }, 0));
    expect(inDay).toBeGreaterThan(23 * 12 * HOUR);
    expect(Object.keys(time.minutes as object).length).toBeLessThanOrEqual(61);
    expect(Object.keys(time.hours as object).length).toBeLessThanOrEqual(169);
  });
});
