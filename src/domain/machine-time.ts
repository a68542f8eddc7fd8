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
 * are dropped when a new bucket begins).
 */
export function addHold(buckets: MachineTimeBuckets, start: number, end: number, bucketMs: number, keep: number): void {
  if (!(end > start)) return;
  const last = Math.floor(end / bucketMs);
  let began = false;
  for (let b = Math.max(Math.floor(start / bucketMs), last - keep + 1); b <= last; b++) {
    const ms = Math.min(end, (b + 1) * bucketMs) - Math.max(start, b * bucketMs);
    if (ms <= 0) continue;
    const before = buckets[b];
    if (before === undefined) began = true;
    buckets[b] = (before ?? 0) + ms;
  }
  if (began) for (const b in buckets) if (Number(b) <= last - keep) delete buckets[b];
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
