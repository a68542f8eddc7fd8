import type { NodeSpec } from '../src/domain/events.js';
import { jain, maxMinFair } from '../src/domain/statistics.js';
import { HOUR_MS, MINUTE_MS, type MachineTimeBuckets, addHold } from '../src/domain/machine-time.js';
import { instant } from '../src/domain/instant.js';
import { documentProjection, ms } from './projection.js';

const TENANTS = 'tenant_usage';
/** Busy intervals in chunks of their own: a tenant's document stays small, and a release rewrites one short chunk. */
const INTERVALS = 'usage_intervals';
const CHUNK = 50;
/** Each tenant's ended holds' machine time per minute (the last hour) and per hour (the last 7 days): its machine-hours. */
const MACHINE_TIME = 'machine_time';
const HOLDING = 'holding';
const WAITING = 'request_wait';
const CAPACITY = 'capacity';
/** Usage that ended this long before the event being projected is dropped: the widest window is 7 days. */
const KEEP_MS = 7 * 24 * 3600 * 1000;
/** Buckets kept: a window of 1 h in whole minutes spans 61 of them, one of 7 days in whole hours 169. */
const MINUTES_KEPT = 61;
const HOURS_KEPT = 7 * 24 + 1;
/**
 * Bounds keep every document small, so projecting one event stays cheap however long a tenant has been here. The
 * fair share's intervals are capped; machine-hours come from MACHINE_TIME, which is not.
 */
const MAX_WAITS = 200;
const MAX_INTERVALS = 500;
const chunkId = (tenantId: unknown, n: number) => `${String(tenantId)}/${n}`;

/**
 * Fairness per tenant: machines held now, machine time of ended holds per minute and per hour (machine-hours over
 * 1 h / 24 h / 7 d are computed at query time from them and the holds still open), busy intervals `[start ms, end ms,
 * pool]` (in `usage_intervals` chunks of CHUNK, oldest chunk first, for the fair share), queue waits from request to start, and the spells requests spent
 * queued `[start ms, end ms, specs]` (what a tenant wanted and did not hold, for the fair share). Capacity counts
 * machines not retired (in maintenance or quarantined too: they come back).
 */
export const fairness = documentProjection({
  name: 'fairness',
  // 6: capacity leaves out machines an admin retired. 7: and machines registered `done`. 8: machine time per bucket.
  version: 8,
  collections: [TENANTS, INTERVALS, MACHINE_TIME, HOLDING, WAITING, CAPACITY],
  fold(docs, e) {
    switch (e.type) {
      case 'TenantRegistered':
        docs.put(TENANTS, e.data.tenantId, { tenant_id: e.data.tenantId, tenant: e.data.name, active_machines: 0, first_chunk: 0, last_chunk: -1, waits_ms: [], queued: [] });
        return;
      case 'MachineRegistered': {
        const c = docs.get(CAPACITY, 'all') ?? { machines: 0 };
        // Registered `done`: retired from the start (as the World counts it), and never counted out again.
        if (e.data.state === 'done') docs.put(CAPACITY, 'all', { ...c, gone: [...((c.gone as number[] | undefined) ?? []), e.data.machineId] });
        else docs.put(CAPACITY, 'all', { ...c, machines: Number(c.machines) + 1 });
        return;
      }
      case 'MachineRecycled':
      case 'MachineServiceChanged': {
        // Out for good: used up (not reusable), or retired by an admin; each machine counted out once.
        const gone = e.type === 'MachineRecycled' ? e.data.state === 'done' : e.data.service === 'retired';
        if (!gone) return;
        const c = docs.get(CAPACITY, 'all') ?? { machines: 0 };
        const out = (c.gone as number[] | undefined) ?? [];
        if (out.includes(e.data.machineId)) return;
        docs.put(CAPACITY, 'all', { ...c, machines: Math.max(0, Number(c.machines) - 1), gone: [...out, e.data.machineId] });
        return;
      }
      case 'MachineRequested':
        docs.put(WAITING, e.data.sessionId, { tenant_id: e.data.tenantId, requested_at: e.data.at, specs: e.data.specs, queued_at: null });
        return;
      case 'RequestQueued': {
        const w = docs.get(WAITING, String(e.data.sessionId));
        if (!w) return;
        w.queued_at = e.data.at;
        docs.put(WAITING, e.data.sessionId, w);
        return;
      }
      case 'SessionStarted':
      case 'SessionRejected': {
        const w = docs.get(WAITING, String(e.data.sessionId));
        if (!w) return;
        docs.del(WAITING, e.data.sessionId);
        const t = docs.get(TENANTS, String(w.tenant_id));
        if (!t) return;
        const waits = t.waits_ms as number[];
        if (e.type === 'SessionStarted') {
          waits.push(ms(String(w.requested_at), e.data.at));
          if (waits.length > MAX_WAITS) waits.splice(0, waits.length - MAX_WAITS);
        }
        const queued = (t.queued as Array<[number, number, NodeSpec[]]> | undefined) ?? [];
        // Nothing to prune or add for a request that never queued and a tenant with no spells (the common case).
        if (w.queued_at || queued.length > 0) {
          const end = instant(e.data.at);
          const spells = queued.filter(([, until]) => until >= end - KEEP_MS);
          t.queued = w.queued_at ? [...spells, [instant(String(w.queued_at)), end, w.specs]].slice(-MAX_INTERVALS) : spells;
        } else if (!t.queued) {
          t.queued = queued;
        }
        docs.put(TENANTS, String(w.tenant_id), t);
        return;
      }
      case 'MachineReserved': {
        const t = docs.get(TENANTS, String(e.data.tenantId));
        if (!t) return;
        t.active_machines = Number(t.active_machines) + 1;
        docs.put(HOLDING, e.data.machineId, { tenant_id: e.data.tenantId, since: e.data.at, pool: e.data.pool });
        docs.put(TENANTS, String(e.data.tenantId), t);
        return;
      }
      case 'MachineReleased':
      case 'MachineReservationCancelled':
      case 'ProvisioningFailed': {
        const h = docs.get(HOLDING, String(e.data.machineId));
        if (!h || e.data.sessionId === null) return;
        docs.del(HOLDING, e.data.machineId);
        const t = docs.get(TENANTS, String(h.tenant_id));
        if (!t) return;
        // Intervals are [start ms, end ms, pool], oldest first: whole chunks go from the front once they are all
        // older than the widest window, and so that a tenant keeps at most MAX_INTERVALS.
        const end = instant(e.data.at);
        let last = Number(t.last_chunk);
        let chunk = last >= Number(t.first_chunk) ? docs.get(INTERVALS, chunkId(h.tenant_id, last)) : undefined;
        if (!chunk || (chunk.intervals as unknown[]).length >= CHUNK) {
          t.last_chunk = last += 1;
          chunk = { tenant_id: h.tenant_id, chunk: last, intervals: [] };
        }
        const start = instant(String(h.since));
        const time = docs.get(MACHINE_TIME, String(h.tenant_id)) ?? { tenant_id: h.tenant_id, minutes: {}, hours: {} };
        addHold(time.minutes as MachineTimeBuckets, start, end, MINUTE_MS, MINUTES_KEPT);
        addHold(time.hours as MachineTimeBuckets, start, end, HOUR_MS, HOURS_KEPT);
        docs.put(MACHINE_TIME, String(h.tenant_id), time);
        (chunk.intervals as Array<[number, number, unknown]>).push([start, end, h.pool]);
        docs.put(INTERVALS, chunkId(h.tenant_id, last), chunk);
        for (let first = Number(t.first_chunk); first < last; first = Number(t.first_chunk)) {
          const oldest = docs.get(INTERVALS, chunkId(h.tenant_id, first))?.intervals as Array<[number, number, unknown]> | undefined;
          const tooMany = (last - first) * CHUNK >= MAX_INTERVALS;
          if (oldest && !tooMany && oldest[oldest.length - 1][1] >= end - KEEP_MS) break;
          docs.del(INTERVALS, chunkId(h.tenant_id, first));
          t.first_chunk = first + 1;
        }
        t.active_machines = Math.max(0, Number(t.active_machines) - 1);
        docs.put(TENANTS, String(h.tenant_id), t);
        return;
      }
      default:
    }
  },
});

/** A spell during which a tenant held (`held`) or waited for (`waiting`) machines of one resource class. */
export interface Demand {
  tenant: string;
  resource: string;
  start: number;
  end: number;
  held: number;
  waiting: number;
}

/**
 * Jain's index the way the simulator defines it (src/scheduling/simulator.ts): at every instant, per resource class,
 * the machines the tenants hold are split max-min fairly over what each wants (held + waiting); tenant i gets
 * x_i = machine time held / fair machine time over [from, to), and the index is Jain's of the x_i. 1 when every
 * tenant got its fair share; without contention held = wanted = fair, so 1. Null when nobody held anything.
 */
export function fairShareJain(demands: readonly Demand[], from: number, to: number): { index: number | null; shares: Map<string, number> } {
  const deltas: Array<{ at: number; d: Demand; sign: 1 | -1 }> = [];
  for (const d of demands) {
    const start = Math.max(from, d.start);
    const end = Math.min(to, d.end);
    if (end <= start) continue;
    deltas.push({ at: start, d, sign: 1 }, { at: end, d, sign: -1 });
  }
  deltas.sort((a, b) => a.at - b.at);
  const held = new Map<string, Map<string, number>>();
  const wanted = new Map<string, Map<string, number>>();
  const heldTime = new Map<string, number>();
  const fairTime = new Map<string, number>();
  const add = (m: Map<string, Map<string, number>>, r: string, t: string, n: number) => {
    const byTenant = m.get(r) ?? new Map<string, number>();
    byTenant.set(t, (byTenant.get(t) ?? 0) + n);
    m.set(r, byTenant);
  };
  let clock = deltas[0]?.at ?? from;
  for (const { at, d, sign } of deltas) {
    const dt = at - clock;
    if (dt > 0) {
      for (const [r, byTenant] of wanted) {
        const tenants = [...byTenant.keys()];
        const holding = tenants.map((t) => held.get(r)?.get(t) ?? 0);
        const fair = maxMinFair(holding.reduce((a, b) => a + b, 0), tenants.map((t) => byTenant.get(t)!));
        tenants.forEach((t, i) => {
          heldTime.set(t, (heldTime.get(t) ?? 0) + holding[i] * dt);
          fairTime.set(t, (fairTime.get(t) ?? 0) + fair[i] * dt);
        });
      }
      clock = at;
    }
    add(held, d.resource, d.tenant, sign * d.held);
    add(wanted, d.resource, d.tenant, sign * (d.held + d.waiting));
  }
  const shares = new Map<string, number>();
  for (const [t, f] of fairTime) if (f > 0) shares.set(t, (heldTime.get(t) ?? 0) / f);
  return { index: shares.size ? jain([...shares.values()]) : null, shares };
}
