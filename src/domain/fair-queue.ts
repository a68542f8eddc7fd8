/**
 * Weighted fair share for requests that could not be served at once (pure: no I/O, no clock).
 *
 * The tenant that has had the least machine time lately, relative to its weight, is served first; one tenant's
 * own requests stay first-in first-out; ties fall to the earlier request, then the lower session id, so an
 * order is the same on every replay. A request that has waited `URGENT_AFTER_SHARE_OF_WAIT` of its wait goes
 * before all that have not, the one that gives up first first: fair share alone passes a heavy tenant's request
 * over until it is abandoned (in the simulator, about 100 more abandoned requests over 10 seeds; README, scheduling).
 */

/** Share of its wait after which a waiting request is urgent. Chosen with the simulator. */
export const URGENT_AFTER_SHARE_OF_WAIT = 0.5;

export interface WaitingRequest {
  sessionId: number;
  tenantId: number;
  /** Machines the request asks for, over all its specs. */
  quantity: number;
  /** When it started waiting, in ms. */
  enqueuedAt: number;
  /** When it gives up, in ms (none: it is never urgent). */
  until?: number;
}

/** A stretch of time one machine was held by a tenant; `end` null while it is still held. Times in ms. */
export interface BusyInterval {
  start: number;
  end: number | null;
}

/**
 * The order in which to try waiting requests.
 * `recentMachineMs(t)`: machine time tenant t used lately (see `recentUsageMs`); `weight(t)`: its share, default 1
 * (a tenant of weight 2 may use twice as much as a tenant of weight 1 before it yields). Each function is called
 * once per tenant. `now` (ms) decides which requests are urgent; without it none is.
 */
export function fairOrder(
  waiting: readonly WaitingRequest[],
  recentMachineMs: (tenantId: number) => number,
  weight: (tenantId: number) => number = () => 1,
  now?: number,
): WaitingRequest[] {
  const urgent = (r: WaitingRequest) =>
    now !== undefined && r.until !== undefined && now >= r.enqueuedAt + URGENT_AFTER_SHARE_OF_WAIT * (r.until - r.enqueuedAt);
  const usage = new Map<number, number>();
  for (const r of waiting) {
    if (usage.has(r.tenantId)) continue;
    const w = weight(r.tenantId);
    if (!(w > 0) || !Number.isFinite(w)) throw new RangeError(`weight of tenant ${r.tenantId} must be a positive number, got ${w}`);
    const used = recentMachineMs(r.tenantId);
    if (Number.isNaN(used)) throw new RangeError(`recent machine time of tenant ${r.tenantId} is NaN`);
    usage.set(r.tenantId, used / w);
  }
  // Compare rather than subtract: usages may be Infinity.
  const cmp = (x: number, y: number) => (x < y ? -1 : x > y ? 1 : 0);
  const keyed = waiting.map((r) => ({ r, urgent: urgent(r) }));
  keyed.sort(
    (a, b) =>
      Number(b.urgent) - Number(a.urgent) ||
      (a.urgent ? a.r.until! - b.r.until! : cmp(usage.get(a.r.tenantId)!, usage.get(b.r.tenantId)!)) ||
      a.r.enqueuedAt - b.r.enqueuedAt ||
      a.r.sessionId - b.r.sessionId,
  );
  return keyed.map((k) => k.r);
}

/**
 * Machine time (ms) inside the sliding window (now - windowMs, now]: each interval counts for its overlap with the
 * window; an interval still open counts up to `now`. One interval per machine, so two machines count twice.
 */
export function recentUsageMs(intervals: Iterable<BusyInterval>, now: number, windowMs: number): number {
  const from = now - windowMs;
  let total = 0;
  for (const i of intervals) {
    const end = Math.min(i.end ?? now, now);
    const start = Math.max(i.start, from);
    if (end > start) total += end - start;
  }
  return total;
}
