import type { BeforeApplicationShutdown } from '@nestjs/common';
import { CommandHandler, type ICommandHandler } from '@nestjs/cqrs';
import { Metrics } from '../../adapters/metrics.js';
import { Catalog } from '../catalog.js';
import { waitingCallersAtMost } from '../../config/config.js';
import { RequestSessionCommand } from '../commands.js';
import { decideLeaveQueue, decideRequestSession, refusalAfterWait } from '../../domain/decide.js';
import { DomainError, refuse } from '../../domain/errors.js';
import { Ledger } from '../ledger.service.js';
import { SessionLifecycle, metaFor } from '../session-lifecycle.js';
import { type Session, handedOver } from '../../domain/world.js';
import { WaitingQueue } from '../queue.service.js';

const CALLER_GONE = 'the caller went away before the machines were handed over';
/** Why a stop takes a waiting request out of the queue: its answer is a 503, to be asked again. */
const STOPPING = 'Duffy is stopping; ask again';

/**
 * POST /sessions: decide on the World, record the whole request in one append, then answer once the machines are
 * handed over (playbooks may run first), or once the fair-share queue served or gave up on a waiting request.
 */
@CommandHandler(RequestSessionCommand)
export class RequestSessionHandler implements ICommandHandler<RequestSessionCommand>, BeforeApplicationShutdown {
  /** Sessions whose caller this process is answering: waiting in the queue, or in hand-over. */
  private readonly answering = new Set<number>();
  /** Requests that may wait, being decided: not yet among `answering`. */
  private joining = 0;
  private stopping = false;
  /** The stop has let its callers go, or tried to: a caller still held (the ledger refused the write, a full disk) is answered now. */
  private letGoDone = false;
  private readonly wakeOnStop = new Set<() => void>();

  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
    private readonly sessions: SessionLifecycle,
    private readonly metrics: Metrics,
    private readonly queue: WaitingQueue,
  ) {}

  async execute(cmd: RequestSessionCommand): Promise<Session> {
    const stop = this.metrics.allocation.startTimer();
    // A caller that hung up (a Jenkins abort) is no refusal: counted as `capacity` it would page for a shortage.
    let gone = false;
    const stopWatching = cmd.onCallerGone?.(() => {
      gone = true;
    });
    try {
      const session = await this.request(cmd);
      stop({ outcome: 'served' });
      return session;
    } catch (err) {
      stop({ outcome: gone ? 'cancelled' : err instanceof DomainError ? err.kind : 'error' });
      throw err;
    } finally {
      stopWatching?.();
    }
  }

  private async request(cmd: RequestSessionCommand): Promise<Session> {
    if (cmd.tenantId !== cmd.actor.tenant.id && !cmd.actor.tenant.isAdmin) refuse('forbidden', "can't create session for other tenant");
    // Each caller waiting in the queue holds a connection: past half of them, a request is served now or not at all,
    // so the releases that free machines keep the other half. Those on their way in count too.
    const waiting = cmd.waitSeconds ? this.waitingCallers() + this.joining : 0;
    const full = waiting >= waitingCallersAtMost(this.catalog.settings);
    if (cmd.waitSeconds && !full) this.joining += 1;
    let sessionId = 0;
    try {
      await this.ledger.decide((world, inFlight) => {
        sessionId = inFlight.lastSessionId() + 1;
        // Machines the queue holds for an urgent request are held from this one too, as from a later waiting one.
        const heldFrom = this.queue.heldFromNewRequest(world, cmd.tenantId, this.ledger.clock.nowMs());
        const view = heldFrom ? { ...inFlight, busy: (id: number) => inFlight.busy(id) || heldFrom(id) } : inFlight;
        return decideRequestSession(
          world,
          this.catalog.profiles,
          this.catalog.defaults,
          { sessionId, tenantId: cmd.tenantId, specs: cmd.specs, now: this.ledger.clock.now(), contextualize: (pool) => this.catalog.pool(pool)?.contextualize ?? false, waitSeconds: full ? undefined : cmd.waitSeconds, askedBy: cmd.actor.tenant.id },
          view,
        );
      }, metaFor(cmd.actor));
    } catch (err) {
      // Only what waiting could have served: a request no wait can serve is an invalid one (422), as it is otherwise.
      if (full && err instanceof DomainError && err.kind === 'capacity') {
        refuse('unavailable', `${err.message}; not waiting: ${waiting} callers wait in the queue already, half the connections Duffy takes (DUFFY_MAX_CONNECTIONS), the rest kept for releases; ask again shortly`);
      }
      throw err;
    } finally {
      if (cmd.waitSeconds && !full) this.joining -= 1;
    }
    this.answering.add(sessionId);
    try {
      return await this.answer(sessionId, cmd);
    } finally {
      this.answering.delete(sessionId);
    }
  }

  /** This process's callers whose request waits in the queue. */
  private waitingCallers(): number {
    let n = 0;
    for (const id of this.answering) if (this.ledger.world.sessions.get(id)?.status === 'waiting') n += 1;
    return n;
  }

  /**
   * Duffy is stopping: its callers are answered now (a stop must not wait for a queue's wait or a hand-over's
   * playbooks): a waiting request leaves the queue, a hand-over under way ends and its machines are released by
   * the next process. Both answer 503, to be asked again.
   */
  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    const reasons = { waiting: STOPPING, handover: `${STOPPING} (it stopped before the machines were handed over)` };
    await Promise.allSettled([...this.answering].map((id) => this.sessions.letGo(id, reasons, 'shutdown')));
    // Whatever could not be written (a full disk) is let go by the next process at its start; the stop waits for no wait or hand-over.
    this.letGoDone = true;
    for (const wake of this.wakeOnStop) wake();
  }

  /** `wait`, or `onStop` once the stop has let its callers go. Its waker goes with it: a request leaves nothing behind. */
  private async unlessStopped<T>(wait: Promise<T>, onStop: T): Promise<T> {
    if (this.letGoDone) return onStop;
    let wake!: () => void;
    const stopped = new Promise<T>((resolve) => (wake = () => resolve(onStop)));
    this.wakeOnStop.add(wake);
    try {
      return await Promise.race([wait, stopped]);
    } finally {
      this.wakeOnStop.delete(wake);
    }
  }

  private async answer(sessionId: number, cmd: RequestSessionCommand): Promise<Session> {
    const world = this.ledger.world;
    if (world.sessions.get(sessionId)!.status === 'waiting') {
      // The queue serves it in fair-share order, or rejects it when its time is up, or it leaves when the caller does.
      const stopListening = cmd.onCallerGone?.(() => void this.callerGoneWhileWaiting(sessionId, cmd).catch(() => undefined));
      // The refusal as things stood when it left (the World right after that event): a change delivered with it, a
      // reactivation, must not give the answer another kind than its words.
      let whenLeft: ReturnType<typeof refusalAfterWait> | undefined;
      const left = () => {
        const s = world.sessions.get(sessionId)!;
        if (s.status === 'waiting') return false;
        if (s.status !== 'active') whenLeft ??= refusalAfterWait(world, this.catalog.defaults, this.catalog.profiles, s);
        return true;
      };
      await this.unlessStopped(this.ledger.until(left, (cmd.waitSeconds + 30) * 1000).catch(() => undefined), undefined);
      stopListening?.();
      if (this.stopping && world.sessions.get(sessionId)!.status === 'waiting') refuse('unavailable', `can't reserve nodes: ${STOPPING}`);
      if (world.sessions.get(sessionId)!.status === 'waiting') {
        // Its wait is over by this handler's own timer while the queue still holds it (its passes did not take it out:
        // they failed, or the clock it reads was behind): it leaves the queue before its caller is refused, or the queue
        // would later serve it to nobody and its machines stay held for a whole lease.
        const reason = `waited ${cmd.waitSeconds} s: ${world.sessions.get(sessionId)!.queue?.reason ?? 'no capacity'}`;
        await this.ledger.decide((w) => decideLeaveQueue(w.sessions.get(sessionId)!, reason, this.ledger.clock.now()), metaFor(cmd.actor)).catch(() => undefined);
      }
      const s = world.sessions.get(sessionId)!;
      if (s.status !== 'active') {
        // Left because no wait can serve it any more (its tenant retired, its quota lowered, machines retired): the
        // refusal a new request for it gets, so a CLI tells "ask again later" from "asking again cannot help".
        // Taken out by the stop; one that left for its own reason as the stop began is answered for that reason.
        if (this.stopping && s.rejection === STOPPING) refuse('unavailable', `can't reserve nodes: ${STOPPING}`);
        // No wait can serve it now (retired, quota lowered since it left): that; else the refusal of its leaving.
        const now = refusalAfterWait(world, this.catalog.defaults, this.catalog.profiles, s);
        const { kind, message } = now.kind === 'capacity' && whenLeft ? whenLeft : now;
        refuse(kind, message);
      }
    }
    return this.handedOver(sessionId, cmd);
  }

  /**
   * The caller hung up while its request waited: it leaves the queue; or, served as it hung up (the leave then
   * writes nothing), the session ends: its answer reaches nobody, and nobody would give its machines back.
   */
  private async callerGoneWhileWaiting(sessionId: number, cmd: RequestSessionCommand): Promise<void> {
    await this.ledger.decide(
      (world) => decideLeaveQueue(world.sessions.get(sessionId)!, `cancelled: ${cmd.actor.tenant.name}'s client went away while waiting`, this.ledger.clock.now()),
      metaFor(cmd.actor),
    );
    if (this.ledger.world.sessions.get(sessionId)?.status === 'active') await this.sessions.end(sessionId, 'failed', null, CALLER_GONE);
  }

  /**
   * A 201 hands over machines that are ready to use: wait (bounded) while playbooks provision and contextualize
   * them. A session that cannot be served in time is ended, so nothing leaks, and answered 503 with the cause.
   */
  private async handedOver(sessionId: number, cmd: RequestSessionCommand): Promise<Session> {
    const world = this.ledger.world;
    const session = world.sessions.get(sessionId)!;
    const done = () => {
      const s = world.sessions.get(sessionId)!;
      return s.status !== 'active' || handedOver(world, s);
    };
    const timeoutMs = Math.max(...session.machineIds.map((id) => this.catalog.pool(world.machines.get(id)!.pool)!['handover-timeout'])) * 1000;
    // A caller that hangs up during the hand-over never learns the session: it ends, not held for a whole lease.
    const stopListening = done() ? undefined : cmd.onCallerGone?.(() => void this.sessions.end(sessionId, 'failed', null, CALLER_GONE).catch(() => undefined));
    const inTime =
      done() ||
      (await this.unlessStopped(
        this.ledger.until(done, timeoutMs).then(
          () => true,
          () => false,
        ),
        true,
      ));
    stopListening?.();
    if (this.stopping && !done()) refuse('unavailable', `can't provision nodes: ${STOPPING} (it stopped before the machines were handed over)`);
    let s = world.sessions.get(sessionId)!;
    // Its expiry set in the past during the hand-over (the reconciler's pass, every 5 s, may not have come yet):
    // the lease is over, so it ends now and the caller gets the 409 below, never a 201 for an expired session.
    if (inTime && s.status === 'active' && Date.parse(s.expiresAt) <= this.ledger.clock.nowMs()) s = await this.sessions.end(sessionId, 'expired', null);
    if (inTime && s.status === 'active') return s;
    if (!inTime) await this.sessions.end(sessionId, 'failed', null, 'provisioning did not finish in time');
    const ended = world.sessions.get(sessionId)!;
    // Not Duffy's trouble, nothing to retry: the tenant was retired while its machines were being handed over.
    if (ended.releaseReason === 'tenant-retired') return refuse('forbidden', `tenant ${world.tenants.get(ended.tenantId)?.name ?? ended.tenantId} was retired before the machines were handed over`);
    // Nor when a client ended it (a release, an expiry set in the past): the request lost to another, a 409.
    if (ended.releaseReason !== 'failed' && ended.releaseReason !== null) return refuse('conflict', `can't provision nodes: the session was ended (${ended.releaseReason}) before its machines were handed over`);
    return refuse('unavailable', `can't provision nodes: ${ended.failure ?? 'provisioning did not finish in time'}`);
  }
}
