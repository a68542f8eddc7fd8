import { documentProjection } from './projection.js';

const SESSIONS = 'tenant_sessions';

/** What each tenant holds right now: one document per active session with its hostnames. */
export const tenantAllocations = documentProjection({
  name: 'tenant-allocations',
  version: 1,
  collections: [SESSIONS],
  fold(docs, e) {
    switch (e.type) {
      case 'MachineRequested':
        docs.put(SESSIONS, e.data.sessionId, { session_id: e.data.sessionId, tenant_id: e.data.tenantId, tenant: e.data.tenant, active: false, hosts: [] });
        return;
      case 'MachineReserved': {
        const s = docs.get(SESSIONS, String(e.data.sessionId));
        if (!s) return;
        (s.hosts as string[]).push(e.data.hostname);
        docs.put(SESSIONS, e.data.sessionId, s);
        return;
      }
      case 'MachineReservationCancelled':
      case 'ProvisioningFailed': {
        const s = e.data.sessionId === null ? undefined : docs.get(SESSIONS, String(e.data.sessionId));
        if (!s) return;
        const host = e.stream.slice('machine-'.length);
        s.hosts = (s.hosts as string[]).filter((h) => h !== host);
        docs.put(SESSIONS, String(e.data.sessionId), s);
        return;
      }
      case 'SessionStarted': {
        const s = docs.get(SESSIONS, String(e.data.sessionId));
        if (!s) return;
        s.active = true;
        docs.put(SESSIONS, e.data.sessionId, s);
        return;
      }
      case 'SessionRejected':
      case 'SessionReleased':
      case 'SessionExpired':
      case 'SessionFailed':
        docs.del(SESSIONS, e.data.sessionId);
        return;
      default:
    }
  },
});
