/**
 * Fair share for requests that could not be served at once (pure: no I/O, no clock).
 *
 * The tenant that has had the least machine time lately is served first; one tenant's
 * own requests stay first-in first-out; ties fall to the earlier request, then the lower session id, so an
 * order is the same on every replay. A request that has waited `URGENT_AFTER_SHARE_OF_WAIT` of its wait, and at
 * least `URGENT_AFTER_AT_LEAST_MS`, goes before all that have not, the one that gives up first first: fair share alone passes a heavy tenant's request
 * over until it is abandoned (in the simulator, about 100 more abandoned requests over 10 seeds; README, scheduling).
 */

/** Share of its wait after which a waiting request is urgent. Chosen with the simulator. */
export const URGENT_AFTER_SHARE_OF_WAIT = 0.5;
/**
 * And it must have waited this long too: a heavy tenant's stream of requests with a 4 s wait, each urgent after 2 s
 * and first to give up, went before every lighter tenant's longer wait, for ever.
 */
export const URGENT_AFTER_AT_LEAST_MS = 30_000;

/**
 * An urgent request for at most this many machines that does not fit holds its family's free machines back from
 * the requests after it (`HeldMachines`). Chosen with the simulator (README, scheduling): holding for requests of
 * 1 machine changes nothing (none is free in the family when one does not fit), for 2 it cuts the abandoned
 * requests by more than a quarter (they waited for two machines to be free at one instant); for 3-4 affinity falls
 * under 90 % on more seeds (held machines sit idle longer).
 */
export const HOLD_FOR_AT_MOST_MACHINES = 2;

/** Whether `share` of a wait from `since` to `until` (ms) has gone by at `now`. */
export const waitedShare = (since: number, until: number, share: number, now: number): boolean => now >= since + share * (until - since);

/** Whether a request has waited long enough to go before all that have not (`now` in ms). */
function isUrgent(r: WaitingRequest, now: number): boolean {
  return r.until !== undefined && now - r.enqueuedAt >= URGENT_AFTER_AT_LEAST_MS && waitedShare(r.enqueuedAt, r.until, URGENT_AFTER_SHARE_OF_WAIT, now);
}

/** Whether a request that does not fit now holds free machines for itself (see `HeldMachines`). */
export function holdsMachines(r: WaitingRequest, now: number): boolean {
  return isUrgent(r, now) && r.quantity <= HOLD_FOR_AT_MOST_MACHINES;
}

/**
 * Machines held back during one pass over the waiting requests, each by the recent machine time of the tenant of
 * the urgent request that holds it. A request may still take a held machine when its tenant used less lately than
 * the holder's (it comes first in fair share anyway): holding for heavy tenants' requests from everyone starved the
 * light tenants (in the simulator, Jain's index 0.86-0.97).
 */
export class HeldMachines {
  private readonly by = new Map<number, number>();

  /** Hold machines for a request of a tenant with this recent machine time (the lowest holder counts). */
  hold(machineIds: Iterable<number>, holderUsage: number): void {
    for (const id of machineIds) this.by.set(id, Math.min(holderUsage, this.by.get(id) ?? Infinity));
  }

  /** For a request of a tenant with this recent machine time: whether a machine is held from it. */
  heldFrom(usage: number): (machineId: number) => boolean {
    return (id) => this.by.has(id) && this.by.get(id)! <= usage;
  }

  get size(): number {
    return this.by.size;
  }
}

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
 * `recentMachineMs(t)`: machine time tenant t used lately (see `recentUsageMs`), called once per tenant.
 * `now` (ms) decides which requests are urgent; without it none is.
 */
export function fairOrder(waiting: readonly WaitingRequest[], recentMachineMs: (tenantId: number) => number, now?: number): WaitingRequest[] {
  const urgent = (r: WaitingRequest) => now !== undefined && isUrgent(r, now);
  const usage = new Map<number, number>();
  for (const r of waiting) {
    if (usage.has(r.tenantId)) continue;
    const used = recentMachineMs(r.tenantId);
    if (Number.isNaN(used)) throw new RangeError(`recent machine time of tenant ${r.tenantId} is NaN`);
    usage.set(r.tenantId, used);
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
