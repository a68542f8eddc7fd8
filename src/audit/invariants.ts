import type { RecordedEvent } from '../application/ports/event-store.port.js';
import { type Defaults, type DuffyEvent, SERVICE_EVENTS, sessionOfStream } from '../domain/events.js';

export interface Violation {
  /**
   * DESIGN section 4's number, or one of Duffy's own rules: `admin` (an active admin is always left), `key` (one API
   * key, one tenant), `free` (only a free machine is reserved), `lease` (no extension past the maximum lifetime),
   * `ids` (an event names the session, machine and tenant of its stream, and a session's events its tenant), `end`
   * (a session is ended by its tenant, an admin or Duffy).
   */
  invariant: number | 'admin' | 'key' | 'free' | 'lease' | 'ids' | 'end';
  message: string;
  /** Global positions of the events that show it. */
  positions: bigint[];
}

/**
 * The ledger's own facts about holding a machine, shared by the replay and `who-had`: a machine is held from its
 * MachineReserved until MachineReleased, MachineReservationCancelled, or a failed hand-over (provision or
 * contextualize) of that session took it back.
 */
export function holdStarts(e: DuffyEvent): { machineId: number; sessionId: number; tenantId: number } | null {
  return e.type === 'MachineReserved' ? { machineId: e.data.machineId, sessionId: e.data.sessionId, tenantId: e.data.tenantId } : null;
}

export function holdEnds(e: DuffyEvent): { machineId: number; sessionId: number } | null {
  if (e.type === 'MachineReleased' || e.type === 'MachineReservationCancelled') return { machineId: e.data.machineId, sessionId: e.data.sessionId };
  if (e.type === 'ProvisioningFailed' && e.data.sessionId !== null && (e.data.action === 'provision' || e.data.action === 'contextualize')) {
    return { machineId: e.data.machineId, sessionId: e.data.sessionId };
  }
  return null;
}

/**
 * Replays a ledger and reports every breach of DESIGN section 4's invariants 1, 2, 3, 6 and 10 (a machine reserved
 * for a session that has ended) it can see in events alone. Quota (3) is counted from the machines each tenant's sessions hold, whatever QuotaClaimed says.
 * Pure: feed it events in ledger order.
 */
export function checkInvariants(events: Iterable<RecordedEvent>, fallback: Defaults): Violation[] {
  /** The defaults recorded last (DefaultsSet); `fallback` (the replay's configuration) on a ledger that holds none yet. */
  let defaults = fallback;
  const violations: Violation[] = [];
  const holder = new Map<number, { sessionId: number; tenantId: number; position: bigint }>();
  const quota = new Map<number, number | null>();
  const held = new Map<number, Set<number>>();
  const lastRevision = new Map<string, number>();
  /** Where each session ended: a machine reserved for it afterwards would be held by nobody, for good (invariant 10). */
  const endedAt = new Map<number, bigint>();
  const ids = new IdsRule();
  for (const recorded of events) {
    const e = recorded as RecordedEvent & DuffyEvent;
    const at = recorded.position;
    violations.push(...ids.check(recorded));
    const prev = lastRevision.get(recorded.stream) ?? -1;
    if (recorded.revision !== prev + 1) {
      violations.push({ invariant: 6, message: `${recorded.stream}: revision ${recorded.revision} follows ${prev}`, positions: [at] });
    }
    lastRevision.set(recorded.stream, recorded.revision);
    if (e.type === 'DefaultsSet') defaults = e.data;
    if (e.type === 'TenantRegistered') quota.set(e.data.tenantId, e.data.nodeQuota);
    if (e.type === 'TenantUpdated' && e.data.changes.nodeQuota !== undefined) quota.set(e.data.tenantId, e.data.changes.nodeQuota);
    if (e.type === 'SessionReleased' || e.type === 'SessionExpired' || e.type === 'SessionFailed' || e.type === 'SessionRejected') endedAt.set(e.data.sessionId, at);
    const start = holdStarts(e);
    const ended = start ? endedAt.get(start.sessionId) : undefined;
    if (start && ended !== undefined) {
      violations.push({ invariant: 10, message: `machine ${start.machineId} reserved for session ${start.sessionId} after the session ended: nobody would ever release it`, positions: [ended, at] });
    }
    if (start) {
      const current = holder.get(start.machineId);
      if (current) {
        violations.push({
          invariant: 1,
          message: `machine ${e.type === 'MachineReserved' ? e.data.hostname : start.machineId} reserved for session ${start.sessionId} while session ${current.sessionId} holds it`,
          positions: [current.position, at],
        });
        held.get(current.tenantId)?.delete(start.machineId);
      }
      holder.set(start.machineId, { ...start, position: at });
      const mine = held.get(start.tenantId) ?? new Set<number>();
      mine.add(start.machineId);
      held.set(start.tenantId, mine);
      const limit = quota.get(start.tenantId) ?? defaults.nodeQuota;
      if (mine.size > limit) {
        const positions = [...mine].map((id) => holder.get(id)!.position).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
        violations.push({ invariant: 3, message: `tenant ${start.tenantId} holds ${mine.size} machines over its quota of ${limit}`, positions });
      }
    }
    const end = holdEnds(e);
    const provisioned = e.type === 'MachineProvisioned' && e.data.sessionId !== null ? { machineId: e.data.machineId, sessionId: e.data.sessionId } : null;
    const claim = end ?? provisioned;
    if (claim) {
      const current = holder.get(claim.machineId);
      if (!current || current.sessionId !== claim.sessionId) {
        violations.push({
          invariant: 2,
          message: `machine ${claim.machineId}: ${e.type} for session ${claim.sessionId} without its MachineReserved`,
          positions: current ? [current.position, at] : [at],
        });
      } else if (end) {
        holder.delete(claim.machineId);
        held.get(current.tenantId)?.delete(claim.machineId);
      }
    }
  }
  // Invariant 10's other half: a session that ended while it still holds a machine (the end and the release are
  // one append) leaves that machine held by nobody, for good.
  for (const [machineId, h] of holder) {
    const ended = endedAt.get(h.sessionId);
    // Reserved after the end: reported there.
    if (ended !== undefined && h.position < ended) violations.push({ invariant: 10, message: `machine ${machineId} is still held by session ${h.sessionId}, which ended: nobody would ever release it`, positions: [h.position, ended] });
  }
  violations.push(...ids.finish());
  return violations;
}

/**
 * Rule `ids`: the rules above count holdings by the ids inside events, so those ids must be the ones the stream
 * stands for: an event on `session-7` is about session 7, one on `machine-<host>` (or `service-<host>`) about the
 * machine registered there, one on `tenant-<name>` about that tenant; and an event naming a session and a tenant
 * names the tenant that requested the session, once (a reservation for a session never requested is held by
 * nobody); a session shows only machines reserved for it.
 * An append with valid hashes that put another id inside would otherwise move a machine or a quota unseen.
 */
class IdsRule {
  private readonly streamIds = new Map<string, number>();
  private readonly machineStreams = new Map<number, string>();
  /** Machines an admin retired for good: their host name may be registered again, for another machine. */
  private readonly retired = new Set<number>();
  private readonly sessionTenants = new Map<number, number>();
  /** Per session, the machines reserved for it. */
  private readonly reserved = new Map<number, Set<number>>();
  /** The machines each SessionStarted and ReplacementReserved says its session has. */
  private readonly shown: Array<{ where: string; sessionId: number; machineIds: number[]; position: bigint }> = [];
  /** Events naming a session and a tenant seen before the session's request. */
  private readonly beforeRequest = new Map<number, Array<{ where: string; tenantId: number; position: bigint }>>();

  check(recorded: RecordedEvent): Violation[] {
    const e = recorded as RecordedEvent & DuffyEvent;
    const data = e.data as { sessionId?: unknown; machineId?: unknown; tenantId?: unknown };
    const messages: string[] = [];
    const out: Violation[] = [];
    const where = `${recorded.stream}: ${e.type}`;
    const session = sessionOfStream(recorded.stream);
    if (session !== undefined && typeof data.sessionId === 'number' && data.sessionId !== session) messages.push(`${where} names session ${data.sessionId}`);
    if (typeof data.machineId === 'number') {
      // A machine's stream and its service stream share the hostname: one machine each, the first to name it there.
      // Every event about a machine is on its stream (an admin's service change on its service stream).
      const host = (SERVICE_EVENTS.has(e.type) ? /^service-(.*)$/ : /^machine-(.*)$/).exec(recorded.stream)?.[1];
      if (host === undefined) messages.push(`${where} names machine ${data.machineId} outside that machine's stream`);
      else {
        const own = this.streamIds.get(`machine-${host}`);
        // A host name registered again once an admin retired its machine for good: the stream's machine is the new one.
        const again = e.type === 'MachineRegistered' && own !== undefined && own !== data.machineId && this.retired.has(own) && !this.machineStreams.has(data.machineId);
        if (again) {
          this.streamIds.set(`machine-${host}`, data.machineId);
          this.machineStreams.set(data.machineId, `machine-${host}`);
        } else if (own === undefined) {
          const elsewhere = this.machineStreams.get(data.machineId);
          if (elsewhere !== undefined) messages.push(`${where} names machine ${data.machineId}, which is ${elsewhere}'s`);
          else {
            this.streamIds.set(`machine-${host}`, data.machineId);
            this.machineStreams.set(data.machineId, `machine-${host}`);
          }
        } else if (own !== data.machineId) messages.push(`${where} names machine ${data.machineId}, the stream's machine is ${own}`);
      }
    }
    if (typeof data.tenantId === 'number' && recorded.stream.startsWith('tenant-')) {
      const own = this.streamIds.get(recorded.stream);
      if (own === undefined) this.streamIds.set(recorded.stream, data.tenantId);
      else if (own !== data.tenantId) messages.push(`${where} names tenant ${data.tenantId}, the stream's tenant is ${own}`);
    }
    if (e.type === 'MachineServiceChanged' && e.data.service === 'retired') this.retired.add(e.data.machineId);
    if (e.type === 'MachineReserved') this.reservedFor(e.data.sessionId).add(e.data.machineId);
    // The machines a session shows: each one reserved for it (before or after, in the same append).
    if (e.type === 'SessionStarted' || e.type === 'ReplacementReserved') this.shown.push({ where, sessionId: e.data.sessionId, machineIds: e.data.machineIds, position: recorded.position });
    if (e.type === 'MachineRequested' && this.sessionTenants.has(e.data.sessionId)) {
      messages.push(`${where} requests session ${e.data.sessionId} again (tenant ${e.data.tenantId}; the session is tenant ${this.sessionTenants.get(e.data.sessionId)}'s)`);
    } else if (e.type === 'MachineRequested') {
      this.sessionTenants.set(e.data.sessionId, e.data.tenantId);
      // Written before their request: a ledger of appends that were not yet atomic, on KurrentDB, may order them so.
      for (const early of this.beforeRequest.get(e.data.sessionId) ?? []) {
        for (const message of this.sameTenant(early.where, e.data.sessionId, early.tenantId, e.data.tenantId)) out.push({ invariant: 'ids', message, positions: [early.position] });
      }
      this.beforeRequest.delete(e.data.sessionId);
    } else if (typeof data.sessionId === 'number' && typeof data.tenantId === 'number') {
      const requester = this.sessionTenants.get(data.sessionId);
      if (requester !== undefined) messages.push(...this.sameTenant(where, data.sessionId, data.tenantId, requester));
      else {
        const early = this.beforeRequest.get(data.sessionId) ?? [];
        early.push({ where, tenantId: data.tenantId, position: recorded.position });
        this.beforeRequest.set(data.sessionId, early);
      }
    }
    for (const message of messages) out.push({ invariant: 'ids', message, positions: [recorded.position] });
    return out;
  }

  /**
   * Once every event is read: what named a session that no event requested (nobody holds what it reserved), and the
   * machines a session shows that were never reserved for it (the API lists a session's nodes from those).
   */
  finish(): Violation[] {
    const never = [...this.beforeRequest].flatMap(([sessionId, early]) => early.map((x) => ({ invariant: 'ids' as const, message: `${x.where} for session ${sessionId}, which was never requested`, positions: [x.position] })));
    const unreserved = this.shown.flatMap((x) => {
      const missing = x.machineIds.filter((id) => !this.reserved.get(x.sessionId)?.has(id));
      return missing.length === 0 ? [] : [{ invariant: 'ids' as const, message: `${x.where} shows machine ${missing.join(', ')}, never reserved for session ${x.sessionId}`, positions: [x.position] }];
    });
    return [...never, ...unreserved];
  }

  private reservedFor(sessionId: number): Set<number> {
    let machines = this.reserved.get(sessionId);
    if (!machines) this.reserved.set(sessionId, (machines = new Set()));
    return machines;
  }

  private sameTenant(where: string, sessionId: number, tenantId: number, requester: number): string[] {
    return requester === tenantId ? [] : [`${where} for session ${sessionId} names tenant ${tenantId}, the session is tenant ${requester}'s`];
  }
}
