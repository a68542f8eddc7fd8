import type { DuffyEvent } from '../src/domain/events.js';
import { type Machine, RETAINED_ENDED, type Session, type Tenant, type World, apply, emptyWorld, forgetSettled, holdsSomething, noUsage, sessionIsLive, LIVE_STATUSES } from '../src/domain/world.js';
import type { Doc, Mark, Projection, ProjectedEvent } from './projection.js';

export const TENANTS = 'tenants';
export const MACHINES = 'machines';
export const SESSIONS = 'sessions';

/**
 * Documents are the World's own entities; Maps become entry lists. A tenant's `usage` (its recent machine time, for
 * the fair queue) stays out: no read shows it, and it would make the tenant, rewritten with every batch, the
 * largest document by far.
 */
export const tenantDoc = ({ usage, ...t }: Tenant): Doc => (void usage, { ...t, claims: [...t.claims] });
export const tenantFromDoc = (d: Doc): Tenant => ({ ...(d as unknown as Tenant), claims: new Map(d.claims as Array<[number, number]>), usage: noUsage() });

/** Events that change a tenant (its settings, quota claims, platform or usage); no other event touches one. */
const TOUCHES_TENANT = new Set<string>([
  'TenantRegistered',
  'TenantUpdated',
  'TenantRetired',
  'TenantReactivated',
  'QuotaClaimed',
  'QueueSpaceClaimed',
  'QuotaReturned',
  'MachineReserved',
  'MachineReservationCancelled',
  'MachineReleased',
  'ProvisioningFailed',
]);

function markTenant(w: World, id: number | null | undefined, mark: Mark): void {
  if (id !== undefined && id !== null && w.tenants.has(id)) mark(TENANTS, String(id));
}

/**
 * Tenants, machines and sessions as the API shows them, served from the read-model store. The state is a World of
 * entities folded by the World's own entity fold (`apply`: one state machine, no second copy of the rules), without
 * its decision indexes; each event marks the tenant, machine and session it touches.
 */
export const entities: Projection<World> = {
  name: 'entities',
  // 2: machines carry their service (maintenance, retirement) and quarantine. 3: tenants carry `held` (claims summed).
  // 4: tenants without `usage`. 5: tenants carry `waiting` (machines their queued requests ask for).
  // 6: a machine quarantined while it was being released no longer shows as draining.
  // 7: sessions carry `startedAt`; a machine registered `done` is retired; machines carry `handOverFailed`.
  // 8: sessions carry `lostMachineIds` (machines whose hand-over failed for them).
  // 9: a failed session's machines do not count it as an allocation.
  // 10: sessions carry `artifactsIncomplete` (machines whose collection failed or left files out).
  version: 10,
  collections: [TENANTS, MACHINES, SESSIONS],
  init: () => emptyWorld({ keepsUsage: false }),
  fold(w, e, mark) {
    if (e.type === 'IdAllocated' || e.type === 'CheckpointPublished' || e.type === 'ApiKeyAssigned' || e.type === 'DefaultsSet' || e.type === 'PoolsConfigured' || e.type === 'LedgerRestored') return;
    const data = e.data as { tenantId?: number; machineId?: number; sessionId?: number | null };
    const machineId = data.machineId;
    const sessionId = data.sessionId;
    if (TOUCHES_TENANT.has(e.type)) {
      // Before the fold: a release clears the machine's tenant, whose usage it changes.
      markTenant(w, data.tenantId, mark);
      if (machineId !== undefined) markTenant(w, w.machines.get(machineId)?.tenantId, mark);
      if (sessionId !== undefined && sessionId !== null) markTenant(w, w.sessions.get(sessionId)?.tenantId, mark);
    }
    apply(w, e as ProjectedEvent & DuffyEvent);
    if (e.type === 'TenantRegistered') markTenant(w, data.tenantId, mark);
    if (machineId !== undefined && w.machines.has(machineId)) mark(MACHINES, String(machineId));
    if (sessionId !== undefined && sessionId !== null && w.sessions.has(sessionId)) mark(SESSIONS, String(sessionId));
  },
  doc(w, collection, id) {
    if (collection === MACHINES) return w.machines.get(Number(id)) as unknown as Doc | undefined;
    if (collection === SESSIONS) return w.sessions.get(Number(id)) as unknown as Doc | undefined;
    const t = w.tenants.get(Number(id));
    return t && tenantDoc(t);
  },
  restore(w, collection, id, doc) {
    if (collection === MACHINES) w.machines.set(Number(id), doc as unknown as Machine);
    else if (collection === TENANTS) w.tenants.set(Number(id), tenantFromDoc(doc));
    else if (collection === SESSIONS) {
      // Restored after tenants and machines (the order of `collections`): a settled session stays in the store only.
      const s = doc as unknown as Session;
      if (sessionIsLive(s)) w.openSessions.add(s.id);
      else if (holdsSomething(w, s)) w.ended.push(s.id);
      else return;
      w.sessions.set(Number(id), s);
    }
  },
  // A restart reads back the live sessions and those a machine or a tenant still names, not every session ever made.
  restoring(w, collection) {
    if (collection !== SESSIONS) return undefined;
    const ids: string[] = [];
    for (const m of w.machines.values()) {
      if (m.sessionId != null) ids.push(String(m.sessionId));
      if (m.releasingSession != null) ids.push(String(m.releasingSession));
    }
    for (const t of w.tenants.values()) for (const id of t.claims.keys()) ids.push(String(id));
    return { filters: LIVE_STATUSES.map((status) => ({ status })), ids };
  },
  // Ended sessions leave the state as they leave the World, once written: history is read from the store.
  written(w, pending) {
    forgetSettled(w, w.ended.length - RETAINED_ENDED, (id) => pending(SESSIONS, String(id)));
  },
};
