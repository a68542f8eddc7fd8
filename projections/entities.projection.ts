import type { RecordedEvent } from '../src/application/ports/event-store.port.js';
import type { DuffyEvent } from '../src/domain/events.js';
import { type Machine, type Session, type Tenant, type World, apply, emptyWorld } from '../src/domain/world.js';
import { type Change, type Doc, type Projection, put } from './projection.js';

export const TENANTS = 'tenants';
export const MACHINES = 'machines';
export const SESSIONS = 'sessions';

/** Documents are the World's own entities; Maps become entry lists. */
export const tenantDoc = (t: Tenant): Doc => ({ ...t, claims: [...t.claims] });
export const tenantFromDoc = (d: Doc): Tenant => ({ ...(d as unknown as Tenant), claims: new Map(d.claims as Array<[number, number]>) });
/**
 * The scratch World an event's documents are folded in with the World's own entity fold (`apply`): one state
 * machine, without building a World (indexes included) per event. Emptied before each use; `project` is synchronous.
 */
const scratch: World = emptyWorld();
function clear(w: World): World {
  // Map.clear() allocates a new table even when the map is empty: clear only what the last event filled.
  if (w.tenants.size > 0) w.tenants.clear();
  if (w.machines.size > 0) w.machines.clear();
  if (w.sessions.size > 0) w.sessions.clear();
  if (w.tenantIdsByName.size > 0) w.tenantIdsByName.clear();
  if (w.tenantIdsByDigest.size > 0) w.tenantIdsByDigest.clear();
  if (w.machineIdsByHostname.size > 0) w.machineIdsByHostname.clear();
  if (w.machinesByPool.size > 0) w.machinesByPool.clear();
  if (w.openSessions.size > 0) w.openSessions.clear();
  if (w.ended.length > 0) w.ended.length = 0;
  return w;
}

/** Events that change a tenant (its settings, quota claims, platform or usage); no other event loads one. */
const TOUCHES_TENANT = new Set<string>([
  'TenantRegistered',
  'TenantUpdated',
  'TenantRetired',
  'TenantReactivated',
  'QuotaClaimed',
  'QuotaReturned',
  'MachineReserved',
  'MachineReservationCancelled',
  'MachineReleased',
  'ProvisioningFailed',
]);

/**
 * Tenants, machines and sessions as the API shows them, served from the read-model store. Machine and session
 * documents are the entities themselves, folded in place (the projector keeps them in memory and writes each
 * one once per batch); a tenant document is converted (its claims are a Map in the World).
 */
export const entities: Projection = {
  name: 'entities',
  // 2: machines carry their service (maintenance, retirement) and quarantine. 3: tenants carry `held` (claims summed).
  version: 3,
  collections: [TENANTS, MACHINES, SESSIONS],
  project(e, doc): Change[] {
    if (e.type === 'IdAllocated') return [];
    const world = clear(scratch);
    const data = e.data as { tenantId?: number; machineId?: number; sessionId?: number | null };
    const machine = data.machineId === undefined ? undefined : (doc(MACHINES, String(data.machineId)) as unknown as Machine | undefined);
    if (machine) world.machines.set(machine.id, machine);
    const session = data.sessionId === undefined || data.sessionId === null ? undefined : (doc(SESSIONS, String(data.sessionId)) as unknown as Session | undefined);
    if (session) world.sessions.set(session.id, session);
    // Only quota events read or change a tenant's claims: they get a Tenant (claims as a Map); the other events
    // that touch a tenant fold its document in place (claims stay the entry list, untouched).
    const claims = e.type === 'QuotaClaimed' || e.type === 'QuotaReturned';
    if (TOUCHES_TENANT.has(e.type)) {
      for (const tenantId of [data.tenantId, machine?.tenantId, session?.tenantId]) {
        if (tenantId === undefined || tenantId === null || world.tenants.has(tenantId)) continue;
        const t = doc(TENANTS, String(tenantId));
        if (t) world.tenants.set(tenantId, claims ? tenantFromDoc(t) : (t as unknown as Tenant));
      }
    }
    apply(world, e as RecordedEvent & DuffyEvent);
    const changes: Change[] = [];
    for (const t of world.tenants.values()) changes.push(put(TENANTS, t.id, t.claims instanceof Map ? tenantDoc(t) : (t as unknown as Doc)));
    for (const m of world.machines.values()) changes.push(put(MACHINES, m.id, m as unknown as Doc));
    for (const s of world.sessions.values()) changes.push(put(SESSIONS, s.id, s as unknown as Doc));
    return changes;
  },
};
