import type { RecordedEvent } from '../application/ports/event-store.port.js';
import type { Defaults } from '../domain/decide.js';
import type { DuffyEvent } from '../domain/events.js';

export interface Violation {
  invariant: number;
  message: string;
  /** Global positions of the events that show it. */
  positions: bigint[];
}

/**
 * Replays a ledger and reports every breach of DESIGN section 4's invariants it can see in events alone.
 * Pure: feed it events in ledger order.
 */
export function checkInvariants(events: Iterable<RecordedEvent>, defaults: Defaults): Violation[] {
  const violations: Violation[] = [];
  const holder = new Map<number, { sessionId: number; position: bigint }>();
  const quota = new Map<number, number | null>();
  const claims = new Map<number, Map<number, number>>();
  const lastRevision = new Map<string, number>();
  for (const recorded of events) {
    const e = recorded as RecordedEvent & DuffyEvent;
    const at = recorded.position;
    const prev = lastRevision.get(recorded.stream) ?? -1;
    if (recorded.revision !== prev + 1) {
      violations.push({ invariant: 6, message: `${recorded.stream}: revision ${recorded.revision} follows ${prev}`, positions: [at] });
    }
    lastRevision.set(recorded.stream, recorded.revision);
    switch (e.type) {
      case 'TenantRegistered':
        quota.set(e.data.tenantId, e.data.nodeQuota);
        break;
      case 'TenantUpdated':
        if (e.data.changes.nodeQuota !== undefined) quota.set(e.data.tenantId, e.data.changes.nodeQuota);
        break;
      case 'QuotaClaimed': {
        const mine = claims.get(e.data.tenantId) ?? new Map<number, number>();
        mine.set(e.data.sessionId, e.data.count);
        claims.set(e.data.tenantId, mine);
        const held = [...mine.values()].reduce((a, b) => a + b, 0);
        const limit = quota.get(e.data.tenantId) ?? defaults.nodeQuota;
        if (held > limit) {
          violations.push({ invariant: 3, message: `tenant ${e.data.tenantId} holds ${held} machines over its quota of ${limit}`, positions: [at] });
        }
        break;
      }
      case 'QuotaReturned':
        claims.get(e.data.tenantId)?.delete(e.data.sessionId);
        break;
      case 'MachineReserved': {
        const current = holder.get(e.data.machineId);
        if (current) {
          violations.push({
            invariant: 1,
            message: `machine ${e.data.hostname} reserved for session ${e.data.sessionId} while session ${current.sessionId} holds it`,
            positions: [current.position, at],
          });
        }
        holder.set(e.data.machineId, { sessionId: e.data.sessionId, position: at });
        break;
      }
      case 'MachineReleased':
      case 'MachineReservationCancelled': {
        const current = holder.get(e.data.machineId);
        if (!current || current.sessionId !== e.data.sessionId) {
          violations.push({
            invariant: 2,
            message: `machine ${e.data.machineId}: ${e.type} for session ${e.data.sessionId} without its MachineReserved`,
            positions: current ? [current.position, at] : [at],
          });
        } else holder.delete(e.data.machineId);
        break;
      }
      default:
        break;
    }
  }
  return violations;
}
