import type { RecordedEvent } from '../src/application/ports/event-store.port.js';
import type { DuffyEvent } from '../src/domain/events.js';
import { type Machine, type Session, type Tenant, type World, emptyWorld, evolve } from '../src/domain/world.js';
import { type Change, type Doc, type DocReader, type Projection, put } from './projection.js';

export const TENANTS = 'tenants';
export const MACHINES = 'machines';
export const SESSIONS = 'sessions';

/** Documents are the World's own entities; Maps become entry lists. */
export const tenantDoc = (t: Tenant): Doc => ({ ...t, claims: [...t.claims] });
export const tenantFromDoc = (d: Doc): Tenant => ({ ...(d as unknown as Tenant), claims: new Map(d.claims as Array<[number, number]>) });
const strip = ({ __id, ...d }: Doc) => (void __id, d);

/** Loads the documents an event needs into a World, so the World's own `evolve` folds it: one state machine. */
export function sliceFor(e: RecordedEvent & DuffyEvent, doc: DocReader): World {
  const world = emptyWorld();
  const data = e.data as { tenantId?: number; machineId?: number; sessionId?: number | null };
  const machine = data.machineId === undefined ? undefined : doc(MACHINES, String(data.machineId));
  if (machine) world.machines.set(Number(machine.id), strip(machine) as unknown as Machine);
  const session = data.sessionId === undefined || data.sessionId === null ? undefined : doc(SESSIONS, String(data.sessionId));
  if (session) world.sessions.set(Number(session.id), strip(session) as unknown as Session);
  for (const tenantId of new Set([data.tenantId, machine?.tenantId, session?.tenantId])) {
    const t = tenantId === undefined || tenantId === null ? undefined : doc(TENANTS, String(tenantId));
    if (t) world.tenants.set(Number(t.id), tenantFromDoc(strip(t)));
  }
  return world;
}

/** Tenants, machines and sessions as the API shows them, served from the read-model store. */
export const entities: Projection = {
  name: 'entities',
  // 2: machines carry their service (maintenance, retirement) and quarantine.
  version: 2,
  collections: [TENANTS, MACHINES, SESSIONS],
  project(e, doc): Change[] {
    const world = sliceFor(e, doc);
    evolve(world, e);
    return [
      ...[...world.tenants.values()].map((t) => put(TENANTS, t.id, tenantDoc(t))),
      ...[...world.machines.values()].map((m) => put(MACHINES, m.id, { ...m })),
      ...[...world.sessions.values()].map((s) => put(SESSIONS, s.id, { ...s })),
    ];
  },
};
