import { SERVICE_EVENTS, machinesAsked } from '../domain/events.js';
import { Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { Command, CommandHandler, type ICommand, type ICommandHandler, type IEvent, Saga, ofType } from '@nestjs/cqrs';
import { type Observable, asapScheduler, auditTime, filter, map } from 'rxjs';
import { Catalog } from './catalog.js';
import { decideLeaveQueue, decideRequestSession, freeMachines, isRefusal, mayOverflow, neverServable, overflowAt } from '../domain/decide.js';
import { DomainError } from '../domain/errors.js';
import { Ledger, LedgerEvent } from './ledger.service.js';
import { metaFor } from './session-lifecycle.js';
import { type Session, type World, recentMachineTimeMs } from '../domain/world.js';
import { HeldMachines, type WaitingRequest, fairOrder, holdsMachines } from '../domain/fair-queue.js';
import { machinesToHold } from '../domain/policy.js';

/** Waiting sessions in the order they will be tried: urgent ones first, then less recent machine time first (fair share). */
export function queueOrder(world: World, nowMs: number): Session[] {
  const waiting = [...world.openSessions].map((id) => world.sessions.get(id)!).filter((s) => s.status === 'waiting');
  const order = fairOrder(waiting.map(asWaitingRequest), (tenantId) => recentUsage(world, tenantId, nowMs), nowMs);
  return order.map((r) => world.sessions.get(r.sessionId)!);
}

const asWaitingRequest = (s: Session): WaitingRequest => ({
  sessionId: s.id,
  tenantId: s.tenantId,
  quantity: machinesAsked(s.specs),
  enqueuedAt: Date.parse(s.queue!.since),
  until: Date.parse(s.queue!.until),
});

const recentUsage = (world: World, tenantId: number, nowMs: number) => {
  const t = world.tenants.get(tenantId);
  return t ? recentMachineTimeMs(t, nowMs) : 0;
};

export class ServeWaitingRequests extends Command<void> {}

/** A refusal as the reason a request waits (its "can't reserve nodes: " said once, by the answer at the end). */
const waitReason = (refusal: string) => refusal.replace(/^can't reserve nodes: /, '');
/** The reason a request joined the queue with. */
export const joinedFor = (s: Session) => s.queue?.reason ?? '';

/**
 * Serves waiting requests whenever capacity may have freed (any ledger event about a machine) and on a timer
 * (to reject requests whose wait is over). A request that still does not fit is passed over, so smaller ones
 * behind it may be served (backfill); the order among those that fit is fair share.
 */
@Injectable()
export class WaitingQueue implements OnApplicationShutdown {
  private timer?: NodeJS.Timeout;
  /** A pass at the next instant a waiting request may overflow or its wait is over (see `wakeForDeadlines`). */
  private overflowWake?: NodeJS.Timeout;
  private running?: Promise<void>;
  private again = false;
  private readonly log = new Logger('WaitingQueue');
  /**
   * Why each waiting request was not served at the last pass. What it waits for may change while it waits (its
   * tenant's quota lowered, the machines it wanted freed but another kind missing): the reason it joined with would
   * send an operator after a shortage that is gone.
   */
  private readonly refusedFor = new Map<number, string>();
  /**
   * The machines the last pass held for urgent requests that did not fit (HeldMachines). A request that arrives
   * between passes is kept from them as the queue's own later requests are: served at once past the queue, it took
   * the machine an urgent pair held, and the pair never saw two free at once.
   */
  private held = new HeldMachines();

  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
  ) {}

  start(intervalMs = 1000): void {
    this.timer = setInterval(() => this.poke(), intervalMs);
    this.timer.unref();
  }

  poke(): void {
    if (!this.timer) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.pass()
      .catch((err) => this.log.error(`queue pass failed: ${String(err)}`))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.poke();
        }
      });
  }

  private async pass(): Promise<void> {
    const nowMs = this.ledger.clock.nowMs();
    const world = this.ledger.world;
    const order = queueOrder(world, nowMs);
    // Requests leave the queue when their wait is over, when their tenant was retired (also one that joined it while
    // the retirement was on its way), or when its quota was lowered, or its pools' machines retired, under what they
    // ask for (they could never fit).
    for (const s of order) {
      // Served or cancelled while this loop waited for an earlier one's leaving: no longer in the queue.
      if (s.status !== 'waiting') continue;
      const why = this.mustLeave(world, s, nowMs);
      if (why === undefined) continue;
      await this.ledger.decide((w) => decideLeaveQueue(w.sessions.get(s.id)!, why, new Date(nowMs).toISOString()), metaFor(null, { process: 'queue', sessionId: s.id }));
    }
    // Every decision of this pass is taken now, synchronously and in fair-share order (each counts the ones before
    // it as in flight), so capacity freed later in the pass cannot jump the order. An urgent request that does not
    // fit holds machines from the requests after it of tenants that used as much or more lately (HeldMachines).
    const held = new HeldMachines();
    const stillWaiting = order.filter((s) => this.ledger.world.sessions.get(s.id)?.status === 'waiting');
    const attempts = stillWaiting.map((s) =>
        this.ledger.decide(
          (world, inFlight) => {
            const waiting = world.sessions.get(s.id)!;
            if (waiting.status !== 'waiting') return [];
            const contextualize = (pool: string) => this.catalog.pool(pool)?.contextualize ?? false;
            const at = this.ledger.clock.nowMs();
            const usage = recentUsage(world, s.tenantId, at);
            const heldFrom = held.heldFrom(usage);
            const view = held.size === 0 ? inFlight : { ...inFlight, busy: (id: number) => inFlight.busy(id) || heldFrom(id) };
            const decision = decideRequestSession(world, this.catalog.profiles, this.catalog.defaults, { sessionId: s.id, tenantId: s.tenantId, specs: s.specs, now: new Date(at).toISOString(), contextualize, waiting }, view);
            if (isRefusal(decision) && decision.refused === 'capacity' && holdsMachines(asWaitingRequest(waiting), at)) {
              const tenantPlatform = world.tenants.get(s.tenantId)?.platform ?? inFlight.platform(s.tenantId);
              const toHold = machinesToHold({ specs: s.specs, pools: this.catalog.profiles, free: (pool) => freeMachines(world, pool, view.busy), tenantPlatform, overflow: mayOverflow({ waiting }, at) });
              held.hold(toHold.map((m) => m.id), usage);
            }
            return decision;
          },
          metaFor(null, { process: 'queue', sessionId: s.id }),
        ),
      );
    const outcomes = await Promise.allSettled(attempts);
    this.held = held;
    this.refusedFor.clear();
    outcomes.forEach((r, i) => {
      if (r.status === 'rejected' && r.reason instanceof DomainError) this.refusedFor.set(stillWaiting[i].id, waitReason(r.reason.message));
    });
    for (const r of outcomes) {
      if (r.status === 'rejected' && !(r.reason instanceof DomainError)) throw r.reason;
    }
    this.wakeForDeadlines(this.ledger.clock.nowMs());
  }

  /**
   * A pass when the next waiting request may overflow to another family (the last share of a short wait, 5 % of
   * 4 s, falls between two of the timer's passes, and the request would leave unserved rather than overflow), or
   * when its wait is over (the timer alone answered a wait of 8 s up to a second late).
   */
  private wakeForDeadlines(nowMs: number): void {
    const world = this.ledger.world;
    let next = Infinity;
    for (const id of world.openSessions) {
      const q = world.sessions.get(id)!.queue;
      if (!q) continue;
      for (const at of [overflowAt(q), Date.parse(q.until)]) if (at > nowMs && at < next) next = at;
    }
    clearTimeout(this.overflowWake);
    this.overflowWake = next === Infinity ? undefined : setTimeout(() => this.poke(), next - nowMs).unref();
  }

  /** For a new request of this tenant: whether the last pass held a machine from it (see `held`); undefined: none held. */
  heldFromNewRequest(world: World, tenantId: number, nowMs: number): ((machineId: number) => boolean) | undefined {
    if (this.held.size === 0) return undefined;
    return this.held.heldFrom(recentUsage(world, tenantId, nowMs));
  }

  /** Why `s` waits now: the last pass's refusal, else the reason it joined the queue with. */
  reasonNow(s: Session): string {
    return this.refusedFor.get(s.id) ?? joinedFor(s);
  }

  private mustLeave(world: World, s: Session, nowMs: number): string | undefined {
    if (Date.parse(s.queue!.until) <= nowMs) return `waited until ${s.queue?.until}: ${this.whyNotNow(world, s, nowMs) ?? s.queue?.reason}`;
    return neverServable(world, this.catalog.defaults, this.catalog.profiles, s)?.reason;
  }

  /**
   * Why the request cannot be served at this instant (a quota lowered since, machines free but of another kind), not
   * why it could not when it joined the queue, which may no longer be true.
   */
  private whyNotNow(world: World, s: Session, nowMs: number): string | undefined {
    const specs = { sessionId: s.id, tenantId: s.tenantId, specs: s.specs, now: new Date(nowMs).toISOString(), contextualize: () => false, waiting: s };
    const decision = decideRequestSession(world, this.catalog.profiles, this.catalog.defaults, specs, this.ledger.inFlight);
    return isRefusal(decision) ? waitReason(decision.reason) : undefined;
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    clearTimeout(this.overflowWake);
    this.timer = undefined;
    await this.running;
  }
}

/** Events after which the queue may move: capacity freed, a request joined, a tenant retired or changed (a lower quota: requests leave). */
const FREES_CAPACITY = new Set(['MachineReleased', 'MachineReservationCancelled', 'MachineRecycled', 'MachineProvisioned', 'MachineReturnedToService', ...SERVICE_EVENTS, 'MachineRegistered', 'QuotaReturned', 'RequestQueued', 'TenantRetired', 'TenantUpdated']);

@Injectable()
export class QueueSaga {
  @Saga()
  capacityMayHaveFreed = (events$: Observable<IEvent>): Observable<ICommand> =>
    events$.pipe(
      ofType(LedgerEvent),
      filter((e) => FREES_CAPACITY.has(e.event.type)),
      // The events delivered together (a release frees machines and quota at once) make one pass.
      auditTime(0, asapScheduler),
      map(() => new ServeWaitingRequests()),
    );
}

@CommandHandler(ServeWaitingRequests)
export class ServeWaitingRequestsHandler implements ICommandHandler<ServeWaitingRequests> {
  constructor(private readonly queue: WaitingQueue) {}
  async execute(): Promise<void> {
    this.queue.poke();
  }
}
