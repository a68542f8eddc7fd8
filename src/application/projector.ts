import type { Doc, Projection } from '../../projections/index.js';
import type { EventStore, RecordedEvent, Subscription } from './ports/event-store.port.js';
import type { DuffyEvent } from '../domain/events.js';
import type { DocChange, ReadModelStore } from './ports/read-model.port.js';

/**
 * Past this many buffered events the subscription waits for the store: memory stays bounded during a rebuild, and
 * batches are large enough that a hot document (a tenant, a pool) is written once per batch, not once per event.
 */
const HIGH_WATER = 20_000;
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
  private buffer: RecordedEvent[] = [];
  private flushing?: Promise<void>;
  private subscription?: Subscription;
  position = 0n;
  private taken = 0n;
  /** Milliseconds from an event's append to its documents being written (the last batch's worst). */
  lastLagMs = 0;
  failure: unknown;
  /** Why the last batch could not be written, until one is (reads answer it rather than wait). */
  writeFailure: unknown;
  /** A projected batch the store refused: written again as is, since the cache already holds its effects. */
  private unwritten?: { changes: DocChange[]; batch: RecordedEvent[] };
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
    this.cache.clear();
    for (const c of this.projection.collections) this.cache.set(c, new Map());
    this.buffer = [];
    this.unwritten = undefined;
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
    this.taken = this.position;
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
   * A promise only when the buffer is full and the caller must wait (no promise per event on a rebuild).
   */
  push(e: RecordedEvent): Promise<void> | undefined {
    if (e.position <= this.taken) return undefined;
    this.taken = e.position;
    this.buffer.push(e);
    this.schedule(BATCH_MS);
    return this.buffer.length >= HIGH_WATER ? this.flushing : undefined;
  }

  private schedule(ms: number): void {
    if (!this.flushing) this.flushing = new Promise<void>((r) => setTimeout(r, ms)).then(() => this.flush());
  }

  /** Never rejects: a refused write is kept, reported in `writeFailure`, and tried again (a full disk must not crash Duffy). */
  private async flush(): Promise<void> {
    try {
      while (this.unwritten || this.buffer.length > 0) {
        this.unwritten ??= this.projectBatch();
        const { changes, batch } = this.unwritten;
        const last = batch[batch.length - 1];
        await this.store.apply(this.projection.name, this.projection.version, changes, last.position);
        this.unwritten = undefined;
        this.writeFailure = undefined;
        this.position = last.position;
        this.lastLagMs = batchLagMs(batch, Date.now());
      }
      this.flushing = undefined;
    } catch (err) {
      this.writeFailure = err;
      this.flushing = undefined;
      if (!this.stopped) this.schedule(RETRY_MS);
    }
  }

  private projectBatch(): { changes: DocChange[]; batch: RecordedEvent[] } {
    const batch = this.buffer;
    this.buffer = [];
    // Folded in memory (the cache is the projection's state); only each document's final state is written,
    // once per batch: the checkpoint covers the whole batch anyway.
    const dirty = new Map<Map<string, Doc>, Map<string, Dirty>>();
    const read = (c: string, id: string) => this.cache.get(c)?.get(id);
    for (const e of batch) {
      for (const ch of this.projection.project(e as RecordedEvent & DuffyEvent, read)) {
        const docs = this.docs(ch.collection);
        let changed = dirty.get(docs);
        if (!changed) dirty.set(docs, (changed = new Map()));
        let d = changed.get(ch.id);
        if (!d) changed.set(ch.id, (d = { collection: ch.collection, stored: docs.has(ch.id), position: e.position }));
        d.position = e.position;
        if (ch.op === 'put') {
          // The id rides along in the document, so a restart can rebuild the cache from `find`.
          ch.doc.__id = ch.id;
          docs.set(ch.id, ch.doc);
        } else {
          docs.delete(ch.id);
        }
      }
    }
    const changes: DocChange[] = [];
    for (const [docs, changed] of dirty) {
      for (const [id, d] of changed) {
        const doc = docs.get(id);
        if (doc) changes.push({ op: 'put', collection: d.collection, id, doc, position: d.position });
        // A document born and gone within the batch was never written: nothing to delete.
        else if (d.stored) changes.push({ op: 'delete', collection: d.collection, id, position: d.position });
      }
    }
    return { changes, batch };
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
    async (e) => {
      for (const r of runners) {
        const full = r.push(e);
        if (full) await full;
      }
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

/**
 * The worst lag of a batch: from each event's append (metadata `at`, stamped as the command records its events,
 * outcomes of playbooks included, a few ms before the append) to `now`, when its documents are written.
 */
export function batchLagMs(batch: readonly RecordedEvent[], now: number): number {
  let worst = 0;
  for (const e of batch) {
    const at = Date.parse(String(e.metadata.at ?? ''));
    if (!Number.isNaN(at)) worst = Math.max(worst, now - at);
  }
  return worst;
}
