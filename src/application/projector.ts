import type { Mark, Projection } from '../../projections/index.js';
import type { EventStore, LeanEvent, Subscription } from './ports/event-store.port.js';
import type { DuffyEvent } from '../domain/events.js';
import type { Doc, DocChange, ReadModelStore } from './ports/read-model.port.js';
import { refuse } from '../domain/errors.js';
import { storageFault } from './ports/storage-fault.port.js';

/**
 * Past this many events folded and not yet handed to the store, the subscription waits for the store: batches are
 * large enough that a hot document (a tenant, a pool, a machine) is written once per batch, not once per event, and
 * small enough that a rebuild's writes overlap its reads and folds well. Events are folded as they arrive and not
 * kept, so a batch costs only its changed documents' entries.
 */
const HIGH_WATER = 20_000;
/**
 * Read-model writes gather this long: one transaction for many requests' events, and a document changed by several of
 * them (a session requested and released, a machine, a tenant) written once. A read does not wait it out: it
 * starts the write of what it needs at once (caughtUp).
 */
const BATCH_MS = 100;
/** A batch the store refused (a full disk...) is written again after this long. */
const RETRY_MS = 1_000;
/**
 * A document a rebuild holds back is written once this many batches running have left it unchanged. One was not
 * enough: a short batch leaves most machines alone, and each was then written by it and again by the next (a 1M-event
 * rebuild wrote 6,000-17,000 machine documents per projection, now 2,000).
 */
const QUIET_BATCHES = 3;

/**
 * Follows the ledger for one projection from its checkpoint and writes its documents in batches, each batch
 * with its checkpoint (exactly once on the embedded store; idempotent by position on MongoDB).
 * The projection folds into its own state in memory (a pure projection reads its state synchronously); the
 * documents it marks are written once per batch.
 */
export class ProjectionRunner {
  /** The projection's own state, folded in memory (its documents are computed from it when written). */
  private state: unknown;
  /** What was folded and not yet handed to the store. */
  private batch = new Batch();
  private readonly mark: Mark = (collection, id, created) => this.batch.mark(collection, id, created, this.folding);
  /** Position of the event being folded. */
  private folding = 0n;
  /**
   * While folding from 0 up to this position (the ledger's head when the rebuild began), a document changed in two
   * batches running (a machine, a tenant: the same few thousand every batch) is held back until QUIET_BATCHES batches
   * leave it unchanged or the rebuild ends, not rewritten with every batch; the checkpoint stays put meanwhile.
   * 0n: not rebuilding.
   * A stop writes what was held back; a crash leaves documents past the checkpoint, so the next start folds from 0
   * again over them (`overDocuments`).
   */
  private rebuildingTo = 0n;
  /**
   * Folding from 0 over the documents already stored (see `prepare`), until the head it began at: a document created
   * and removed within one batch may have been written by the run before (its batches ended elsewhere), so its
   * removal is written too.
   */
  private overDocuments = false;
  /** The documents held back: per collection, id -> position of the last event that changed it. */
  private deferred: Dirty = new Map();
  /** Where the last QUIET_BATCHES batches written ended, oldest first (how long a held-back document has been left alone). */
  private batchEnds: bigint[] = [];
  /** What the last batch written changed (a rebuild's next batch holds back those it changes again). */
  private lastDirty: Dirty = new Map();
  /**
   * Events that arrived while a write was under way (a store that does not copy the documents on `apply` may still
   * be reading them then): folded, in order, when the next write begins.
   */
  private held: LeanEvent[] = [];
  /** The store write under way (never rejects). */
  private write?: Promise<void>;
  private flushing?: Promise<void>;
  /** Resolves once a scheduled flush has begun (it has taken its batch). */
  private started?: Promise<void>;
  /** Starts a scheduled flush now (a full batch does not wait out the timer). */
  private hurry?: () => void;
  private subscription?: Subscription;
  position = 0n;
  private taken = 0n;
  /** Milliseconds from an event's append to its documents being written (the last batch's oldest event). */
  private lastLagMs = 0;
  /** Append time of the oldest event of the write under way (NaN when none). */
  private writingSince = Number.NaN;
  /**
   * When this runner began to follow the ledger: an event appended before waits from then, so a rebuild's old events
   * show the rebuild's time as lag, not their age.
   */
  private followingSince = Date.now();
  failure: unknown;
  /** Why the last batch could not be written, until one is (reads answer it rather than wait). */
  writeFailure: unknown;
  private stopped = false;
  /** Why the last `prepare` rebuilt from 0 without being asked to, if it did (the start logs it). */
  rebuiltBecause?: string;
  /**
   * How many times the documents went back to position 0 (dropped, or folded again): a read that straddles one may
   * have seen part of the old documents and part of the new ones, and must read again.
   */
  resets = 0;

  constructor(
    readonly projection: Projection,
    private readonly ledger: EventStore,
    private readonly store: ReadModelStore,
  ) {}

  /** Rebuilds from 0 when the stored version differs (or when asked), then follows the ledger live. */
  async start(options: PrepareOptions = {}): Promise<void> {
    await this.prepare(options);
    this.subscription = this.ledger.subscribeAllLean(this.position, (e) => this.push(internType(e)), (err) => (this.failure = err));
  }

  /** Loads the checkpoint (or resets for a rebuild); returns the position to follow the ledger from. */
  async prepare(options: PrepareOptions = {}): Promise<bigint> {
    const p = this.projection;
    this.state = p.init();
    this.batch = new Batch();
    this.held = [];
    this.followingSince = Date.now();
    this.stopped = false;
    this.failure = undefined;
    this.writeFailure = undefined;
    const cp = await this.store.checkpoint(p.name);
    this.rebuiltBecause = undefined;
    let refold = false;
    if (cp && !options.rebuild && cp.version === p.version) {
      // Read after the checkpoint: another instance's later checkpoint cannot look like one past the ledger's end.
      const head = await options.head?.();
      if (head !== undefined && cp.position > head) {
        // Read models newer than the ledger (a ledger restored from a backup): they hold events it lacks. Dropped.
        this.rebuiltBecause = `its checkpoint ${cp.position} is past the ledger's last event ${head} (a ledger restored from a backup?)`;
      } else if (await this.store.writtenAfter(p.collections, cp.position)) {
        // Documents newer than the checkpoint (a crash between the two, or another instance's batch under way) are
        // not the state at the checkpoint: restored, their events would be folded twice. Folded again from 0 instead,
        // over the documents (each keeps the newest change), so readers of a shared store lose nothing meanwhile.
        this.rebuiltBecause = `documents written after its checkpoint ${cp.position}`;
        refold = true;
      }
    } else if (cp && !options.rebuild) {
      // An upgrade whose projection changed: the operator sees why the start reads the whole ledger.
      this.rebuiltBecause = `its version changed from ${cp.version} to ${p.version}`;
    }
    if (refold) {
      this.backToZero();
    } else if (options.rebuild || !cp || cp.version !== p.version || this.rebuiltBecause) {
      // Before the reset, so no read begins on documents about to go.
      this.backToZero();
      await this.store.reset(p.name, p.collections);
    } else {
      this.position = cp.position;
      for (const c of p.collections) for (const d of await this.restorable(c)) p.restore(this.state, c, String(d.__id), d);
    }
    this.taken = this.batch.to = this.position;
    this.deferred = new Map();
    this.batchEnds = [];
    this.lastDirty = new Map();
    this.overDocuments = refold;
    this.rebuildingTo = this.position === 0n ? ((await options.head?.()) ?? (await this.ledger.readLast(2n ** 63n - 1n, 1))[0]?.position ?? 0n) : 0n;
    return this.position;
  }

  /** The documents of `collection` a restart reads back (see Projection.restoring), in the stores' order: by id. */
  private async restorable(collection: string): Promise<Doc[]> {
    const only = this.projection.restoring?.(this.state, collection);
    if (!only) return this.store.find(collection);
    const docs = new Map<string, Doc>();
    for (const filter of only.filters) for (const d of await this.store.find(collection, filter)) docs.set(String(d.__id), d);
    for (const d of await this.store.getMany(collection, [...new Set(only.ids)].filter((id) => !docs.has(id)))) docs.set(String(d.__id), d);
    return [...docs.values()].sort((a, b) => (String(a.__id) < String(b.__id) ? -1 : 1));
  }

  private backToZero(): void {
    this.position = 0n;
    this.resets += 1;
  }

  /** Resolves once everything up to `position` is written. */
  async caughtUp(position: bigint, timeoutMs = 30_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.position < position) {
      if (this.failure) throw this.failure;
      if (this.writeFailure) {
        // A read fails for the write behind it: said so, not "cannot write" to a GET.
        const fault = storageFault(this.writeFailure);
        if (fault) refuse('unavailable', `Duffy cannot bring the read models it answers from up to date: ${fault.what} (${fault.code}); try again later`, this.writeFailure);
        throw this.writeFailure;
      }
      // A 503 for the reader (a rebuild of a long ledger takes longer than a read may wait), not a fault.
      if (Date.now() > end) refuse('unavailable', `the read models are behind the ledger (projection ${this.projection.name} written up to ${this.position} of ${position}, read up to ${this.taken}: being rebuilt?); try again shortly`);
      if (this.batch.events > 0 && this.batch.to >= position) this.hurry?.();
      // A rebuild's flush goes on until it has caught up: waited for no longer than the deadline.
      let timer: NodeJS.Timeout | undefined;
      const due = new Promise<void>((r) => (timer = setTimeout(r, this.flushing ? Math.max(0, end - Date.now()) + 1 : 5)));
      await Promise.race([this.flushing, due].filter(Boolean));
      clearTimeout(timer);
    }
  }

  /**
   * Takes an event from the ledger; one at or before what is already taken (a redelivery) changes nothing.
   * A promise only when the caller must wait: HIGH_WATER events folded or held and not yet handed to the store
   * (no promise per event on a rebuild). A store that copies the documents on `apply` is written to while the next
   * batch is folded.
   */
  push(e: LeanEvent): Promise<void> | undefined {
    if (e.position <= this.taken) return undefined;
    this.taken = e.position;
    if ((this.write && !this.store.copiesOnApply) || this.held.length > 0) this.held.push(e);
    else this.fold(e);
    this.schedule(BATCH_MS);
    if (this.batch.events + this.held.length < HIGH_WATER) return undefined;
    if (this.write) return this.write;
    // A refused write: wait for its retry rather than hurry it with every event.
    if (this.writeFailure) return this.flushing;
    this.hurry?.();
    return this.store.copiesOnApply ? this.started : this.flushing;
  }

  /** Folds one event into the projection's state; the documents it marks are written with the next batch. */
  private fold(e: LeanEvent): void {
    const batch = this.batch;
    if (batch.events === 0) batch.since = Math.max(Date.parse(String(e.data.at ?? '')), this.followingSince);
    batch.events += 1;
    batch.to = e.position;
    this.folding = e.position;
    this.projection.fold(this.state, e as LeanEvent & DuffyEvent, this.mark);
  }

  private schedule(ms: number): void {
    if (this.flushing) return;
    let go!: () => void;
    const due = new Promise<void>((r) => (go = r));
    const timer = setTimeout(go, ms);
    this.hurry = () => {
      clearTimeout(timer);
      go();
    };
    this.flushing = due.then(() => this.flush());
    this.started = due.then(() => undefined);
  }

  /**
   * The last batch's lag, or more while events wait to be written: a store that refuses or stalls writes (a full
   * disk) shows as a growing lag, not as the last batch it took.
   */
  lagMs(now = Date.now()): number {
    const waiting = [this.writingSince, this.batch.events > 0 ? this.batch.since : Number.NaN].filter((t) => !Number.isNaN(t));
    return waiting.length === 0 ? this.lastLagMs : Math.max(this.lastLagMs, now - Math.min(...waiting));
  }

  /** Never rejects: a refused write is kept, reported in `writeFailure`, and tried again (a full disk must not crash Duffy). */
  private async flush(): Promise<void> {
    this.hurry = undefined;
    try {
      while (this.batch.events > 0 || this.held.length > 0 || (this.deferred.size > 0 && this.writesWhole(this.batch))) {
        if (this.held.length > 0) {
          const held = this.held;
          this.held = [];
          for (const e of held) this.fold(e);
        }
        const batch = this.batch;
        this.batch = new Batch(batch.to);
        this.writingSince = batch.since;
        const whole = this.writesWhole(batch);
        const { changes, deferred } = this.changes(batch, !whole);
        const written = this.store.apply(this.projection.name, this.projection.version, changes, whole ? batch.to : this.position);
        this.write = written.then(
          () => undefined,
          () => undefined,
        );
        try {
          await written;
        } catch (err) {
          // Kept for the next try, under what was folded meanwhile.
          this.batch = batch.merge(this.batch);
          throw err;
        } finally {
          this.write = undefined;
          this.writingSince = Number.NaN;
        }
        this.writeFailure = undefined;
        this.deferred = deferred;
        this.batchEnds.push(batch.to);
        if (this.batchEnds.length > QUIET_BATCHES) this.batchEnds.shift();
        this.lastDirty = batch.dirty;
        if (whole) {
          this.position = batch.to;
          this.rebuildingTo = 0n;
          this.overDocuments = false;
        }
        const pending = this.batch;
        this.projection.written?.(this.state, (collection, id) => pending.dirty.get(collection)?.has(id) === true || deferred.get(collection)?.has(id) === true);
        this.lastLagMs = Number.isNaN(batch.since) ? 0 : Math.max(0, Date.now() - batch.since);
      }
      this.flushing = undefined;
    } catch (err) {
      this.writeFailure = err;
      this.flushing = undefined;
      if (!this.stopped) this.schedule(RETRY_MS);
    }
  }

  /** Whether `batch` is written whole (nothing held back, the checkpoint moved): not in the middle of a rebuild. */
  private writesWhole(batch: Batch): boolean {
    return this.stopped || batch.to >= this.rebuildingTo;
  }

  /**
   * Each changed document's final state, once: the checkpoint covers the whole batch anyway. `deferring` (a rebuild):
   * the documents changed again since the last batch stay back (`deferred`), and so do those held back that this
   * batch left unchanged until QUIET_BATCHES batches have; otherwise every one held back is written too.
   */
  private changes(batch: Batch, deferring: boolean): { changes: DocChange[]; deferred: Dirty } {
    const changes: DocChange[] = [];
    const deferred: Dirty = new Map();
    // Left alone by this batch and the QUIET_BATCHES - 1 before it: last changed at or before where the first of them began.
    const quietSince = this.batchEnds.length === QUIET_BATCHES ? this.batchEnds[0] : -1n;
    const add = (collection: string, id: string, position: bigint, born: boolean) => {
      const doc = this.projection.doc(this.state, collection, id);
      if (doc) {
        // The id rides along in the document, so a restart can restore the state from `find`.
        if (doc.__id !== id) doc.__id = id;
        changes.push({ op: 'put', collection, id, doc, position });
      } else if (!born) {
        changes.push({ op: 'delete', collection, id, position });
      }
    };
    for (const [collection, changed] of batch.dirty) {
      const born = batch.created.get(collection);
      const held = this.deferred.get(collection);
      const last = this.lastDirty.get(collection);
      let stays: Map<string, bigint> | undefined;
      for (const [id, position] of changed) {
        if (deferring && (held?.has(id) || last?.has(id))) {
          if (!stays) deferred.set(collection, (stays = new Map()));
          stays.set(id, position);
        } else {
          add(collection, id, position, born?.has(id) === true && !held?.has(id) && !this.overDocuments);
        }
      }
    }
    for (const [collection, held] of this.deferred) {
      const changed = batch.dirty.get(collection);
      let stays = deferred.get(collection);
      for (const [id, position] of held) {
        if (changed?.has(id)) continue;
        if (!deferring || position <= quietSince) {
          add(collection, id, position, false);
        } else {
          if (!stays) deferred.set(collection, (stays = new Map()));
          stays.set(id, position);
        }
      }
    }
    return { changes, deferred };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.subscription?.close();
    this.subscription = undefined;
    this.hurry?.();
    await this.flushing;
    // A rebuild stopped halfway writes what it held back, so its checkpoint can cover everything folded.
    if (this.deferred.size > 0) await this.flush();
  }

  fail(err: unknown): void {
    this.failure = err;
  }
}

/**
 * Follows the ledger once for several projections: each event is read and parsed once and offered to every
 * runner (a runner ignores what it already has), which is what makes a rebuild of all of them cheap.
 */
export async function followTogether(runners: ProjectionRunner[], ledger: EventStore, options: PrepareOptions = {}): Promise<Subscription> {
  let from: bigint | undefined;
  for (const r of runners) {
    const p = await r.prepare(options);
    if (from === undefined || p < from) from = p;
  }
  return ledger.subscribeAllLean(
    from ?? 0n,
    (e) => {
      // A promise only when some runner's batch is full: no promise, no microtask per event on a rebuild.
      let full: Promise<void>[] | undefined;
      internType(e);
      for (const r of runners) {
        const wait = r.push(e);
        if (wait) (full ??= []).push(wait);
      }
      return full && Promise.all(full).then(() => undefined);
    },
    (err) => runners.forEach((r) => r.fail(err)),
  );
}


/**
 * Removes what retired projections left in the store; returns the names of those that had a checkpoint. Their
 * collections are dropped even without one: MongoDB writes a batch's documents before its checkpoint.
 */
export async function dropRetired(store: ReadModelStore, retired: ReadonlyArray<{ name: string; collections: string[] }>): Promise<string[]> {
  const dropped: string[] = [];
  for (const r of retired) {
    const had = await store.checkpoint(r.name);
    await store.reset(r.name, r.collections);
    if (had) dropped.push(r.name);
  }
  return dropped;
}

export interface PrepareOptions {
  /** Rebuild from 0 whatever is stored. */
  rebuild?: boolean;
  /** Reads the ledger's last position: read models past it are rebuilt. */
  head?: () => Promise<bigint>;
}

const types = new Map<string, string>();
/**
 * Gives the event the one copy of its type name V8 keeps internalized (as a property name is): a type read from the
 * ledger is a fresh string, and every projection's switch would compare its characters against each case.
 */
function internType<E extends LeanEvent>(e: E): E {
  let type = types.get(e.type);
  if (type === undefined) types.set(e.type, (type = Object.keys({ [e.type]: 0 })[0]));
  e.type = type;
  return e;
}

/** Changed documents: per collection, id -> position of the last event that changed it. */
type Dirty = Map<string, Map<string, bigint>>;

/** Events folded and not yet written: how many, the last one's position, the oldest one's append time, what they changed. */
class Batch {
  events = 0;
  since = Number.NaN;
  /** Changed documents. */
  readonly dirty: Dirty = new Map();
  /** Of those, the ones created in this batch: gone again before they were written, there is nothing to delete. */
  readonly created = new Map<string, Set<string>>();

  constructor(public to = 0n) {}

  mark(collection: string, id: string, created: boolean | undefined, position: bigint): void {
    let changed = this.dirty.get(collection);
    if (!changed) this.dirty.set(collection, (changed = new Map()));
    if (created && !changed.has(id)) {
      let born = this.created.get(collection);
      if (!born) this.created.set(collection, (born = new Set()));
      born.add(id);
    }
    changed.set(id, position);
  }

  /** This batch (not written) followed by `later`: one batch. */
  merge(later: Batch): Batch {
    for (const [collection, changed] of later.dirty) {
      const born = later.created.get(collection);
      for (const [id, position] of changed) this.mark(collection, id, born?.has(id), position);
    }
    if (later.events > 0) {
      if (this.events === 0) this.since = later.since;
      this.events += later.events;
      this.to = later.to;
    }
    return this;
  }
}
