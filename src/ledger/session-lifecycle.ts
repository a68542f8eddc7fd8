import { Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { EventMetadata } from '../eventstore/event-store.port.js';
import { Catalog } from './catalog.js';
import type { Actor } from './commands.js';
import { type Write, decideEndSession, decideRecycle, decideRequestSession, decideSettleSession, visibleSession } from './decide.js';
import { refuse } from './errors.js';
import { Ledger, type WriteOutcome } from './ledger.service.js';
import type { DuffyEvent, NodeSpec, ReleaseReason } from './events.js';
import type { Session, World } from './world.js';

export const metaFor = (actor: Actor | null, extra: EventMetadata = {}): EventMetadata => ({
  actor: actor?.tenant.name ?? 'duffy',
  correlationId: actor?.requestId ?? randomUUID(),
  at: new Date().toISOString(),
  ...extra,
});

export const now = () => new Date().toISOString();

export function failOnConflict(outcomes: WriteOutcome[]): void {
  if (outcomes.some((o) => !o.ok)) refuse('conflict', 'the ledger changed under this request too often; try again');
}

/**
 * Requests in flight in this process. Promises made here are invisible to the World until written,
 * so the next decision must not hand out the same machine or quota meanwhile.
 */
@Injectable()
export class InFlight {
  readonly machines = new Set<number>();
  readonly quota = new Map<number, number>();
  readonly sessions = new Set<number>();
  private lastSessionId = 0;
  private readonly queues = new Map<string, Promise<unknown>>();

  /**
   * Runs `fn` after every earlier `fn` of the same key. Writes to one tenant's stream go one at a time in this
   * process, so its expected revision is fresh and same-tenant requests do not lose races to each other.
   */
  serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(key) ?? Promise.resolve();
    const next = previous.then(fn, fn);
    const settled = next.catch(() => undefined);
    this.queues.set(key, settled);
    void settled.then(() => {
      if (this.queues.get(key) === settled) this.queues.delete(key);
    });
    return next;
  }

  nextSessionId(world: World): number {
    this.lastSessionId = Math.max(this.lastSessionId, world.lastSessionId) + 1;
    return this.lastSessionId;
  }
}

/** Ending, settling and recycling sessions: shared by done, expiry, tenant retirement and crash recovery. */
@Injectable()
export class SessionLifecycle {
  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
    private readonly inFlight: InFlight,
  ) {}

  /**
   * Decide and write a reservation: a new session, or a `waiting` one the queue serves now. Callers run it
   * under `InFlight.serial('tenant:<id>')`, so one tenant's reservations are written one after another.
   */
  async reserve(tenantId: number, specs: NodeSpec[], meta: EventMetadata, waiting?: Session): Promise<{ sessionId: number; wanted: number; machineIds: number[] }> {
    const wanted = specs.reduce((n, s) => n + s.quantity, 0);
    for (let attempt = 1; attempt <= 8; attempt++) {
      const world = this.ledger.world;
      const sessionId = waiting?.id ?? this.inFlight.nextSessionId(world);
      // Decision and promise happen in one synchronous step: no other request can interleave.
      const plan = decideRequestSession(world, this.catalog.profiles, this.catalog.defaults, {
        sessionId,
        tenantId,
        specs,
        now: now(),
        contextualize: (pool) => this.catalog.pool(pool)?.contextualize ?? false,
        busy: (id) => this.inFlight.machines.has(id),
        pendingQuota: this.inFlight.quota.get(tenantId) ?? 0,
      });
      plan.machineIds.forEach((id) => this.inFlight.machines.add(id));
      this.inFlight.quota.set(tenantId, (this.inFlight.quota.get(tenantId) ?? 0) + wanted);
      if (!waiting) this.inFlight.sessions.add(sessionId);
      let started = false;
      try {
        // A waiting session already has its request on record; its lease starts now, not when it asked.
        const first = waiting ? [plan.claim, ...plan.reserves] : [plan.requested, plan.claim, ...plan.reserves];
        const start = waiting ? servedFromQueue(plan.started, waiting, plan.requested) : plan.started;
        const outcomes = await this.ledger.commit(first, meta);
        if (outcomes.every((o) => o.ok)) started = (await this.ledger.commit([start], meta))[0].ok;
        if (!started) {
          // Another writer won a machine, the quota or the id: undo exactly what we wrote, then decide again.
          await this.abandon(sessionId, outcomes, 'a concurrent request took a machine first', meta);
          await this.ledger.catchUp();
        }
      } finally {
        plan.machineIds.forEach((id) => this.inFlight.machines.delete(id));
        const left = (this.inFlight.quota.get(tenantId) ?? wanted) - wanted;
        if (left > 0) this.inFlight.quota.set(tenantId, left);
        else this.inFlight.quota.delete(tenantId);
        if (!waiting) this.inFlight.sessions.delete(sessionId);
      }
      // From here the ledger holds the whole reservation; the promises above are no longer needed.
      if (started) return { sessionId, wanted, machineIds: plan.machineIds };
      if (waiting && this.ledger.world.sessions.get(sessionId)?.status !== 'waiting') break;
    }
    return refuse('conflict', 'too many concurrent requests for the same machines; try again');
  }


  /** Compensate a half-written request: only the writes that succeeded, at the revisions they produced. */
  async abandon(sessionId: number, outcomes: WriteOutcome[], reason: string, meta: EventMetadata): Promise<void> {
    const at = now();
    const undo: Write[] = [];
    for (const o of outcomes) {
      if (!o.ok) continue;
      const event = o.write.events[0];
      const expected = o.result.nextExpectedRevision;
      if (event.type === 'MachineReserved') {
        undo.push({ stream: o.write.stream, expected, events: [{ type: 'MachineReservationCancelled', data: { machineId: event.data.machineId, sessionId, reason, at } }] });
      } else if (event.type === 'QuotaClaimed') {
        undo.push({ stream: o.write.stream, expected, events: [{ type: 'QuotaReturned', data: { tenantId: event.data.tenantId, sessionId, count: event.data.count, at } }] });
      } else if (event.type === 'MachineRequested') {
        undo.push({ stream: o.write.stream, expected, events: [{ type: 'SessionRejected', data: { sessionId, reason, at } }] });
      }
    }
    const results = await this.ledger.commit(undo, meta);
    // A compensation can only conflict if something else touched the stream; settle() repairs that later.
    if (results.some((r) => !r.ok)) await this.settleNow(sessionId, meta);
  }

  async end(sessionId: number, reason: ReleaseReason, actor: Actor | null, detail?: string): Promise<Session> {
    const meta = metaFor(actor);
    const outcomes = await this.ledger.decideAndCommit((world) => {
      const s = actor ? visibleSession(world, sessionId, actor.tenant) : (world.sessions.get(sessionId) ?? refuse('not_found', `session ${sessionId} not found`));
      const w = decideEndSession(s, reason, now(), detail);
      return w ? [w] : [];
    }, meta);
    failOnConflict(outcomes);
    await this.settle(sessionId, meta);
    return this.ledger.world.sessions.get(sessionId)!;
  }

  /** Release what an ended session still holds, then recycle machines whose policy needs no playbook. */
  /** Under the tenant's turn: the quota goes back to its stream (see InFlight.serial). */
  async settle(sessionId: number, meta: EventMetadata): Promise<void> {
    const tenantId = this.ledger.world.sessions.get(sessionId)?.tenantId;
    await this.inFlight.serial(`tenant:${tenantId}`, () => this.settleNow(sessionId, meta));
  }

  /** For callers already holding the tenant's turn (taking it again would wait for themselves). */
  private settleNow(sessionId: number, meta: EventMetadata) {
    return this.ledger.decideAndCommit((world) => {
      const s = world.sessions.get(sessionId);
      return s ? decideSettleSession(world, s, now(), (pool) => this.recyclesInstantly(pool)) : [];
    }, meta);
  }

  /** A pool that neither puts keys on machines nor collects artifacts and reuses them needs no release playbook. */
  recyclesInstantly(poolName: string): boolean {
    const pool = this.catalog.pool(poolName);
    return !!pool && pool['release-policy'] === 'reuse' && !pool.contextualize && !pool['collect-artifacts'];
  }

  async recycleIfInstant(machineId: number, meta: EventMetadata): Promise<void> {
    await this.ledger.decideAndCommit((world) => {
      const m = world.machines.get(machineId);
      if (!m || !this.recyclesInstantly(m.pool)) return [];
      const w = decideRecycle(m, 'reuse', now());
      return w ? [w] : [];
    }, meta);
  }
}


/** SessionStarted for a session served from the queue: at its revision, with the lease counted from now. */
function servedFromQueue(started: Write, waiting: Session, requested: Write): Write {
  const expiresAt = (requested.events[0] as Extract<DuffyEvent, { type: 'MachineRequested' }>).data.expiresAt;
  const event = started.events[0] as Extract<DuffyEvent, { type: 'SessionStarted' }>;
  return { ...started, expected: waiting.revision, events: [{ ...event, data: { ...event.data, expiresAt } }] };
}
