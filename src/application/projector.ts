import type { Doc, Projection } from '../../projections/index.js';
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
  /** Documents by collection, then id (no key strings built per read). */
  private readonly cache = new Map<string, Map<string, Doc>>();
  /** Documents changed since the last write, per collection's document map; a refused write keeps them here. */
  private readonly dirty = new Map<Map<string, Doc>, Map<string, Dirty>>();
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
  private readonly read = (c: string, id: string) => this.cache.get(c)?.get(id);

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
    this.cache.clear();
    for (const c of this.projection.collections) this.cache.set(c, new Map());
    this.dirty.clear();
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
      for (const c of p.collections) for (const d of await this.store.find(c)) this.docs(c).set(String(d.__id), d);
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

  /** Folds one event into the cached documents and notes what it changed. */
  private fold(e: RecordedEvent): void {
    if (this.unwritten === 0) this.unwrittenSince = Date.parse(String(e.metadata.at ?? ''));
    this.unwritten += 1;
    this.unwrittenTo = e.position;
    for (const ch of this.projection.project(e as RecordedEvent & DuffyEvent, this.read)) {
      const docs = this.docs(ch.collection);
      let changed = this.dirty.get(docs);
      if (!changed) this.dirty.set(docs, (changed = new Map()));
      const d = changed.get(ch.id);
      if (d) d.position = e.position;
      else changed.set(ch.id, { collection: ch.collection, stored: docs.has(ch.id), position: e.position });
      if (ch.op === 'put') {
        // The id rides along in the document, so a restart can rebuild the cache from `find`.
        ch.doc.__id = ch.id;
        docs.set(ch.id, ch.doc);
      } else {
        docs.delete(ch.id);
      }
    }
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
        this.dirty.clear();
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
    for (const [docs, changed] of this.dirty) {
      for (const [id, d] of changed) {
        const doc = docs.get(id);
        if (doc) changes.push({ op: 'put', collection: d.collection, id, doc, position: d.position });
        // A document born and gone unwritten was never stored: nothing to delete.
        else if (d.stored) changes.push({ op: 'delete', collection: d.collection, id, position: d.position });
      }
    }
    return changes;
  }

  private docs(collection: string): Map<string, Doc> {
    let docs = this.cache.get(collection);
    if (!docs) this.cache.set(collection, (docs = new Map()));
    return docs;
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

/** A document changed in the batch being folded: whether the store had it before, and the last event that changed it. */
interface Dirty {
  collection: string;
  stored: boolean;
  position: bigint;
}
