import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import {
  type AppendResult,
  type EventHandler,
  type LeanEvent,
  type LeanEventHandler,
  type EventStore,
  type ExpectedRevision,
  type RecordedEvent,
  type StreamWrite,
  type Subscription,
  WrongExpectedRevisionError,
  appendTooLarge,
} from '../../application/ports/event-store.port.js';
import { WRITER_STOPPED, damagedDatabase } from '../../application/ports/storage-fault.port.js';
import { headFileOf, readHeadRecord } from './data-dir-lock.js';
import { PageReader } from './sqlite-page-reader.js';
import { isRecord } from '../../audit/chain.js';

/** A row as the read statements return it (raw): position, stream, revision, id, type, data, metadata. */
export type Row = [position: number, stream: string, revision: number, id: string, type: string, data: string, metadata: string];
/** Columns of `Row`, in its order (the hash chain is the auditor's, not the readers'). */
const COLUMNS = 'position, stream, revision, id, type, data, metadata';
/** A row as a lean read returns it: a LeanEvent's columns. */
type LeanRow = [position: number, revision: number, type: string, data: string];
/** Events read from the file per page when a subscriber is behind the in-memory tail (a rebuild, a catch-up). */
const PAGE = 1000;
/** How far behind the head a lean subscriber must be for its pages to be read ahead on a thread of their own. */
const READ_AHEAD_FROM = 20 * PAGE;

export interface SqliteEventStoreOptions {
  /** False: one transaction (and fsync) per call, for the benchmark. */
  groupCommit?: boolean;
  /** For auditors: no writer, nothing written. */
  readonly?: boolean;
  /** Events behind the head from which a lean catch-up reads ahead on a thread (tests set 0 to take that path always). */
  readAheadFrom?: number;
}

/** Where a subscriber's events come from while the in-memory tail does not reach back to it. */
interface FileSource<E> {
  read(after: bigint): E[] | Promise<E[]>;
  /** The subscriber has caught up with the tail, or stopped. */
  release?(): void;
}

interface PendingAppend {
  writes: StreamWrite[];
  ids: string[][];
  resolve: (r: AppendResult) => void;
  reject: (e: unknown) => void;
}

type WriterReply =
  | { closed: true }
  | { failed: number[]; error: { message: string; code?: string } }
  | { outcomes: Array<{ id: number; ok: true; first: bigint; bases: number[] } | { id: number; ok: false; stream: string; expected: ExpectedRevision; actual: number | 'no_stream' }> };

/**
 * Invariant 6: the ledger is append-only, even for someone with a SQL shell. `duffy audit verify` checks the file
 * still has exactly these (whitespace aside): one dropped or neutered leaves the file open to silent edits.
 */
export const APPEND_ONLY_TRIGGERS = {
  events_no_update: "CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END",
  events_no_delete: "CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END",
} as const;

export const NO_CHAIN_COLUMN = 'the events table has no chain column: the global chain was removed';

/** The store's table: AUTOINCREMENT keeps SQLite's counter, which shows deleted newest events; UNIQUE keeps revisions one per stream. */
const EVENTS_TABLE = `
CREATE TABLE events (
  position INTEGER PRIMARY KEY AUTOINCREMENT,
  stream   TEXT    NOT NULL,
  revision INTEGER NOT NULL,
  id       TEXT    NOT NULL UNIQUE,
  type     TEXT    NOT NULL,
  data     TEXT    NOT NULL,
  metadata TEXT    NOT NULL,
  chain    TEXT    NOT NULL,
  UNIQUE (stream, revision)
)`;
/** The column a ledger of 2026-11-26 gets when it is linked into the global chain (upgradeLegacyLedger). */
export const LEGACY_CHAIN_COLUMN = "chain TEXT NOT NULL DEFAULT ''";
const flatSql = (sql: string | null) => (sql ?? '').replace(/\s+/g, ' ').trim();
/** The events table as each Duffy made it, whitespace aside: today's, 2026-11-26's, and 2026-11-26's linked since. */
const EVENTS_TABLES = ((today: string) => new Set([today, today.replace(' chain TEXT NOT NULL,', ''), today.replace('chain TEXT NOT NULL,', `${LEGACY_CHAIN_COLUMN},`)]))(flatSql(EVENTS_TABLE));

/** The columns of the events table, in order (a ledger of 2026-11-26 lacks `chain`). */
const EVENT_COLUMNS = ['position', 'stream', 'revision', 'id', 'type', 'data', 'metadata', 'chain'];
/**
 * What else the store's CREATE TABLE makes: the AUTOINCREMENT counter's table and the UNIQUE constraints' indexes;
 * and the statistics an operator's `ANALYZE` (or `PRAGMA optimize`) leaves, which only guide SQLite's query planner.
 */
const STORE_OBJECTS = new Set(['table sqlite_sequence', 'index sqlite_autoindex_events_1', 'index sqlite_autoindex_events_2', 'table sqlite_stat1', 'table sqlite_stat4']);

/**
 * How the file's schema differs from what the store made: the events table with its columns, exactly the
 * append-only triggers, and nothing else (a trigger on `EVENTS`, a view, an index, a table of someone's: SQLite
 * names compare without case, so a trigger written `ON EVENTS` fires on events). Shared by `duffy audit verify`
 * and the start-up check (which will not sign on top of it).
 */
export function ledgerSchemaProblems(db: Database.Database): { problems: string[]; chainColumn: boolean } {
  const problems: string[] = [];
  const schema = db.prepare('SELECT type, name, sql FROM sqlite_master').all() as Array<{ type: string; name: string; sql: string | null }>;
  const table = schema.find((o) => o.type === 'table' && o.name === 'events');
  if (!table) problems.push('events is not a table: the ledger was replaced by something that reads like one');
  else if (!EVENTS_TABLES.has(flatSql(table.sql))) problems.push(`the events table is not the one Duffy made (${flatSql(table.sql).slice(0, 300)}): made again without what its schema enforces`);
  const triggers = new Map(schema.filter((o) => o.type === 'trigger').map((o) => [o.name, flatSql(o.sql)]));
  for (const [name, sql] of Object.entries(APPEND_ONLY_TRIGGERS)) {
    if (!triggers.has(name)) problems.push(`trigger ${name} is missing: someone dropped the append-only guard`);
    else if (triggers.get(name) !== sql) problems.push(`trigger ${name} was changed: the append-only guard no longer guards (${triggers.get(name)})`);
  }
  for (const o of schema) {
    const ours = (o.type === 'table' && o.name === 'events') || (o.type === 'trigger' && o.name in APPEND_ONLY_TRIGGERS) || STORE_OBJECTS.has(`${o.type} ${o.name}`);
    if (!ours) problems.push(`${o.type} ${o.name} is not Duffy's (${flatSql(o.sql).slice(0, 200)})`);
  }
  const columns = (db.prepare('PRAGMA table_info(events)').all() as Array<{ name: string }>).map((c) => c.name);
  // Every row the writer ever wrote has its link: a ledger without the column had it removed (or is of 2026-11-26,
  // which upgradeLegacyLedger takes over).
  const chainColumn = columns.includes('chain');
  if (!chainColumn) problems.push(NO_CHAIN_COLUMN);
  const extra = columns.filter((c) => !EVENT_COLUMNS.includes(c));
  if (extra.length > 0) problems.push(`the events table has columns Duffy never made (${extra.join(', ')})`);
  return { problems, chainColumn };
}

/** Recent events kept in memory, so live subscribers get what was just committed without reading it back. */
const TAIL_SIZE = 8192;

let lastIdMs = 0;
let idSeq = 0;
/**
 * A UUIDv7 (RFC 9562): the time in ms, a counter within that ms (its method 1, so ids of one process sort in the
 * order they were made, also when the clock steps back), then randomUUID's random bits and variant. Not the `uuid`
 * package's v7: 4.7 µs a call here against 0.15 for randomUUID, and the main thread makes four per request.
 */
export function timeOrderedId(): string {
  let ms = Date.now();
  if (ms > lastIdMs) idSeq = 0;
  else if (++idSeq > 0xfff) {
    ms = lastIdMs + 1;
    idSeq = 0;
  } else ms = lastIdMs;
  lastIdMs = ms;
  const time = ms.toString(16).padStart(12, '0');
  return `${time.slice(0, 8)}-${time.slice(8)}-7${idSeq.toString(16).padStart(3, '0')}-${randomUUID().slice(19)}`;
}

/**
 * Embedded ledger: one SQLite file, WAL, synchronous=FULL, so a resolved append is on disk.
 * The writes and their fsync run on a worker thread (sqlite-writer.worker.js beside this file), which puts every call
 * that arrived during the last commit into the next transaction (group commit); each call is checked and written
 * whole, so a stale revision fails that call alone and leaves nothing of it. The writer also keeps the global
 * chain (column `chain`). This thread reads, and hands committed events to subscribers from memory.
 */
export class SqliteEventStore implements EventStore {
  readonly singleWriter = true;
  private readonly db: Database.Database;
  private readonly stmts;
  private readonly writer?: Worker;
  private readonly calls = new Map<number, PendingAppend>();
  private nextCall = 0;
  /** Appends made during this turn of the event loop: posted to the writer together, one message per turn. */
  private outbox: Array<Array<string | number>> = [];
  private writerFailure: unknown;
  private closing?: Promise<void>;
  private readonly wakeups = new Set<() => void>();
  private closed = false;
  private lastPosition = 0n;
  /** Events of the last commits, oldest first: live subscribers read from here, not from the file. */
  private tail: RecordedEvent[] = [];

  private readonly readAheadFrom: number;

  constructor(
    private readonly file: string,
    { groupCommit = true, readonly = false, readAheadFrom = READ_AHEAD_FROM }: SqliteEventStoreOptions = {},
  ) {
    // An in-memory database has no file another connection could read ahead from.
    this.readAheadFrom = file === ':memory:' ? Number.POSITIVE_INFINITY : readAheadFrom;
    if (readonly) {
      this.db = new Database(file, { readonly: true, fileMustExist: true });
    } else {
      if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
      this.db = new Database(file);
      this.db.pragma('journal_mode = WAL');
      this.db.exec(EVENTS_TABLE.replace('CREATE TABLE', 'CREATE TABLE IF NOT EXISTS'));
      for (const sql of Object.values(APPEND_ONLY_TRIGGERS)) this.db.exec(sql.replace('CREATE TRIGGER', 'CREATE TRIGGER IF NOT EXISTS'));
    }
    this.stmts = {
      readStream: this.db.prepare<[string, number], Row>(`SELECT ${COLUMNS} FROM events WHERE stream = ? AND revision >= ? ORDER BY revision`).raw(true),
      // Positions come back as numbers (exact up to 2^53, far beyond any ledger) and become bigints one by one:
      // cheaper than safe integers for every integer column.
      readAll: this.db.prepare<[bigint, number], Row>(`SELECT ${COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?`).raw(true),
      // A LeanEvent's columns only: the id and metadata are most of a row's bytes, and every cell read costs.
      readAllLean: this.db.prepare<[bigint, number], LeanRow>('SELECT position, revision, type, data FROM events WHERE position > ? ORDER BY position LIMIT ?').raw(true),
      readLast: this.db.prepare<[bigint, number], Row>(`SELECT ${COLUMNS} FROM events WHERE position < ? ORDER BY position DESC LIMIT ?`).raw(true),
      head: this.db.prepare<[], { position: bigint }>('SELECT position FROM events ORDER BY position DESC LIMIT 1'),
    };
    this.stmts.head.safeIntegers(true);
    this.lastPosition = BigInt(this.stmts.head.get()?.position ?? 0n);
    if (readonly) return;
    this.writer = new Worker(new URL('./sqlite-writer.worker.js', import.meta.url), { workerData: { file, headFile: headFileOf(file), groupCommit } });
    this.writer.on('message', (reply: WriterReply) => this.onReply(reply));
    // No write can be made any more: a storage fault (503 and /health down), which only a restart ends.
    const stopped = (why: string, cause?: unknown) => this.failAll(Object.assign(new Error(`the ledger writer stopped (${why}); restart Duffy`), { code: WRITER_STOPPED, cause }));
    this.writer.on('error', (err) => stopped(String(err?.message ?? err), err));
    this.writer.on('exit', (code) => stopped(`exit ${code}`));
    this.writer.unref();
  }

  append(writes: StreamWrite[]): Promise<AppendResult> {
    if (this.closed || this.closing) return Promise.reject(new Error('event store is closed'));
    if (this.writerFailure) return Promise.reject(this.writerFailure);
    if (writes.length === 0 || writes.some((w) => w.events.length === 0)) return Promise.reject(new Error('append needs at least one event per write'));
    if (new Set(writes.map((w) => w.stream)).size !== writes.length) return Promise.reject(new Error('a stream may appear once per append'));
    const id = ++this.nextCall;
    // Time-ordered ids (UUIDv7): each commit adds to the end of the id index, where random ones dirtied a page of it
    // per event, which about doubled the writer's CPU and its commits' time (docs/performance.md, P1).
    const ids = writes.map((w) => w.events.map(timeOrderedId));
    // Serialised here, so the writer thread only binds strings; one flat array (see the worker's `unpack`), whose
    // structured clone is far cheaper than nested objects with their property names.
    const message: Array<string | number> = [id, writes.length];
    let chars = 0;
    writes.forEach((w, i) => {
      message.push(w.stream, w.expected, w.events.length);
      w.events.forEach((e, j) => {
        const data = JSON.stringify(e.data);
        const metadata = JSON.stringify(e.metadata ?? {});
        chars += data.length + metadata.length;
        message.push(ids[i][j], e.type, data, metadata, typeof e.metadata?.hash === 'string' ? e.metadata.hash : '');
      });
    });
    const tooLarge = appendTooLarge(writes, chars);
    if (tooLarge) return Promise.reject(tooLarge);
    return new Promise((resolve, reject) => {
      // The writer keeps the process alive only while it owes an answer.
      if (this.calls.size === 0) this.writer!.ref();
      this.calls.set(id, { writes, ids, resolve, reject });
      if (this.outbox.length === 0) setImmediate(() => this.post());
      this.outbox.push(message);
    });
  }

  private post(): void {
    if (this.outbox.length === 0) return;
    this.writer!.postMessage(this.outbox);
    this.outbox = [];
  }

  private onReply(reply: WriterReply): void {
    if ('closed' in reply) return;
    if ('failed' in reply) {
      const err = Object.assign(new Error(reply.error.message), { code: reply.error.code });
      for (const id of reply.failed) this.settle(id)?.reject(err);
      return;
    }
    for (const o of reply.outcomes) {
      const call = this.settle(o.id);
      if (!call) continue;
      if (!o.ok) {
        call.reject(new WrongExpectedRevisionError(o.stream, o.expected, o.actual));
        continue;
      }
      let position = o.first - 1n;
      const next: number[] = [];
      call.writes.forEach((w, i) => {
        let revision = o.bases[i] - 1;
        w.events.forEach((e, j) => {
          revision += 1;
          position += 1n;
          this.tail.push({ id: call.ids[i][j], stream: w.stream, revision, position, type: e.type, data: e.data as Record<string, unknown>, metadata: e.metadata ?? {} });
        });
        next.push(revision);
      });
      this.lastPosition = position;
      call.resolve({ position, nextExpectedRevisions: next });
    }
    if (this.tail.length > TAIL_SIZE) this.tail = this.tail.slice(this.tail.length - TAIL_SIZE / 2);
    for (const wake of this.wakeups) wake();
  }

  private settle(id: number): PendingAppend | undefined {
    const call = this.calls.get(id);
    this.calls.delete(id);
    if (this.calls.size === 0) this.writer?.unref();
    return call;
  }

  private failAll(err: unknown): void {
    if (this.closed) return;
    this.writerFailure ??= err;
    for (const [id, call] of this.calls) {
      this.calls.delete(id);
      call.reject(err);
    }
  }

  async readStream(stream: string, fromRevision = 0): Promise<RecordedEvent[]> {
    return this.stmts.readStream.all(stream, fromRevision).map(toRecorded);
  }

  async countUpTo(position: bigint): Promise<number> {
    return (this.db.prepare('SELECT count(*) AS n FROM events WHERE position <= ?').get(position) as { n: number }).n;
  }

  async readAll(after: bigint, limit: number): Promise<RecordedEvent[]> {
    return this.stmts.readAll.all(after, limit).map(toRecorded);
  }

  async readLast(before: bigint, limit: number): Promise<RecordedEvent[]> {
    return this.stmts.readLast.all(before, limit).map(toRecorded).reverse();
  }

  /** What follows `after` from memory, or undefined when the tail no longer holds it. */
  private fromTail(after: bigint): RecordedEvent[] | undefined {
    const first = this.tail[0];
    if (!first || first.position > after + 1n) return undefined;
    if (after >= this.lastPosition) return [];
    const start = Number(after + 1n - first.position);
    return this.tail.slice(start, start + PAGE);
  }

  subscribeAll(after: bigint, handler: EventHandler, onError?: (err: unknown) => void): Subscription {
    return this.follow(after, handler, onError, { read: (from) => this.stmts.readAll.all(from, PAGE).map(toRecorded) });
  }

  subscribeAllLean(after: bigint, handler: LeanEventHandler, onError?: (err: unknown) => void): Subscription {
    return this.follow<LeanEvent>(after, handler, onError, this.leanFromFile());
  }

  /**
   * Lean pages from the file: read ahead on a thread while the subscriber is far behind (a rebuild), so the event
   * loop only parses; read here otherwise, and whenever the thread cannot give a page (see PageReader).
   */
  private leanFromFile(): FileSource<LeanEvent> {
    const readHere = (after: bigint) => this.stmts.readAllLean.all(after, PAGE).map(toLean);
    let reader: PageReader | undefined;
    let readerUsed = false;
    const release = () => {
      reader?.close();
      reader = undefined;
    };
    return {
      read: (after) => {
        if (!readerUsed && this.lastPosition - after >= this.readAheadFrom) {
          readerUsed = true;
          try {
            reader = new PageReader(this.file, after, PAGE);
          } catch {
            // No thread to be had (a limit on threads or memory): read here, as a short catch-up does.
          }
        }
        if (!reader) return readHere(after);
        return reader.next(after).then((page) => {
          if (page && page.length > 0) return page;
          // The end of the file, or a page the thread could not give: read on here.
          release();
          return this.closed ? [] : readHere(after);
        });
      },
      release,
    };
  }

  private follow<E extends LeanEvent>(after: bigint, handler: (event: E | RecordedEvent) => void | Promise<void>, onError: ((err: unknown) => void) | undefined, fromFile: FileSource<E>): Subscription {
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
        const tail = this.fromTail(cursor);
        if (tail) fromFile.release?.();
        const page = tail ?? (await fromFile.read(cursor));
        if (this.closed) return;
        for (const event of page) {
          if (!active) return;
          // Awaited only when the handler gives a promise: no microtask per event on a catch-up.
          const pending = handler(event);
          if (pending) await pending;
          cursor = event.position;
        }
        if (page.length === 0 && !pendingWake && active) await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    })()
      .catch((err) => (onError ? onError(err) : console.error('subscription failed', err)))
      .finally(() => fromFile.release?.());
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
    if (this.writerFailure) throw this.writerFailure;
    this.db.prepare('SELECT 1').get();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closing ??= (async () => {
      if (this.writer && !this.writerFailure) {
        // The writer commits what it holds, then closes its connection.
        await new Promise<void>((resolve) => {
          this.writer!.on('message', (r: WriterReply) => 'closed' in r && resolve());
          this.writer!.once('exit', () => resolve());
          // The appends still in the outbox go first, then the close.
          this.post();
          // Until it answers, the writer keeps the process alive (it is unref'd while idle).
          this.writer!.ref();
          this.writer!.postMessage({ close: true });
        });
      }
      this.closed = true;
      await this.writer?.terminate();
      for (const wake of this.wakeups) wake();
      this.db.close();
    })();
    return this.closing;
  }
}

/** A stored row as subscribers and readers get it (exported for the memory benchmark, which folds rows as the server does). */
export function toRecorded(row: Row): RecordedEvent {
  const data = parsed(row, row[5]);
  const metadata = parsed(row, row[6]);
  // Objects, as the writer writes them: a row edited to hold something else would fail far from here, with a stack.
  if (!isRecord(data) || !isRecord(metadata)) throw notAnEvent(row, 'its data or metadata is not a JSON object');
  return {
    id: row[3],
    stream: row[1],
    revision: row[2],
    position: BigInt(row[0]),
    type: row[4],
    data: data as Record<string, unknown>,
    metadata: metadata as Record<string, unknown>,
  };
}

/** A lean row as lean subscribers get it. */
function toLean(row: LeanRow): LeanEvent {
  const data = parsed(row, row[3]);
  if (!isRecord(data)) throw notAnEvent(row, 'its data is not a JSON object');
  return { position: BigInt(row[0]), revision: row[1], type: row[2], data };
}

/** One column of `row` parsed, or the row named as not an event. */
function parsed(row: Row | LeanRow, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw notAnEvent(row, `not JSON: ${(err as Error).message}`);
  }
}

const notAnEvent = (row: Row | LeanRow, why: string) => new RowNotAnEventError(String(row[0]), why);

/**
 * A ledger that ends before the position its writer recorded lost its newest events (deleted, emptied, removed, or
 * copied without its -wal): a start would write new events over the gap, and the evidence with them. Also for a
 * ledger file that is gone while its head record is not.
 */
export function assertNotBehindHead(file: string, head = headPosition(file), last = 0n): void {
  if (head === undefined || head <= last) return;
  throw new LedgerDamagedError(
    `the ledger ${file} ends at position ${last}, but its writer recorded events up to ${head}: the newest events are gone (deleted, or the file replaced or copied without its -wal); ` +
      `check it with \`duffy audit --ledger ${file} verify\` and restore it from a backup (README: what to back up); to go on with what is left, move ${headFileOf(file)} aside`,
  );
}

/**
 * SQLite's AUTOINCREMENT counter of `events`: made with the first event, it never goes down, not even when rows are
 * deleted. Read it before the rows: a writer beside only adds rows after it.
 */
export function readCounter(db: Database.Database): bigint | undefined {
  if (!db.prepare("SELECT name FROM sqlite_master WHERE name = 'sqlite_sequence'").get()) return undefined;
  return (db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'events'").safeIntegers(true).get() as { seq: bigint } | undefined)?.seq;
}

/** The counter past the last event: the newest events were deleted; gone: a deletion would leave no trace. Shared by `verify` and the start. */
export function counterProblems(counter: bigint | undefined, last: bigint): string[] {
  if (counter === undefined) return last > 0n ? ["SQLite's counter of the events table is gone (it is made with the first event and kept): deleting the newest events would leave no trace in the file"] : [];
  return counter > last ? [`SQLite's counter of the events table reached position ${counter}, the ledger ends at ${last}: the newest events were deleted`] : [];
}

/**
 * What the writer's head record shows of an edit, where the ledger reaches it: the event there gone, or the global
 * chain there not the one the writer recorded (history up to it rewritten, its hashes recomputed). Shared by `verify`
 * and the start. `chainAt`: the chain column at a position (undefined: no event there; null: no chain column).
 */
export function headProblem(head: { position: bigint; chain: string }, last: bigint, chainAt: (position: bigint) => string | null | undefined): string | undefined {
  const behind = `the writer recorded events up to position ${head.position}, the ledger ends at ${last}`;
  if (last < head.position) return `${behind}: the newest events were deleted`;
  const chain = chainAt(head.position);
  if (chain === undefined) return `${behind}: the event there was deleted or moved`;
  if (chain !== null && chain !== head.chain) return 'the global chain here is not the one the writer recorded: history up to it was rewritten';
  return undefined;
}

/** The position in the writer's head record; undefined without one (a ledger of 2026-11-26) or when unreadable (verify names it). */
function headPosition(file: string): bigint | undefined {
  try {
    return readHeadRecord(file)?.position;
  } catch {
    return undefined;
  }
}

/** The embedded ledger file cannot be read as a ledger (not SQLite, or corrupt): nothing to start on. */
export class LedgerDamagedError extends Error {}

/** A row the writer cannot have written (its data or metadata no JSON object): an edit, named in one line. */
export class RowNotAnEventError extends LedgerDamagedError {
  constructor(
    readonly position: string,
    readonly why: string,
  ) {
    super(`the ledger's row at position ${position} is not an event (${why}): it was edited outside Duffy; \`duffy audit verify\` names what else was, and the ledger is to be restored from a backup (README: what to back up)`);
  }
}

/**
 * Opens the ledger file read-only and reads its head, before anything else opens it: a damaged file stops
 * start-up with one line saying so (and what to do), not a stack trace from deep inside the start. Returns what the
 * start should warn of and go on from (a head record it cannot read).
 */
export function assertLedgerReadable(file: string, legacy = false): string[] {
  // SQLite's words for a directory are "disk I/O error", with a stack.
  if (statSync(file, { throwIfNoEntry: false })?.isDirectory()) throw new LedgerDamagedError(`the ledger ${file} is a directory, not a file; move it aside`);
  // Read before the events: it may lag a commit (a writer at work), never lead one.
  let record: { position: bigint; chain: string } | null = null;
  const warnings: string[] = [];
  try {
    record = readHeadRecord(file);
  } catch (err) {
    // The writer renames it into place without an fsync: a power cut may leave it garbled, as an edit may. SQLite's
    // counter (below) still shows deleted newest events; the writer writes it anew as it opens the ledger.
    warnings.push(`the writer's head record ${headFileOf(file)} cannot be read (${(err as Error).message}): a power cut, or an edit; going on without it, and writing it anew from the ledger (SQLite's counter agrees with the ledger)`);
  }
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    const counter = readCounter(db);
    const last = (db.prepare('SELECT position FROM events ORDER BY position DESC LIMIT 1').safeIntegers(true).get() as { position: bigint } | undefined)?.position;
    // A guard changed or removed is someone's edit: the server would go on signing checkpoints over it (a first
    // start that stopped before its triggers has no events, and gets them now). Every event deleted: the counter says so.
    // A ledger of 2026-11-26 (`legacy`) has no chain column yet: the store adds it.
    const { problems: schemaProblems, chainColumn } = last !== undefined ? ledgerSchemaProblems(db) : { problems: [], chainColumn: false };
    const schema = schemaProblems.filter((p) => !(legacy && p === NO_CHAIN_COLUMN));
    const problems = [...schema, ...counterProblems(counter, last ?? 0n)];
    // Where the ledger reaches the head, the chain there must be the one recorded: a rewritten history would
    // otherwise be served, signed in checkpoints, and the next write would record its chain as the head.
    if (record && last !== undefined && record.position <= last) {
      // No chain column (a ledger of 2026-11-26): only whether the event at the head is still there.
      const chainAt = db.prepare(`SELECT ${chainColumn ? 'chain' : 'NULL'} FROM events WHERE position = ?`).pluck().safeIntegers(true);
      const edit = headProblem(record, last, (position) => chainAt.get(position) as string | null | undefined);
      if (edit) problems.push(`at position ${record.position}, the writer's head: ${edit}`);
    }
    if (problems.length > 0) {
      throw new LedgerDamagedError(`the ledger ${file} was edited outside Duffy (${problems.join('; ')}); check it with \`duffy audit --ledger ${file} verify\` and restore it from a backup (README: what to back up)`);
    }
    assertNotBehindHead(file, record?.position, last ?? 0n);
    return warnings;
  } catch (err) {
    if (err instanceof LedgerDamagedError) throw err;
    const code = damagedDatabase(err);
    if (code !== undefined) {
      throw new LedgerDamagedError(`the ledger ${file} is damaged (${code}: ${(err as Error).message}); restore it from a backup (README: what to back up), or move it aside to start on an empty ledger`);
    }
    // An SQLite file without the table yet (a start that stopped at once) is an empty ledger: the store creates it.
    if (!/no such table: events/.test(String((err as Error).message))) throw err;
    assertNotBehindHead(file, record?.position, 0n);
    return warnings;
  } finally {
    db?.close();
  }
}

