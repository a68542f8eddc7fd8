import type { Mark, Projection } from '../../projections/index.js';
import type { EventStore, RecordedEvent, Subscription } from './ports/event-store.port.js';
import type { DuffyEvent } from '../domain/events.js';
import type { DocChange, ReadModelStore } from './ports/read-model.port.js';

/**
 * Past this many events folded and not yet written, the subscription waits for the store: batches are large enough
 * that a hot document (a tenant, a pool, a machine) is written once per batch, not once per event. Events are folded
 * as they arrive and not kept, so a batch costs only its changed documents' entries.
 */
const HIGH_WATER = 50_000;
/** Read-model writes gather this long: one transaction for many requests' events, off the requests' way. */
const BATCH_MS = 20;
/** A batch the store refused (a full disk...) is written again after this long. */
const RETRY_MS = 1_000;

/**
 * Follows the ledger for one projection from its checkpoint and writes its documents in batches, each batch
 * with its checkpoint (exactly once on the embedded store; idempotent by position on MongoDB).
 * The projection's documents are cached in memory: they are few (tenants, machines, pools), and a pure
 * projection must read its state synchronously.
 */
export class ProjectionRunner {
  /** The projection's own state, folded in memory (its documents are computed from it when written). */
  private state: unknown;
  /** Documents changed since the last write: per collection, id -> position of the last event that changed it. A refused write keeps them. */
  private readonly dirty = new Map<string, Map<string, bigint>>();
  /** Of those, the ones created since the last write: gone again before they were written, there is nothing to delete. */
  private readonly created = new Map<string, Set<string>>();
  /** Position of the event being folded. */
  private folding = 0n;
  private readonly mark: Mark = (collection, id, created) => {
    let changed = this.dirty.get(collection);
    if (!changed) this.dirty.set(collection, (changed = new Map()));
    if (created && !changed.has(id)) {
      let born = this.created.get(collection);
      if (!born) this.created.set(collection, (born = new Set()));
      born.add(id);
    }
    changed.set(id, this.folding);
  };
  /** Events folded into the cache and not yet written: how many, the last one, and the oldest one's append time. */
  private unwritten = 0;
  private unwrittenTo = 0n;
  private unwrittenSince = Number.NaN;
  /**
   * Events that arrived while a write was under way (a store may still be reading the documents then) or after
   * it failed: folded, in order, when the next write begins.
   */
  private held: RecordedEvent[] = [];
  private writing = false;
  private flushing?: Promise<void>;
  /** Starts a scheduled flush now (a full batch does not wait out the timer). */
  private hurry?: () => void;
  private subscription?: Subscription;
  position = 0n;
  private taken = 0n;
  /** Milliseconds from an event's append to its documents being written (the last batch's oldest event). */
  lastLagMs = 0;
  failure: unknown;
  /** Why the last batch could not be written, until one is (reads answer it rather than wait). */
  writeFailure: unknown;
  private stopped = false;

  constructor(
    readonly projection: Projection,
    private readonly ledger: EventStore,
    private readonly store: ReadModelStore,
  ) {}

  /** Rebuilds from 0 when the stored version differs (or when asked), then follows the ledger live. */
  async start(options: { rebuild?: boolean } = {}): Promise<void> {
    await this.prepare(options);
    this.subscription = this.ledger.subscribeAll(this.position, (e) => this.push(e), (err) => (this.failure = err));
  }

  /** Loads the checkpoint (or resets for a rebuild); returns the position to follow the ledger from. */
  async prepare(options: { rebuild?: boolean } = {}): Promise<bigint> {
    const p = this.projection;
    this.state = p.init();
    this.dirty.clear();
    this.created.clear();
    this.unwritten = 0;
    this.unwrittenSince = Number.NaN;
    this.held = [];
    this.stopped = false;
    this.failure = undefined;
    this.writeFailure = undefined;
    const cp = await this.store.checkpoint(p.name);
    if (options.rebuild || !cp || cp.version !== p.version) {
      await this.store.reset(p.name, p.collections);
      this.position = 0n;
    } else {
      this.position = cp.position;
      for (const c of p.collections) for (const d of await this.store.find(c)) p.restore(this.state, c, String(d.__id), d);
    }
    this.taken = this.unwrittenTo = this.position;
    return this.position;
  }

  /** Resolves once everything up to `position` is written. */
  async caughtUp(position: bigint, timeoutMs = 30_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.position < position) {
      if (this.failure) throw this.failure;
      if (this.writeFailure) throw this.writeFailure;
      if (Date.now() > end) throw new Error(`projection ${this.projection.name} is behind: at ${this.position}, wanted ${position}`);
      await (this.flushing ?? new Promise((r) => setTimeout(r, 5)));
    }
  }

  /**
   * Takes an event from the ledger; one at or before what is already taken (a redelivery) changes nothing.
   * A promise only when the batch is full and the caller must wait (no promise per event on a rebuild).
   */
  push(e: RecordedEvent): Promise<void> | undefined {
    if (e.position <= this.taken) return undefined;
    this.taken = e.position;
    if (this.writing || this.held.length > 0) this.held.push(e);
    else this.fold(e);
    this.schedule(BATCH_MS);
    if (this.unwritten + this.held.length < HIGH_WATER) return undefined;
    this.hurry?.();
    return this.flushing;
  }

  /** Folds one event into the projection's state; the documents it marks are written with the next batch. */
  private fold(e: RecordedEvent): void {
    if (this.unwritten === 0) this.unwrittenSince = Date.parse(String(e.metadata.at ?? ''));
    this.unwritten += 1;
    this.unwrittenTo = e.position;
    this.folding = e.position;
    this.projection.fold(this.state, e as RecordedEvent & DuffyEvent, this.mark);
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
  }

  /** Never rejects: a refused write is kept, reported in `writeFailure`, and tried again (a full disk must not crash Duffy). */
  private async flush(): Promise<void> {
    this.hurry = undefined;
    try {
      while (this.unwritten > 0 || this.held.length > 0) {
        if (this.held.length > 0) {
          const held = this.held;
          this.held = [];
          for (const e of held) this.fold(e);
        }
        const to = this.unwrittenTo;
        const since = this.unwrittenSince;
        this.writing = true;
        try {
          await this.store.apply(this.projection.name, this.projection.version, this.changes(), to);
        } finally {
          this.writing = false;
        }
        for (const changed of this.dirty.values()) changed.clear();
        for (const born of this.created.values()) born.clear();
        this.unwritten = 0;
        this.writeFailure = undefined;
        this.position = to;
        this.lastLagMs = Number.isNaN(since) ? 0 : Math.max(0, Date.now() - since);
      }
      this.flushing = undefined;
    } catch (err) {
      this.writeFailure = err;
      this.flushing = undefined;
      if (!this.stopped) this.schedule(RETRY_MS);
    }
  }

  /** Each changed document's final state, once: the checkpoint covers the whole batch anyway. */
  private changes(): DocChange[] {
    const changes: DocChange[] = [];
    for (const [collection, changed] of this.dirty) {
      const born = this.created.get(collection);
      for (const [id, position] of changed) {
        const doc = this.projection.doc(this.state, collection, id);
        if (doc) {
          // The id rides along in the document, so a restart can restore the state from `find`.
          if (doc.__id !== id) doc.__id = id;
          changes.push({ op: 'put', collection, id, doc, position });
        } else if (!born?.has(id)) {
          changes.push({ op: 'delete', collection, id, position });
        }
      }
    }
    return changes;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.subscription?.close();
    this.subscription = undefined;
    this.hurry?.();
    await this.flushing;
  }

  fail(err: unknown): void {
    this.failure = err;
  }
}

/**
 * Follows the ledger once for several projections: each event is read and parsed once and offered to every
 * runner (a runner ignores what it already has), which is what makes a rebuild of all of them cheap.
 */
export async function followTogether(runners: ProjectionRunner[], ledger: EventStore, options: { rebuild?: boolean } = {}): Promise<Subscription> {
  let from: bigint | undefined;
  for (const r of runners) {
    const p = await r.prepare(options);
    if (from === undefined || p < from) from = p;
  }
  return ledger.subscribeAll(
    from ?? 0n,
    (e) => {
      // A promise only when some runner's batch is full: no promise, no microtask per event on a rebuild.
      let full: Promise<void>[] | undefined;
      for (const r of runners) {
        const wait = r.push(e);
        if (wait) (full ??= []).push(wait);
      }
      return full && Promise.all(full).then(() => undefined);
    },
    (err) => runners.forEach((r) => r.fail(err)),
  );
}

