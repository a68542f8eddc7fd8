import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { GENESIS, globalLink } from '../audit/chain.js';
import {
  type AppendResult,
  type EventHandler,
  type EventStore,
  type ExpectedRevision,
  type RecordedEvent,
  type StreamWrite,
  type Subscription,
  WrongExpectedRevisionError,
} from './event-store.port.js';

interface Row {
  position: number | bigint;
  stream: string;
  revision: number;
  id: string;
  type: string;
  data: string;
  metadata: string;
}

interface PendingAppend {
  writes: StreamWrite[];
  resolve: (r: AppendResult) => void;
  reject: (e: unknown) => void;
}

/** Recent events kept in memory, so live subscribers get what was just committed without reading it back. */
const TAIL_SIZE = 8192;

/**
 * Embedded ledger: one SQLite file, WAL, synchronous=FULL, so a resolved append is on disk.
 * Calls arriving in the same tick share one transaction (group commit: one fsync for many requests); each call
 * runs in its own SAVEPOINT, so a stale revision fails that call alone, and atomically.
 * The single writer also keeps the global chain (column `chain`, see globalLink).
 */
export class SqliteEventStore implements EventStore {
  readonly singleWriter = true;
  private readonly db: Database.Database;
  private readonly stmts;
  private queue: PendingAppend[] = [];
  private flushScheduled = false;
  private readonly wakeups = new Set<() => void>();
  private closed = false;
  /** Last revision per stream: this process is the only writer, so the cache stays true once read. */
  private readonly revisions = new Map<string, number>();
  private lastChain = GENESIS;
  private lastPosition = 0n;
  /** Events of the last commits, oldest first: live subscribers read from here, not from the file. */
  private tail: RecordedEvent[] = [];

  /** `readonly` opens an existing ledger for auditors: no schema changes, no writes. */
  constructor(
    file: string,
    private readonly groupCommit = true,
    readonly = false,
  ) {
    if (readonly) {
      this.db = new Database(file, { readonly: true, fileMustExist: true });
    } else {
      if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
      this.db = new Database(file);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
    }
    if (!readonly) this.db.exec(`
      CREATE TABLE IF NOT EXISTS events (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        stream   TEXT    NOT NULL,
        revision INTEGER NOT NULL,
        id       TEXT    NOT NULL UNIQUE,
        type     TEXT    NOT NULL,
        data     TEXT    NOT NULL,
        metadata TEXT    NOT NULL,
        chain    TEXT    NOT NULL,
        UNIQUE (stream, revision)
      );
      -- Invariant 6: the ledger is append-only, even for someone with a SQL shell.
      CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
      CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
    `);
    this.stmts = {
      lastRevision: this.db.prepare<[string], { r: number | null }>('SELECT MAX(revision) AS r FROM events WHERE stream = ?'),
      insert: readonly ? undefined : this.db.prepare('INSERT INTO events (position, stream, revision, id, type, data, metadata, chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      readStream: this.db.prepare<[string, number], Row>('SELECT * FROM events WHERE stream = ? AND revision >= ? ORDER BY revision'),
      readAll: this.db.prepare<[bigint, number], Row>('SELECT * FROM events WHERE position > ? ORDER BY position LIMIT ?'),
      head: this.db.prepare<[], { position: bigint; chain: string }>('SELECT position, chain FROM events ORDER BY position DESC LIMIT 1'),
    };
    this.stmts.readAll.safeIntegers(true);
    this.stmts.head.safeIntegers(true);
    if (!readonly) {
      const head = this.stmts.head.get();
      if (head) {
        this.lastChain = head.chain;
        this.lastPosition = BigInt(head.position);
      }
    }
  }

  append(writes: StreamWrite[]): Promise<AppendResult> {
    if (this.closed) return Promise.reject(new Error('event store is closed'));
    if (writes.length === 0 || writes.some((w) => w.events.length === 0)) return Promise.reject(new Error('append needs at least one event per write'));
    if (new Set(writes.map((w) => w.stream)).size !== writes.length) return Promise.reject(new Error('a stream may appear once per append'));
    return new Promise((resolve, reject) => {
      this.queue.push({ writes, resolve, reject });
      if (!this.groupCommit) return this.flush();
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private revisionOf(stream: string, staged: Map<string, number>): number {
    const s = staged.get(stream) ?? this.revisions.get(stream);
    if (s !== undefined) return s;
    const r = this.stmts.lastRevision.get(stream)?.r ?? -1;
    this.revisions.set(stream, r);
    return r;
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    const outcomes: Array<{ ok: true; result: AppendResult } | { ok: false; error: unknown }> = [];
    // Revisions, chain and events written by this transaction; they become true only once it commits.
    const staged = new Map<string, number>();
    let chain = this.lastChain;
    let position = this.lastPosition;
    const written: RecordedEvent[] = [];
    const tx = this.db.transaction(() => {
      for (const item of batch) {
        const conflict = item.writes.find((w) => !matches(w.expected, this.revisionOf(w.stream, staged)));
        if (conflict) {
          const last = this.revisionOf(conflict.stream, staged);
          outcomes.push({ ok: false, error: new WrongExpectedRevisionError(conflict.stream, conflict.expected, last < 0 ? 'no_stream' : last) });
          continue;
        }
        // Revisions were checked up front, so nothing in here can fail for a logical reason; an I/O error
        // aborts the whole transaction and every call in it.
        const next: number[] = [];
        for (const w of item.writes) {
          let revision = this.revisionOf(w.stream, staged);
          for (const e of w.events) {
            revision += 1;
            const id = randomUUID();
            const metadata = e.metadata ?? {};
            const data = JSON.stringify(e.data);
            position += 1n;
            chain = globalLink(chain, position, typeof metadata.hash === 'string' ? metadata.hash : '');
            this.stmts.insert!.run(position, w.stream, revision, id, e.type, data, JSON.stringify(metadata), chain);
            written.push({ id, stream: w.stream, revision, position, type: e.type, data: JSON.parse(data), metadata });
          }
          staged.set(w.stream, revision);
          next.push(revision);
        }
        outcomes.push({ ok: true, result: { position, nextExpectedRevisions: next } });
      }
    });
    try {
      tx();
    } catch (err) {
      for (const item of batch) item.reject(err);
      return;
    }
    for (const [stream, revision] of staged) this.revisions.set(stream, revision);
    this.lastChain = chain;
    this.lastPosition = position;
    if (written.length > 0) {
      this.tail.push(...written);
      if (this.tail.length > TAIL_SIZE) this.tail = this.tail.slice(this.tail.length - TAIL_SIZE / 2);
    }
    batch.forEach((item, i) => {
      const o = outcomes[i];
      if (o.ok) item.resolve(o.result);
      else item.reject(o.error);
    });
    for (const wake of this.wakeups) wake();
  }

  async readStream(stream: string, fromRevision = 0): Promise<RecordedEvent[]> {
    return this.stmts.readStream.all(stream, fromRevision).map(toRecorded);
  }

  async readAll(after: bigint, limit: number): Promise<RecordedEvent[]> {
    return this.stmts.readAll.all(after, limit).map(toRecorded);
  }

  /** What follows `after`: from memory when the tail still holds it, else from the file. */
  private nextPage(after: bigint): RecordedEvent[] {
    const first = this.tail[0];
    if (first && first.position <= after + 1n) {
      if (after >= this.lastPosition) return [];
      const start = Number(after + 1n - first.position);
      return this.tail.slice(start, start + 1000);
    }
    return this.stmts.readAll.all(after, 1000).map(toRecorded);
  }

  subscribeAll(after: bigint, handler: EventHandler, onError?: (err: unknown) => void): Subscription {
    let cursor = after;
    let active = true;
    let wake: (() => void) | undefined;
    let pendingWake = false;
    const signal = () => {
      pendingWake = true;
      wake?.();
    };
    this.wakeups.add(signal);
    const done = (async () => {
      while (active && !this.closed) {
        pendingWake = false;
        const page = this.nextPage(cursor);
        for (const event of page) {
          if (!active) return;
          await handler(event);
          cursor = event.position;
        }
        if (page.length === 0 && !pendingWake && active) await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    })().catch((err) => (onError ? onError(err) : console.error('subscription failed', err)));
    return {
      close: async () => {
        active = false;
        this.wakeups.delete(signal);
        signal();
        await done;
      },
    };
  }

  async ping(): Promise<void> {
    if (this.closed) throw new Error('event store is closed');
    this.db.prepare('SELECT 1').get();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    for (const wake of this.wakeups) wake();
    this.db.close();
  }
}

function matches(expected: ExpectedRevision, last: number): boolean {
  if (expected === 'any') return true;
  if (expected === 'no_stream') return last < 0;
  return expected === last;
}

function toRecorded(row: Row): RecordedEvent {
  return {
    id: row.id,
    stream: row.stream,
    revision: Number(row.revision),
    position: BigInt(row.position),
    type: row.type,
    data: JSON.parse(row.data),
    metadata: JSON.parse(row.metadata),
  };
}
