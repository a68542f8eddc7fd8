import type { EventStore, RecordedEvent } from '../application/ports/event-store.port.js';
import type { Defaults } from '../domain/decide.js';
import type { DuffyEvent, NodeSpec } from '../domain/events.js';
import { KurrentDbEventStore } from '../adapters/eventstore/kurrentdb-event-store.js';
import { SqliteEventStore } from '../adapters/eventstore/sqlite-event-store.js';
import { emptyWorld, evolve } from '../domain/world.js';
import { lessStressed } from '../domain/policy.js';
import { type Violation, checkInvariants } from './invariants.js';

/** Opens a ledger read-only for auditing: an embedded file, or an EventStoreDB URL. */
export function openLedger(location: string): EventStore {
  return /^(esdb|esdb\+discover|kurrentdb|kdb):\/\//.test(location) ? new KurrentDbEventStore(location) : new SqliteEventStore(location, false, true);
}

export async function* allEvents(store: EventStore, pageSize = 5000): AsyncGenerator<RecordedEvent> {
  let after = 0n;
  for (;;) {
    const page = await store.readAll(after, pageSize);
    if (page.length === 0) return;
    yield* page;
    after = page[page.length - 1].position;
  }
}

export async function collect(store: EventStore): Promise<RecordedEvent[]> {
  const out: RecordedEvent[] = [];
  for await (const e of allEvents(store)) out.push(e);
  return out;
}

/** A machine freed this recently may have been promised to a request in flight when the choice was made. */
const IN_FLIGHT_GRACE_MS = 1000;

/**
 * Invariants 1, 2, 3, 6 (see invariants.ts), 7 (a tenant moved off its platform only when its request allowed it)
 * and 8 (no less-worn machine of the same pool was free when one was reserved), folding the World as it goes.
 */
export function replay(events: RecordedEvent[], defaults: Defaults): Violation[] {
  const violations = checkInvariants(events, defaults);
  const specs = new Map<number, NodeSpec[]>();
  const world = emptyWorld();
  const freedAt = new Map<number, number>();
  for (const recorded of events) {
    const e = recorded as RecordedEvent & DuffyEvent;
    if (e.type === 'MachineReserved') {
      const m = world.machines.get(e.data.machineId);
      const at = Date.parse(e.data.at);
      const worn = m && (world.machinesByPool.get(m.pool) ?? []).find(
        (x) =>
          x.id !== m.id &&
          (x.state === 'ready' || (x.state === 'unused' && m.state === 'unused')) &&
          x.sessionId === null && x.job === null && x.retiredAt === null && x.service === 'in-service' &&
          at - (freedAt.get(x.id) ?? 0) > IN_FLIGHT_GRACE_MS &&
          ((x.state === 'ready' && m.state !== 'ready') || lessStressed(x, m) < 0),
      );
      if (m && worn) {
        violations.push({
          invariant: 8,
          message: `session ${e.data.sessionId} got ${m.hostname} (busy ${m.busyMs} ms, ${m.allocations} allocations) while ${worn.hostname} (busy ${worn.busyMs} ms, ${worn.allocations} allocations) of the same pool was free`,
          positions: [recorded.position],
        });
      }
    }
    evolve(world, e);
    const touched = (e.data as { machineId?: number }).machineId;
    if (touched !== undefined && world.machines.get(touched)?.state === 'ready') freedAt.set(touched, Date.parse(String((e.data as { at?: string }).at ?? 0)));
    if (e.type === 'MachineRequested') specs.set(e.data.sessionId, e.data.specs);
    if (e.type === 'MachineReserved' && e.data.affinity === 'fallback') {
      const explicit = (specs.get(e.data.sessionId) ?? []).some((s) => s.pool !== undefined || s.platform !== undefined);
      if (!explicit) {
        violations.push({
          invariant: 7,
          message: `session ${e.data.sessionId} got ${e.data.hostname} on platform ${e.data.platform}, off its tenant's family, without asking for it`,
          positions: [recorded.position],
        });
      }
    }
  }
  return violations.sort((a, b) => (a.positions[0] < b.positions[0] ? -1 : 1));
}

/** Who held a machine at an instant: the reservation in force then, from the machine's own stream. */
export function whoHad(events: RecordedEvent[], hostname: string, at: Date): { sessionId: number; tenantId: number; from: string; until: string | null } | null {
  let current: { sessionId: number; tenantId: number; from: string; until: string | null } | null = null;
  for (const recorded of events) {
    if (recorded.stream !== `machine-${hostname}`) continue;
    const e = recorded as RecordedEvent & DuffyEvent;
    const when = Date.parse(String((e.data as { at?: string }).at ?? e.metadata.at));
    if (when > at.getTime()) break;
    if (e.type === 'MachineReserved') current = { sessionId: e.data.sessionId, tenantId: e.data.tenantId, from: e.data.at, until: null };
    if (e.type === 'MachineReleased' || e.type === 'MachineReservationCancelled' || (e.type === 'ProvisioningFailed' && e.data.sessionId !== null)) current = null;
  }
  if (!current) return null;
  const end = events.find(
    (r) =>
      r.stream === `machine-${hostname}` &&
      ['MachineReleased', 'MachineReservationCancelled', 'ProvisioningFailed'].includes(r.type) &&
      (r.data as { sessionId?: number }).sessionId === current!.sessionId,
  );
  return { ...current, until: end ? String(end.data.at) : null };
}

/** Every event about one session, machine or tenant: its own stream plus the events elsewhere that name it. */
export function history(events: RecordedEvent[], subject: string): RecordedEvent[] {
  const m = /^(session|machine|tenant)-(.+)$/.exec(subject);
  if (!m) throw new Error(`history needs session-<id>, machine-<hostname> or tenant-<name>, got ${subject}`);
  const [, kind, key] = m;
  let tenantId: number | undefined;
  if (kind === 'tenant') tenantId = events.find((e) => e.type === 'TenantRegistered' && e.data.name === key)?.data.tenantId as number | undefined;
  return events.filter((e) => {
    if (e.stream === subject) return true;
    const d = e.data as { sessionId?: unknown; hostname?: unknown; tenantId?: unknown };
    if (kind === 'session') return String(d.sessionId) === key;
    if (kind === 'machine') return d.hostname === key;
    return tenantId !== undefined && d.tenantId === tenantId;
  });
}

export function inWindow(e: RecordedEvent, from?: Date, to?: Date): boolean {
  const at = Date.parse(String((e.data as { at?: string }).at ?? e.metadata.at ?? ''));
  if (Number.isNaN(at)) return !from && !to;
  return (!from || at >= from.getTime()) && (!to || at < to.getTime());
}

/** One JSON line per event; bigints as strings. */
export function jsonLine(e: RecordedEvent): string {
  return JSON.stringify({ ...e, position: e.position.toString() });
}
