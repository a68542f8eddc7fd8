import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  type AppendResult,
  type EventHandler,
  type EventStore,
  type ExpectedRevision,
  type NewEvent,
  type RecordedEvent,
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
  stream: string;
  events: NewEvent[];
  expected: ExpectedRevision;
  resolve: (r: AppendResult) => void;
  reject: (e: unknown) => void;
}

/**
 * Embedded ledger: one SQLite file, WAL, synchronous=FULL, so a resolved append is on disk.
 * Appends arriving in the same tick share one transaction (group commit: one fsync for many requests);
 * each keeps its own expected-revision check and fails alone.
 */
export class SqliteEventStore implements EventStore {
  readonly singleWriter = true;
  private readonly db: Database.Database;
  private readonly stmts;
  private queue: PendingAppend[] = [];
  private flushScheduled = false;
  private readonly wakeups = new Set<() => void>();
  private closed = false;
  /** Bumped on every commit, so a subscriber never sleeps through a commit that raced its last read. */
  private commits = 0;

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
      insert: this.db.prepare(
        'INSERT INTO events (stream, revision, id, type, data, metadata) VALUES (?, ?, ?, ?, ?, ?)',
      ),
      readStream: this.db.prepare<[string, number], Row>(
        'SELECT * FROM events WHERE stream = ? AND revision >= ? ORDER BY revision',
      ),
      readAll: this.db.prepare<[bigint, number], Row>('SELECT * FROM events WHERE position > ? ORDER BY position LIMIT ?'),
    };
    this.stmts.readAll.safeIntegers(true);
  }

  append(stream: string, events: NewEvent[], expected: ExpectedRevision): Promise<AppendResult> {
    if (this.closed) return Promise.reject(new Error('event store is closed'));
    if (events.length === 0) return Promise.reject(new Error('append needs at least one event'));
    return new Promise((resolve, reject) => {
      this.queue.push({ stream, events, expected, resolve, reject });
      if (!this.groupCommit) return this.flush();
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    const outcomes: Array<{ ok: true; result: AppendResult } | { ok: false; error: unknown }> = [];
    const revisions = new Map<string, number>();
    const current = (stream: string): number => {
      if (!revisions.has(stream)) revisions.set(stream, this.stmts.lastRevision.get(stream)?.r ?? -1);
      return revisions.get(stream)!;
    };
    const tx = this.db.transaction(() => {
      for (const item of batch) {
        const last = current(item.stream);
        if (!matches(item.expected, last)) {
          outcomes.push({
            ok: false,
            error: new WrongExpectedRevisionError(item.stream, item.expected, last < 0 ? 'no_stream' : last),
          });
          continue;
        }
        let revision = last;
        let position = 0n;
        for (const e of item.events) {
          revision += 1;
          const info = this.stmts.insert.run(
            item.stream,
            revision,
            randomUUID(),
            e.type,
            JSON.stringify(e.data),
            JSON.stringify(e.metadata ?? {}),
          );
          position = BigInt(info.lastInsertRowid);
        }
        revisions.set(item.stream, revision);
        outcomes.push({ ok: true, result: { nextExpectedRevision: revision, position } });
      }
    });
    try {
      tx();
    } catch (err) {
      for (const item of batch) item.reject(err);
      return;
    }
    batch.forEach((item, i) => {
      const o = outcomes[i];
      if (o.ok) item.resolve(o.result);
      else item.reject(o.error);
    });
    this.commits += 1;
    for (const wake of this.wakeups) wake();
  }

  async readStream(stream: string, fromRevision = 0): Promise<RecordedEvent[]> {
    return this.stmts.readStream.all(stream, fromRevision).map(toRecorded);
  }

  async readAll(after: bigint, limit: number): Promise<RecordedEvent[]> {
    return this.stmts.readAll.all(after, limit).map(toRecorded);
  }

  subscribeAll(after: bigint, handler: EventHandler, onError?: (err: unknown) => void): Subscription {
    let cursor = after;
    let active = true;
    let wake: (() => void) | undefined;
    const signal = () => wake?.();
    this.wakeups.add(signal);
    const done = (async () => {
      while (active && !this.closed) {
        const seen = this.commits;
        const page = await this.readAll(cursor, 1000);
        for (const event of page) {
          if (!active) return;
          await handler(event);
          cursor = event.position;
        }
        if (page.length === 0 && seen === this.commits && active) await new Promise<void>((r) => (wake = r));
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
