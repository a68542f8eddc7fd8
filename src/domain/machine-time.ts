/**
 * Machine time of ended holds, summed per time bucket (ms per bucket index, `floor(t / bucketMs)`): bounded by the
 * buckets kept, whatever the number of holds. A plain object, so a read model stores it as it is. (A capped list of
 * holds let a tenant's many short holds push its long ones out, and its machine time read as almost none.)
 */
export type MachineTimeBuckets = Record<string, number>;

export const MINUTE_MS = 60_000;
export const HOUR_MS = 3_600_000;

/**
 * Adds the hold [start, end) to `buckets`, split at bucket bounds; keeps the `keep` buckets up to end's (older ones
 * are dropped when a new bucket begins). Holds are added in the order they end (the ledger's clock never goes back);
 * one that ends a little earlier than the last (another instance's clock) may leave an older bucket behind, which
 * no window counts and the next sweep drops.
 */
export function addHold(buckets: MachineTimeBuckets, start: number, end: number, bucketMs: number, keep: number): void {
  if (!(end > start)) return;
  const last = Math.floor(end / bucketMs);
  const floor = last - keep + 1;
  const newest = newestSince(buckets, last, floor);
  for (let b = Math.max(Math.floor(start / bucketMs), floor); b <= last; b++) {
    const ms = Math.min(end, (b + 1) * bucketMs) - Math.max(start, b * bucketMs);
    if (ms > 0) buckets[b] = (buckets[b] ?? 0) + ms;
  }
  if (newest === undefined) {
    // Nothing kept is that recent (a tenant idle for the whole range): whatever is there is older.
    for (const b in buckets) if (Number(b) < floor) delete buckets[b];
  } else {
    // What was kept lies within `keep` of the newest bucket: only the buckets this one pushed out are probed, one
    // per bucket it moved on (a scan of every key, as strings, made this the largest cost of a projection rebuild).
    for (let b = Math.max(newest - keep + 1, floor - keep); b < floor; b++) delete buckets[b];
  }
}

/** The newest bucket from `last` down to `floor`, or undefined: a hold that ends in order finds it in a probe or two. */
function newestSince(buckets: MachineTimeBuckets, last: number, floor: number): number | undefined {
  for (let b = last; b >= floor; b--) if (buckets[b] !== undefined) return b;
  return undefined;
}

/** Where a window of `windowMs` up to `now` begins: at the start of the bucket it would begin in (whole buckets). */
export const windowStart = (now: number, windowMs: number, bucketMs: number) => Math.floor((now - windowMs) / bucketMs) * bucketMs;

/**
 * Machine time in the window of `windowMs` up to `now`, in whole buckets (see `windowStart`): the ended holds'
 * buckets, and holds still open (their start, ms) up to `now`.
 */
export function machineTimeMs(buckets: MachineTimeBuckets, open: Iterable<number>, now: number, windowMs: number, bucketMs: number): number {
  const from = windowStart(now, windowMs, bucketMs);
  const first = from / bucketMs;
  let total = 0;
  for (const b in buckets) if (Number(b) >= first) total += buckets[b];
  for (const start of open) if (now > Math.max(start, from)) total += now - Math.max(start, from);
  return total;
}
