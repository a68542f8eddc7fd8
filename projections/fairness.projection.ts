import type { Change, Projection } from './projection.js';
import { del, ms, put } from './projection.js';

const TENANTS = 'tenant_usage';
const HOLDING = 'holding';
const WAITING = 'request_wait';
const CAPACITY = 'capacity';
/** Usage that ended this long before the event being projected is dropped: the widest window is 7 days. */
const KEEP_MS = 7 * 24 * 3600 * 1000;
/** Bounds keep every document small, so projecting one event stays cheap however long a tenant has been here. */
const MAX_WAITS = 200;
const MAX_INTERVALS = 500;

/**
 * Fairness per tenant: machines held now, busy intervals in ms since the epoch (machine-hours over 1 h / 24 h / 7 d are computed at
 * query time from them), and queue waits from request to start. Capacity counts machines in service.
 */
export const fairness: Projection = {
  name: 'fairness',
  version: 3,
  collections: [TENANTS, HOLDING, WAITING, CAPACITY],
  project(e, doc): Change[] {
    switch (e.type) {
      case 'TenantRegistered':
        return [put(TENANTS, e.data.tenantId, { tenant_id: e.data.tenantId, tenant: e.data.name, active_machines: 0, intervals: [], waits_ms: [] })];
      case 'MachineRegistered':
        return [put(CAPACITY, 'all', { machines: Number(doc(CAPACITY, 'all')?.machines ?? 0) + 1 })];
      case 'MachineRecycled':
        return e.data.state === 'done' ? [put(CAPACITY, 'all', { machines: Math.max(0, Number(doc(CAPACITY, 'all')?.machines ?? 1) - 1) })] : [];
      case 'MachineRequested':
        return [put(WAITING, e.data.sessionId, { tenant_id: e.data.tenantId, requested_at: e.data.at })];
      case 'SessionStarted':
      case 'SessionRejected': {
        const w = doc(WAITING, String(e.data.sessionId));
        if (!w) return [];
        const changes: Change[] = [del(WAITING, e.data.sessionId)];
        const t = doc(TENANTS, String(w.tenant_id));
        if (t && e.type === 'SessionStarted') {
          // Folded in place: the projector keeps the document in memory and writes it once per batch.
          const waits = t.waits_ms as number[];
          waits.push(ms(String(w.requested_at), e.data.at));
          if (waits.length > MAX_WAITS) waits.splice(0, waits.length - MAX_WAITS);
          changes.push(put(TENANTS, String(w.tenant_id), t));
        }
        return changes;
      }
      case 'MachineReserved': {
        const t = doc(TENANTS, String(e.data.tenantId));
        if (!t) return [];
        t.active_machines = Number(t.active_machines) + 1;
        return [put(HOLDING, e.data.machineId, { tenant_id: e.data.tenantId, since: e.data.at }), put(TENANTS, String(e.data.tenantId), t)];
      }
      case 'MachineReleased':
      case 'MachineReservationCancelled':
      case 'ProvisioningFailed': {
        const h = doc(HOLDING, String(e.data.machineId));
        if (!h || e.data.sessionId === null) return [];
        const t = doc(TENANTS, String(h.tenant_id));
        const changes: Change[] = [del(HOLDING, e.data.machineId)];
        if (t) {
          // Intervals are [start ms, end ms], oldest first: prune from the front only.
          const end = Date.parse(e.data.at);
          const intervals = t.intervals as Array<[number, number]>;
          let from = Math.max(0, intervals.length + 1 - MAX_INTERVALS);
          while (from < intervals.length && intervals[from][1] < end - KEEP_MS) from += 1;
          if (from > 0) intervals.splice(0, from);
          intervals.push([Date.parse(String(h.since)), end]);
          t.active_machines = Math.max(0, Number(t.active_machines) - 1);
          changes.push(put(TENANTS, String(h.tenant_id), t));
        }
        return changes;
      }
      default:
        return [];
    }
  },
};
