import type { EventStore, RecordedEvent } from '../eventstore/event-store.port.js';
import type { Defaults } from '../ledger/decide.js';
import type { DuffyEvent, NodeSpec } from '../ledger/events.js';
import { EsdbEventStore } from '../eventstore/esdb-event-store.js';
import { SqliteEventStore } from '../eventstore/sqlite-event-store.js';
import { type Violation, checkInvariants } from './invariants.js';

/** Opens a ledger read-only for auditing: an embedded file, or an EventStoreDB URL. */
export function openLedger(location: string): EventStore {
  return /^(esdb|esdb\+discover|kurrentdb|kdb):\/\//.test(location) ? new EsdbEventStore(location) : new SqliteEventStore(location, false, true);
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

/** Invariants 1, 2, 3, 6 (see invariants.ts) and 7: a tenant moved off its platform only when its request allowed it. */
export function replay(events: RecordedEvent[], defaults: Defaults): Violation[] {
  const violations = checkInvariants(events, defaults);
  const specs = new Map<number, NodeSpec[]>();
  for (const recorded of events) {
    const e = recorded as RecordedEvent & DuffyEvent;
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
