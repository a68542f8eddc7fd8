import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { EventBus } from '@nestjs/cqrs';
import { randomUUID } from 'node:crypto';
import { LedgerClock } from './ledger-clock.js';
import {
  type AppendResult,
  EVENT_STORE,
  type EventMetadata,
  FOLD_PAGE,
  type EventStore,
  type NewEvent,
  type StreamWrite,
  type RecordedEvent,
  type Subscription,
  WrongExpectedRevisionError,
  AppendTooLargeError,
} from './ports/event-store.port.js';
import { StreamHeads } from './stream-heads.js';
import { GENESIS, appendLinks } from '../audit/chain.js';
import { type Checkpoint, signedWith } from '../audit/checkpoint.js';
import { type Decision, type InFlightView, type Write, isRefusal, raise } from '../domain/decide.js';
import { type DuffyEvent, EVENT_TYPES, SERVICE_EVENTS, machinesAsked, sessionOfStream } from '../domain/events.js';
import { DomainError, refuse } from '../domain/errors.js';
import { type World, emptyWorld, evolve, addressKey, hostKey, tenantKey } from '../domain/world.js';

/** How many heads may be noted beyond those kept at the last sweep before the heads of forgotten sessions are let go. */
const HEADS_SLACK = 4096;

/** Decisions taken again after a revision conflict before the caller gets a 409. */
const DECIDE_ATTEMPTS = 5;

/** Times a decision that lost to an append of this process still in flight waits for it instead of spending an attempt. */
const OWN_LOSSES = 100;

/** How long an append that is durable may take to come back through the subscription before its caller gets a 503. */
const SEEN_TIMEOUT_MS = 30_000;

/** An event of a type this Duffy does not write: folding on past it would leave the World behind its stream's revisions. */
export class UnknownEventTypeError extends Error {}

function folded(e: RecordedEvent): RecordedEvent & DuffyEvent {
  if (!EVENT_TYPES.has(e.type)) {
    throw new UnknownEventTypeError(
      `the ledger holds an event of a type this Duffy does not know, ${JSON.stringify(e.type).slice(0, 80)} at position ${e.position} (${e.stream}@${e.revision}): ` +
        'written by a newer Duffy (run that one), or edited (check it with `duffy audit verify`)',
    );
  }
  return e as RecordedEvent & DuffyEvent;
}

/** Published on the CQRS EventBus for every event the ledger delivers, in ledger order. */
export class LedgerEvent {
  constructor(readonly event: RecordedEvent) {}
}

export type WriteOutcome = { ok: true; write: Write; result: AppendResult } | { ok: false; write: Write; error: unknown };

/** What one decision's append gave: its position, or the conflict that a fresh decision must answer. */
export type Recorded = { ok: true; position: bigint; revisions: number[] } | { ok: false; conflict: WrongExpectedRevisionError };

/** Appends made by this process that the World does not show yet (see InFlightView). */
interface PendingBatch {
  /** Per stream: the revision after this append, its last hash, and whether the in-flight view accounts for all it says. */
  streams: Map<string, { revision: number; hash: string | null; accounted: boolean }>;
  /** Machines not to be picked while it is in flight: reserved, or changing service. */
  machines: number[];
  quota: Map<number, number>;
  waiting: Map<number, number>;
  /** Hosts (by hostKey) and addresses (by addressKey) registered and API key digests given by this append: unique, but not guarded by one stream. */
  claims: Set<string>;
  sessionId: number;
  /** Per tenant, the family of the first machine this append reserves for it. */
  platforms: Map<number, string>;
  /** Whether the append landed; settled once it is known (appends chained on this one wait for it on a shared store). */
  landed: Promise<boolean>;
  settle: (landed: boolean) => void;
  /** Resolves once the append is out of the in-flight view: failed, or landed and folded into the World. */
  gone: Promise<void>;
  leave: () => void;
}

/** A promise and the function that resolves it (Node 20 has no Promise.withResolvers). */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** A decision's place in the lines of the streams it waits to write: `done` once it is answered. */
class Turn {
  readonly streams: string[] = [];
  private readonly answered = deferred();
  readonly done = this.answered.promise;
  readonly leave = this.answered.resolve;
}

/**
 * Events a decision may be written after without having seen them: ids taken, quota and queue space claimed, keys
 * given (the in-flight view counts them) and quota returned (not counted: a decision then sees the tenant holding more, never less).
 */
const ACCOUNTED = new Set<string>(['IdAllocated', 'QuotaClaimed', 'QuotaReturned', 'QueueSpaceClaimed', 'ApiKeyAssigned']);

/** How far a clock may have been stepped back (NTP) while Duffy still writes after its last signed checkpoint. */
const MAX_CLOCK_STEP_MS = 3_600_000;

/**
 * Owns the World: folds the whole ledger at start, then follows it live through one subscription, the only path
 * by which events reach the World (so nothing is applied twice).
 *
 * Decisions are taken on the World plus what this process has appended but not yet seen come back (the in-flight
 * view): machines reserved, quota claimed, stream heads. So concurrent requests in one process never pick the same
 * machine or race on a tenant's revision; a conflict means another writer (instance) got there first.
 */
@Injectable()
export class Ledger implements OnApplicationShutdown {
  readonly world: World = emptyWorld();
  private subscription?: Subscription;
  private waiters: Array<{ ready: () => boolean; resolve: () => void; abandon: (why: Error) => void }> = [];
  /** Appends waiting to be seen in the World, in position order (cheaper than a predicate per event each). */
  private positionWaiters: Array<{ position: bigint; since: number; resolve: () => void; reject: (err: Error) => void }> = [];
  /** One sweep for every append waiting to be seen, not a timer each. */
  private stallSweep?: NodeJS.Timeout;
  /** Head (revision, hash) per stream as the World knows it: the predecessor of the next chained append. */
  private readonly heads = new StreamHeads();
  private headsBound = HEADS_SLACK;
  private readonly pending = new Set<PendingBatch>();
  /** Per stream, the last decision waiting for its turn to write it (see decide). */
  private readonly lines = new Map<string, Turn>();
  /** What decisions and events are dated with: the host's clock, never stepping back. */
  readonly clock = new LedgerClock();
  /** The latest time a signed checkpoint in the ledger claims (ms): nothing appended after it may claim an earlier one. */
  private signedAt = -Infinity;
  private readonly log = new Logger('Ledger');
  /** Appends this process asked the store for: a test asserts one per request and one per release. */
  appends = 0;
  failure: unknown;

  constructor(
    @Inject(EVENT_STORE) readonly store: EventStore,
    private readonly eventBus: EventBus,
  ) {}

  private markStarted!: (position: bigint) => void;
  /** The position start() folded the ledger to (the history before this process), once it has. */
  readonly started = new Promise<bigint>((resolve) => (this.markStarted = resolve));

  async start(): Promise<void> {
    let lastPage: RecordedEvent[] = [];
    for (;;) {
      const page = await this.store.readAll(this.world.position, FOLD_PAGE);
      if (page.length === 0) break;
      for (const e of page) {
        evolve(this.world, folded(e));
        this.noteHead(e);
        this.noteSigned(e);
      }
      lastPage = page;
    }
    // The newest time is among the last events (the ledger clock dates them in order; older ledgers nearly so).
    this.noteLastWritten(Math.max(...lastPage.map((e) => Date.parse(String(e.metadata.at))).filter(Number.isFinite)));
    this.markStarted(this.world.position);
    this.subscription = this.store.subscribeAll(
      this.world.position,
      (e) => this.apply(e),
      (err) => {
        this.failure = err;
        this.log.error(`ledger subscription stopped: ${String(err)}`);
      },
    );
  }

  private noteHead(e: RecordedEvent): void {
    this.heads.set(e.stream, e.revision, e.metadata.hash as string | undefined);
    if (this.heads.size > this.headsBound) this.forgetEndedHeads();
  }

  /** The key this server signs checkpoints with (CheckpointService gives it before the start): only its checkpoints date what follows. */
  checkpointKey?: string;

  /**
   * The time of a checkpoint this server signed is the floor of what it writes next. Not another's (a key made up
   * by whoever edited the ledger), nor one more than MAX_CLOCK_STEP_MS ahead of this host's clock: an edit could
   * otherwise date every later event 2099 (`verify` names such a checkpoint; a clock that far behind is the host's
   * fault, which verify shows too).
   */
  private noteSigned(e: RecordedEvent): void {
    if (e.type !== 'CheckpointPublished') return;
    const cp = e.data as unknown as Checkpoint;
    const time = Date.parse(String(cp.time));
    if (!(time > this.signedAt) || !signedWith(cp, this.checkpointKey)) return;
    if (time > Date.now() + MAX_CLOCK_STEP_MS) {
      this.log.warn(`the checkpoint at position ${e.position} is dated ${String(cp.time)}, more than an hour ahead of this host's clock: not taken as the time to write after (check the ledger with \`duffy audit verify\`, and the clock)`);
      return;
    }
    this.signedAt = time;
    this.clock.notBefore(time);
  }

  /**
   * A start on a host clock set back since the last events were written (NTP stepping it at boot, a VM restored from a
   * snapshot), before this server signed a checkpoint after them, goes on from the newest time its ledger holds, as a
   * running server would: otherwise a session begun before the restart ended before it began and its lease ran that
   * much longer. Within the same hour as a signed checkpoint's time (an edit dating an event 2099 must not move it).
   */
  private noteLastWritten(at: number): void {
    if (!Number.isFinite(at)) return;
    if (at > Date.now() + MAX_CLOCK_STEP_MS) {
      this.log.warn(`the ledger's newest event is dated ${new Date(at).toISOString()}, more than an hour ahead of this host's clock: Duffy dates what it writes from the host's clock (check the clock, and the ledger with \`duffy audit verify\`)`);
      return;
    }
    this.clock.notBefore(at);
  }

  /**
   * A host clock set back (NTP stepping a clock that ran ahead) must not date Duffy's own facts before a checkpoint
   * it signed: the audit reads that as a back-dated forgery. Until the clock is past it again, they claim its time.
   */
  private notBeforeSigned(writes: Write[]): Write[] {
    if (!(this.signedAt > Date.now())) return writes;
    const floor = new Date(this.signedAt).toISOString();
    const early = (at: unknown) => typeof at === 'string' && Date.parse(at) < this.signedAt;
    return writes.map((w) => ({ ...w, events: w.events.map((e) => (early((e.data as { at?: unknown }).at) ? { ...e, data: { ...e.data, at: floor } } : e)) as Write['events'] }));
  }

  /**
   * A session the World let go of is never appended to again: its stream's head goes too, so memory does not grow
   * with history. (Should a head be missing when an append needs it, record() reads it from the store.)
   */
  private forgetEndedHeads(): void {
    for (const name of this.heads.streams()) {
      const id = sessionOfStream(name);
      if (id !== undefined && !this.world.sessions.has(id)) this.heads.delete(name);
    }
    this.headsBound = this.heads.size + HEADS_SLACK;
  }

  /** Heads this instance does not know (never seen, or let go of), from the store. */
  private async readHeads(writes: Write[]): Promise<void> {
    for (const w of writes) {
      if (w.expected === 'no_stream') continue;
      const events = await this.store.readStream(w.stream, w.expected === 'any' ? 0 : (w.expected as number));
      const head = w.expected === 'any' ? events.at(-1) : events.find((e) => e.revision === w.expected);
      if (head) this.noteHead(head);
    }
  }

  private apply(e: RecordedEvent): void {
    evolve(this.world, folded(e));
    this.noteHead(e);
    this.noteSigned(e);
    let seen = 0;
    while (seen < this.positionWaiters.length && this.positionWaiters[seen].position <= e.position) this.positionWaiters[seen++].resolve();
    if (seen > 0) this.positionWaiters.splice(0, seen);
    if (this.waiters.length > 0) {
      this.waiters = this.waiters.filter((w) => (w.ready() ? (w.resolve(), false) : true));
    }
    this.eventBus.publish(new LedgerEvent(e));
  }

  /** Resolves once the World satisfies `ready` (checked after every applied event), or rejects after the timeout. */
  until(ready: () => boolean, timeoutMs = 10_000): Promise<void> {
    if (ready()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error('the ledger did not catch up in time'));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const abandon = (why: Error) => {
        clearTimeout(timer);
        reject(why);
      };
      this.waiters.push({ ready, resolve: done, abandon });
    });
  }

  /** Resolves once the World holds the event at `position` (it arrives through the one subscription). */
  private seen(position: bigint): Promise<void> {
    if (this.world.position >= position) return Promise.resolve();
    return new Promise((resolve, reject) => {
      let i = this.positionWaiters.length;
      while (i > 0 && this.positionWaiters[i - 1].position > position) i--;
      this.positionWaiters.splice(i, 0, { position, since: Date.now(), resolve, reject });
      this.stallSweep ??= setInterval(() => this.rejectStalled(), 1000).unref();
    });
  }

  /** Durable but not seen after SEEN_TIMEOUT_MS: the subscription is broken, which /health reports; the caller gets a 503. */
  private rejectStalled(): void {
    const oldest = Date.now() - SEEN_TIMEOUT_MS;
    const stalled = this.positionWaiters.filter((w) => w.since <= oldest);
    if (stalled.length === 0) return;
    this.positionWaiters = this.positionWaiters.filter((w) => w.since > oldest);
    for (const w of stalled) {
      w.reject(new DomainError('unavailable', `the ledger did not deliver position ${w.position} back in time: ${String(this.failure ?? 'subscription stalled')}`));
    }
  }

  /** What deciders see on top of the World: this process's appends still on their way back (one object, not closures per call). */
  readonly inFlight: InFlightView = {
    busy: (machineId) => {
      for (const b of this.pending) if (b.machines.includes(machineId)) return true;
      return false;
    },
    quota: (tenantId) => this.pendingSum('quota', tenantId),
    claims: (kind, value) => {
      for (const b of this.pending) if (b.claims.has(`${kind}:${value}`)) return true;
      return false;
    },
    waiting: (tenantId) => this.pendingSum('waiting', tenantId),
    revision: (streamName, known) => {
      const head = this.pendingHead(streamName);
      return head && !this.inFlight.changing(streamName) ? head.revision : known;
    },
    changing: (streamName) => {
      for (const b of this.pending) if (b.streams.get(streamName)?.accounted === false) return true;
      return false;
    },
    lastSessionId: () => {
      let id = this.world.lastSessionId;
      for (const b of this.pending) id = Math.max(id, b.sessionId);
      return id;
    },
    // The oldest append in flight first: the World keeps the family of a tenant's first reservation.
    platform: (tenantId) => {
      for (const b of this.pending) {
        const p = b.platforms.get(tenantId);
        if (p !== undefined) return p;
      }
      return null;
    },
  };

  /** A per-tenant count summed over the appends in flight (machines claimed, or asked for by requests entering the queue). */
  private pendingSum(count: 'quota' | 'waiting', tenantId: number): number {
    let n = 0;
    for (const b of this.pending) n += b[count].get(tenantId) ?? 0;
    return n;
  }

  private pendingHead(streamName: string): { revision: number; hash: string | null } | undefined {
    let head: { revision: number; hash: string | null } | undefined;
    for (const b of this.pending) head = b.streams.get(streamName) ?? head;
    return head;
  }

  /**
   * One decision, one atomic append; resolves once it is durable AND the World shows it (invariant 4).
   * A conflict is returned, not thrown: the caller decides again on fresh state.
   */
  async record(decided: Write[], meta: EventMetadata): Promise<Recorded> {
    const writes = this.notBeforeSigned(decided);
    // Stamped at the append: the projection lag and the audit tools read an event's time from here.
    const metadata = { correlationId: meta.correlationId ?? randomUUID(), ...meta, at: this.clock.now() };
    const links = appendLinks(metadata);
    const chain = (headsRead: boolean) => {
      const out: StreamWrite[] = [];
      for (const w of writes) {
        const events = this.chained(w, links, headsRead);
        if (!events) return undefined;
        out.push({ stream: w.stream, expected: w.expected, events });
      }
      return out;
    };
    let chained = chain(false);
    if (!chained) {
      // A head missing here: the chain must go on from the real one (a stale revision fails at the store anyway).
      await this.readHeads(writes);
      chained = chain(true)!;
    }
    // On a store other instances write too, a write chained on an append of ours still in flight must not go out
    // before that one lands: were it refused, another instance's event could take its revision, and this write
    // would land after an event its decision never saw (and link to a hash that is not in the ledger).
    const predecessors = this.store.singleWriter ? [] : this.chainedOn(writes);
    const batch = this.track(writes, chained);
    this.appends += 1;
    try {
      if (predecessors.length > 0 && !(await Promise.all(predecessors.map((p) => p.landed))).every(Boolean)) {
        const w = writes.find((x) => typeof x.expected === 'number')!;
        return { ok: false, conflict: new WrongExpectedRevisionError(w.stream, w.expected, 'no_stream') };
      }
      const result = await this.store.append(chained);
      batch.settle(true);
      await this.seen(result.position);
      return { ok: true, position: result.position, revisions: result.nextExpectedRevisions };
    } catch (err) {
      if (err instanceof WrongExpectedRevisionError) return { ok: false, conflict: err };
      if (err instanceof AppendTooLargeError) {
        refuse('invalid', `this change is too large to record: ${err.message}; shorten what it writes (node data, hardware, a comment), or, to retire a tenant that holds hundreds of sessions, end some of them first`);
      }
      throw err;
    } finally {
      batch.settle(false);
      this.pending.delete(batch);
      batch.leave();
    }
  }

  /** The appends in flight that change (beyond what the in-flight view accounts for) one of these streams (written at a revision, or read). */
  private changedInFlight(streams: string[]): PendingBatch[] {
    const ahead = new Set<PendingBatch>();
    for (const name of streams) {
      for (const b of this.pending) {
        const change = b.streams.get(name);
        // One the World already holds (landed, its caller not yet resumed) is no longer ahead of this decision.
        if (change?.accounted === false && (this.heads.revision(name) ?? -1) < change.revision) ahead.add(b);
      }
    }
    return [...ahead];
  }

  /** The appends in flight that write a stream these writes expect a revision of. */
  private pendingOn(writes: Write[]): PendingBatch[] {
    const on = new Set<PendingBatch>();
    for (const w of writes) {
      if (typeof w.expected !== 'number') continue;
      for (const b of this.pending) if (b.streams.has(w.stream)) on.add(b);
    }
    return [...on];
  }

  /** The appends in flight whose revision of a stream these writes expect (they were chained on them). */
  private chainedOn(writes: Write[]): PendingBatch[] {
    const on = new Set<PendingBatch>();
    for (const w of writes) {
      if (typeof w.expected !== 'number') continue;
      for (const b of this.pending) if (b.streams.get(w.stream)?.revision === w.expected) on.add(b);
    }
    return [...on];
  }

  /** Independent facts (e.g. claims on several machines): each write is its own decision, and may fail alone. */
  async commit(writes: Write[], meta: EventMetadata): Promise<WriteOutcome[]> {
    return Promise.all(
      writes.map(async (write): Promise<WriteOutcome> => {
        const r = await this.record([write], meta);
        if (r.ok) return { ok: true, write, result: { position: r.position, nextExpectedRevisions: r.revisions } };
        return { ok: false, write, error: r.conflict };
      }),
    );
  }

  /**
   * Decide on the World (plus in-flight appends) and record the decision in one append; on a conflict, catch up
   * and decide again, a bounded number of times. A refusal is thrown as the DomainError the API maps.
   * Returns null when the decision had nothing to write.
   * `reads`: streams it depends on without writing them (a session's extension reads its tenant's maximum): a change
   * of ours on its way to one of them is waited for, as for the streams it writes, so the decision is not written
   * after a change it never saw.
   */
  async decide(decide: (world: World, inFlight: InFlightView) => Decision, meta: EventMetadata, reads: readonly string[] = []): Promise<Recorded | null> {
    let turn: Turn | undefined;
    let ownLosses = 0;
    try {
      for (let attempt = 1; ; attempt++) {
        const decision = decide(this.world, this.inFlight);
        if (isRefusal(decision)) return raise(decision);
        if (decision.length === 0) return null;
        const ahead = this.changedInFlight([...decision.filter((w) => typeof w.expected === 'number').map((w) => w.stream), ...reads]);
        if (ahead.length > 0) {
          // Written on the World's revision, this would surely conflict with our own append in flight: wait for it
          // and decide again, without spending an attempt (each wait follows an append that was already sent).
          // In line behind the decisions already waiting on these streams, once: each is woken when the one before it
          // is done, not all of them by every append (n waiters deciding n times each took 90 s for 4000 extends).
          const before = turn ? [] : this.queueUp(decision, (turn = new Turn()));
          await Promise.all([...ahead.map((b) => b.gone), ...before]);
          attempt -= 1;
          continue;
        }
        const recorded = await this.record(decision, meta);
        if (recorded.ok) return recorded;
        // Lost to an append of this process it was not chained on (a quota claim or return before a tenant change
        // written at the World's revision): that one is no other writer; wait for it, not an attempt. A retirement's
        // loop of session ends got the admin's reactivation a 409 in five attempts.
        const ours = this.pendingOn(decision);
        if (ours.length > 0 && ++ownLosses <= OWN_LOSSES) {
          await Promise.all(ours.map((b) => b.gone));
          attempt -= 1;
          continue;
        }
        if (attempt >= DECIDE_ATTEMPTS) throw new DomainError('conflict', 'the ledger changed under this request too often; try again');
        await this.catchUp();
      }
    } finally {
      if (turn) this.leaveLine(turn);
    }
  }

  /** Takes `turn` at the end of the line of each stream the decision writes; resolves with the turns before it. */
  private queueUp(decision: Write[], turn: Turn): Array<Promise<void>> {
    const before: Array<Promise<void>> = [];
    for (const { stream } of decision) {
      const last = this.lines.get(stream);
      if (last && last !== turn) before.push(last.done);
      this.lines.set(stream, turn);
      turn.streams.push(stream);
    }
    return before;
  }

  private leaveLine(turn: Turn): void {
    for (const stream of turn.streams) if (this.lines.get(stream) === turn) this.lines.delete(stream);
    turn.leave();
  }

  private track(writes: Write[], chained: Array<{ stream: string; events: NewEvent[] }>): PendingBatch {
    const landed = deferred<boolean>();
    const gone = deferred();
    const batch: PendingBatch = { streams: new Map(), machines: [], quota: new Map(), waiting: new Map(), claims: new Set(), sessionId: 0, platforms: new Map(), landed: landed.promise, settle: landed.resolve, gone: gone.promise, leave: gone.resolve };
    writes.forEach((w, i) => {
      const base = w.expected === 'no_stream' ? -1 : w.expected === 'any' ? null : w.expected;
      const last = chained[i].events[chained[i].events.length - 1].metadata?.hash;
      const accounted = w.events.every((e) => ACCOUNTED.has(e.type));
      if (base !== null) batch.streams.set(w.stream, { revision: base + w.events.length, hash: typeof last === 'string' ? last : null, accounted });
      let requested: { tenantId: number; machines: number } | undefined;
      for (const e of w.events) {
        // A machine taken out of service (or back), or given new hardware, on its own stream: not to be picked until
        // the World shows it, or a request decided meanwhile reserves it after the change in the ledger.
        if (e.type === 'MachineReserved' || SERVICE_EVENTS.has(e.type)) batch.machines.push((e.data as { machineId: number }).machineId);
        if (e.type === 'MachineReserved') {
          if (!batch.platforms.has(e.data.tenantId)) batch.platforms.set(e.data.tenantId, e.data.platform);
        } else if (e.type === 'QuotaClaimed') batch.quota.set(e.data.tenantId, (batch.quota.get(e.data.tenantId) ?? 0) + e.data.count);
        else if (e.type === 'MachineRequested') {
          batch.sessionId = Math.max(batch.sessionId, e.data.sessionId);
          requested = { tenantId: e.data.tenantId, machines: machinesAsked(e.data.specs) };
        } else if (e.type === 'RequestQueued' && requested) batch.waiting.set(requested.tenantId, (batch.waiting.get(requested.tenantId) ?? 0) + requested.machines);
        else if (e.type === 'MachineRegistered') {
          batch.claims.add(`host:${hostKey(e.data.hostname)}`);
          if (e.data.ipaddr !== null) batch.claims.add(`ip:${addressKey({ ipaddr: e.data.ipaddr, data: e.data.data })}`);
        }
        else if (e.type === 'TenantRegistered') {
          batch.claims.add(`key:${e.data.apiKeyDigest}`);
          batch.claims.add(`tenant:${tenantKey(e.data.name)}`);
        }
        else if (e.type === 'TenantUpdated' && e.data.changes.apiKeyDigest) batch.claims.add(`key:${e.data.changes.apiKeyDigest}`);
      }
    });
    this.pending.add(batch);
    return batch;
  }

  /**
   * Links each event to its stream's previous one; undefined when the predecessor is not known here, unless the
   * heads were just read from the store (then the stream is new, or the append fails on its stale revision).
   */
  private chained(w: Write, { link, withChain }: ReturnType<typeof appendLinks>, headsRead: boolean): NewEvent[] | undefined {
    const pending = w.expected === 'no_stream' ? undefined : this.pendingHead(w.stream);
    const known = w.expected === 'no_stream' ? -1 : w.expected === 'any' ? (pending?.revision ?? this.heads.revision(w.stream)) : w.expected;
    if (known === undefined && !headsRead) return undefined;
    let revision = known ?? -1;
    // The World's head first: once it holds that revision, the event there is the one that landed, which need not be
    // the append of ours in flight that expected it (that one then fails, after another write took the revision).
    const seen = revision < 0 ? GENESIS : this.heads.hashAt(w.stream, revision);
    const head = seen ?? (pending && pending.revision === revision && pending.hash !== null ? pending.hash : undefined);
    if (head === undefined && !headsRead) return undefined;
    let prev = head ?? GENESIS;
    return w.events.map((e) => {
      revision += 1;
      const hash = link(prev, w.stream, revision, e.type, e.data);
      const linked = { type: e.type, data: e.data, metadata: withChain(prev, hash) };
      prev = hash;
      return linked;
    });
  }

  /** After a conflict another writer got there first: wait until everything in the store is in the World. */
  async catchUp(): Promise<void> {
    await this.seen(await this.headPosition());
  }

  /** The store's last position (read from the store: other instances may have written since the World saw it). */
  async headPosition(): Promise<bigint> {
    let position = this.world.position;
    for (;;) {
      const page = await this.store.readAll(position, 1000);
      if (page.length === 0) return position;
      position = page[page.length - 1].position;
    }
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.stallSweep);
    // A wait of up to a hand-over's timeout (15 min by default) must not keep a stopped Duffy's process alive.
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.abandon(new DomainError('unavailable', 'Duffy is stopping; ask again'));
    await this.subscription?.close();
    await this.store.close();
  }
}
