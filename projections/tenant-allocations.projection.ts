import type { Change, Projection } from './projection.js';
import { del, put } from './projection.js';

const SESSIONS = 'tenant_sessions';

/** What each tenant holds right now: one document per active session with its hostnames. */
export const tenantAllocations: Projection = {
  name: 'tenant-allocations',
  version: 1,
  collections: [SESSIONS],
  project(e, doc): Change[] {
    switch (e.type) {
      case 'MachineRequested':
        return [put(SESSIONS, e.data.sessionId, { session_id: e.data.sessionId, tenant_id: e.data.tenantId, tenant: e.data.tenant, active: false, hosts: [] })];
      case 'MachineReserved': {
        const s = doc(SESSIONS, String(e.data.sessionId));
        return s ? [put(SESSIONS, e.data.sessionId, { ...s, hosts: [...(s.hosts as string[]), e.data.hostname] })] : [];
      }
      case 'MachineReservationCancelled':
      case 'ProvisioningFailed': {
        const s = e.data.sessionId === null ? undefined : doc(SESSIONS, String(e.data.sessionId));
        const host = e.stream.slice('machine-'.length);
        return s ? [put(SESSIONS, String(e.data.sessionId), { ...s, hosts: (s.hosts as string[]).filter((h) => h !== host) })] : [];
      }
      case 'SessionStarted': {
        const s = doc(SESSIONS, String(e.data.sessionId));
        return s ? [put(SESSIONS, e.data.sessionId, { ...s, active: true })] : [];
      }
      case 'SessionRejected':
      case 'SessionReleased':
      case 'SessionExpired':
      case 'SessionFailed':
        return [del(SESSIONS, e.data.sessionId)];
      default:
        return [];
    }
  },
};
