import { Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { decideAbandonRequest, decideCancelOrphan } from './decide.js';
import { InFlight, SessionLifecycle, metaFor } from './session-lifecycle.js';
import { Ledger } from './ledger.service.js';
import { sessionIsLive } from './world.js';

/** A request still `requested` after this long was cut short (crash, lost instance): undo it. */
const ORPHAN_AFTER_MS = 30_000;

/**
 * Drives the ledger back to a settled state: expires overdue sessions, finishes releases a crash interrupted,
 * undoes orphaned half-written requests. Every step is a decider guarded by revisions, so running it twice,
 * or on two instances at once, writes each fact once.
 */
@Injectable()
export class Reconciler implements OnApplicationShutdown {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private readonly log = new Logger('Reconciler');

  constructor(
    private readonly ledger: Ledger,
    private readonly inFlight: InFlight,
    private readonly sessions: SessionLifecycle,
  ) {}

  start(intervalMs = 5_000): void {
    this.timer = setInterval(() => void this.tick(), intervalMs);
    this.timer.unref();
    void this.tick();
  }

  tick(nowMs = Date.now()): Promise<void> {
    this.running ??= this.pass(nowMs)
      .catch((err) => this.log.error(`reconcile pass failed: ${String(err)}`))
      .finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(nowMs: number): Promise<void> {
    const world = this.ledger.world;
    const meta = metaFor(null, { reason: 'reconcile' });
    for (const s of [...world.sessions.values()]) {
      if (s.status === 'requested' && !this.inFlight.sessions.has(s.id) && nowMs - Date.parse(s.createdAt) > ORPHAN_AFTER_MS) {
        await this.ledger.decideAndCommit((w) => decideAbandonRequest(w, s.id, 'request interrupted before it completed', new Date(nowMs).toISOString()), meta);
      } else if (s.status === 'active' && Date.parse(s.expiresAt) <= nowMs) {
        await this.sessions.end(s.id, 'expired', null);
      } else if (!sessionIsLive(s) && this.holdsAnything(s.id, s.tenantId, s.machineIds)) {
        await this.sessions.settle(s.id, meta);
      }
    }
    for (const m of [...world.machines.values()]) {
      if (m.sessionId !== null && !this.inFlight.sessions.has(m.sessionId) && nowMs - Date.parse(m.reservedAt ?? '') > ORPHAN_AFTER_MS) {
        const s = world.sessions.get(m.sessionId);
        // A reservation whose session never got written (or whose id another instance took) belongs to nobody.
        if (!s || s.tenantId !== m.tenantId) {
          await this.ledger.decideAndCommit((w) => decideCancelOrphan(w, m.id, new Date(nowMs).toISOString()), meta);
        }
      }
      if (m.state === 'deprovisioning') {
        await this.sessions.recycleIfInstant(m.id, meta);
      }
    }
  }

  private holdsAnything(sessionId: number, tenantId: number, machineIds: number[]): boolean {
    const w = this.ledger.world;
    return machineIds.some((id) => w.machines.get(id)?.sessionId === sessionId) || (w.tenants.get(tenantId)?.claims.has(sessionId) ?? false);
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }
}
