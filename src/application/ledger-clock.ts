/**
 * The time Duffy dates its decisions and events with. It follows the host's clock while that goes forward; when the
 * host's clock steps back (NTP stepping a clock that ran ahead, a VM restored from a snapshot), it goes on from where
 * it was at the rate of the monotonic clock until the host's catches up. So no lease ends before it began, no hold has
 * a negative length, a wait or an expiry runs for the seconds it says, and nothing is dated before what was already
 * written. `notBefore` raises it to a time already vouched for (a checkpoint this server signed, read at start).
 */
export class LedgerClock {
  private base = -Infinity;
  private baseAt = 0;

  nowMs(): number {
    const wall = Date.now();
    const since = performance.now();
    const going = this.base + (since - this.baseAt);
    if (wall >= going) {
      this.base = wall;
      this.baseAt = since;
      return wall;
    }
    return Math.floor(going);
  }

  now(): string {
    return new Date(this.nowMs()).toISOString();
  }

  notBefore(ms: number): void {
    if (ms > this.nowMs()) {
      this.base = ms;
      this.baseAt = performance.now();
    }
  }
}
