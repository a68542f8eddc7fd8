import { Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { EventMetadata } from './ports/event-store.port.js';
import { Catalog } from './catalog.js';
import type { Actor } from './commands.js';
import { decideEndSession, decideLeaveQueue, decideRecycle, refusal, visibleSessionOrRefusal } from '../domain/decide.js';
import { needsNoReleasePlaybook } from '../domain/provisioning.decide.js';
import { Ledger } from './ledger.service.js';
import { DUFFY_ACTOR, type ReleaseReason } from '../domain/events.js';
import { type Session, handedOver } from '../domain/world.js';

/** Who and which request; the time (`at`) is stamped by Ledger.record at the append. */
export const metaFor = (actor: Actor | null, extra: EventMetadata = {}): EventMetadata => ({
  actor: actor?.tenant.name ?? DUFFY_ACTOR,
  correlationId: actor?.requestId ?? randomUUID(),
  ...extra,
});

/** Ending sessions and recycling machines: shared by done, expiry, tenant retirement and failed hand-overs. */
@Injectable()
export class SessionLifecycle {
  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
  ) {}

  /** The session's end, its machines' release and its quota's return: one decision, one append. */
  async end(sessionId: number, reason: ReleaseReason, actor: Actor | null, detail?: string): Promise<Session> {
    await this.ledger.decide(
      (world, inFlight) => {
        const s = actor ? visibleSessionOrRefusal(world, sessionId, actor.tenant) : (world.sessions.get(sessionId) ?? refusal('not_found', `session ${sessionId} not found`));
        if ('refused' in s) return s;
        return decideEndSession(world, s, { reason, now: this.ledger.clock.now(), detail, recyclesInstantly: (pool) => this.recyclesInstantly(pool) }, inFlight);
      },
      metaFor(actor),
    );
    return this.ledger.world.sessions.get(sessionId)!;
  }

  /**
   * A session whose caller is gone (a stop, the previous process's death) and that nobody was answered for: a
   * waiting one leaves the queue, one still in hand-over ends and its machines go back. Anything else stays.
   */
  async letGo(sessionId: number, reasons: { waiting: string; handover: string }, process: 'bootstrap' | 'shutdown'): Promise<void> {
    const s = this.ledger.world.sessions.get(sessionId);
    if (s?.status === 'waiting') await this.ledger.decide((w) => decideLeaveQueue(w.sessions.get(sessionId)!, reasons.waiting, this.ledger.clock.now()), metaFor(null, { process }));
    else if (s?.status === 'active' && !handedOver(this.ledger.world, s)) await this.end(sessionId, 'failed', null, reasons.handover);
  }

  recyclesInstantly(poolName: string): boolean {
    const pool = this.catalog.pool(poolName);
    return !!pool && needsNoReleasePlaybook(pool);
  }

  async recycleIfInstant(machineId: number, meta: EventMetadata): Promise<void> {
    await this.ledger.decide((world) => {
      const m = world.machines.get(machineId);
      if (!m || !this.recyclesInstantly(m.pool)) return [];
      const w = decideRecycle(m, 'reuse', this.ledger.clock.now());
      return w ? [w] : [];
    }, meta);
  }
}
