import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import { type Checkpoint, type Doc, type DocChange, INDEXED_FIELDS, type ReadModelStore } from '../../application/ports/read-model.port.js';
import { type FilterValue, filterEntries, latestPerDocAndEvent } from './changes.js';

/** How long a connection waits for the other one's write (the writer thread's batches; this one's schema and resets). */
const BUSY_TIMEOUT_MS = 5_000;

/** The write statements, shared with the writer thread (sqlite-read-models.worker.js). */
const PUTS_PER_STATEMENT = 32;
const UPSERT = `ON CONFLICT (collection, id) DO UPDATE SET doc = excluded.doc, position = excluded.position
        WHERE excluded.position > docs.position`;
const SQL = {
  // A change at or below the document's position was already applied (a replayed batch).
  put: `INSERT INTO docs (collection, id, doc, position) VALUES (?, ?, ?, ?) ${UPSERT}`,
  /** PUTS_PER_STATEMENT puts in one statement (the writer thread's): one call into SQLite for many rows. */
  puts: `INSERT INTO docs (collection, id, doc, position) VALUES ${Array(PUTS_PER_STATEMENT).fill('(?, ?, ?, ?)').join(', ')} ${UPSERT}`,
  del: 'DELETE FROM docs WHERE collection = ? AND id = ? AND position < ?',
  saveCheckpoint: `INSERT INTO checkpoints (projection, position, version) VALUES (?, ?, ?)
        ON CONFLICT (projection) DO UPDATE SET position = excluded.position, version = excluded.version
        WHERE excluded.position > checkpoints.position`,
};

/** A change as written: collection, id, the document's JSON (null: delete), position; flat, four per change. */
type Rows = Array<string | bigint | null>;
interface Write {
  projection: string;
  version: number;
  rows: Rows;
  checkpoint: bigint;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Embedded read models: one SQLite file, WAL, synchronous=NORMAL. A batch and its checkpoint commit together, so a
 * power cut can only lose whole trailing batches, which the projector replays from the ledger: no fsync per batch.
 * Documents also keep their last applied position, so the embedded and MongoDB adapters skip the same changes.
 * `apply` serializes the documents before it returns (`copiesOnApply`); every batch is then written by a writer
 * thread of its own, so a rebuild folds the next batch while this one is written, and live traffic's small batches
 * keep off the thread that serves requests (Duffy a median 1.07x under P1's load, 14 alternated pairs).
 */
/** Ids per statement of getMany: under SQLite's bound on a statement's parameters (32,766 since 3.32; 999 before). */
const GET_MANY_CHUNK = 500;
/** Documents `find` reads between turns of the event loop: a few milliseconds of the main thread. */
const FIND_PAGE = 1_000;

export class SqliteReadModels implements ReadModelStore {
  readonly copiesOnApply = true;
  private readonly db: Database.Database;
  private readonly stmts;
  /** find() statements by filter shape (and first page or next); the field paths are parameters, so shapes are few. */
  private readonly finds = new Map<string, Database.Statement<unknown[], { id: string; doc: string }>>();
  private readonly getManys = new Map<number, Database.Statement<unknown[], { id: string; doc: string }>>();
  private readonly applyTx: (projection: string, version: number, rows: Rows, checkpoint: bigint) => void;
  /** An in-memory database's batches of this turn of the event loop (every projection's: their timers fire together). */
  private pending: Write[] = [];
  private readonly applyAllTx: (writes: Write[]) => Map<Write, unknown>;
  private readonly resetTx: (projection: string, collections: string[]) => void;
  private closed = false;
  /** Closing: no new writes. */
  private closing = false;
  /** Started by the first batch of a file database. */
  private writer?: Worker;
  private nextCall = 0;
  private readonly calls = new Map<number, { resolve: () => void; reject: (err: unknown) => void }>();
  /** The writer thread's writes under way: a reset or a close waits until there are none. */
  private queued = 0;
  private idle: Array<() => void> = [];

  constructor(private readonly file: string) {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    this.db = new Database(file);
    try {
      this.prepareSchema();
    } catch (err) {
      this.db.close(); // a file that is not a database: let go of it, so it can be set aside
      throw err;
    }
    this.stmts = {
      put: this.db.prepare<[string, string, string, bigint]>(SQL.put),
      del: this.db.prepare<[string, string, bigint]>(SQL.del),
      saveCheckpoint: this.db.prepare<[string, bigint, number]>(SQL.saveCheckpoint),
      get: this.db.prepare<[string, string], { doc: string }>('SELECT doc FROM docs WHERE collection = ? AND id = ?'),
      checkpoint: this.db.prepare<[string], { position: bigint; version: bigint }>(
        'SELECT position, version FROM checkpoints WHERE projection = ?',
      ),
      dropDocs: this.db.prepare<[string]>('DELETE FROM docs WHERE collection = ?'),
      writtenAfter: this.db.prepare<[string, bigint], { found: number }>('SELECT 1 AS found FROM docs WHERE collection = ? AND position > ? LIMIT 1'),
      dropCheckpoint: this.db.prepare<[string]>('DELETE FROM checkpoints WHERE projection = ?'),
    };
    this.stmts.checkpoint.safeIntegers(true);

    // The same loop as the writer thread's (sqlite-read-models.worker.js).
    this.applyTx = this.db.transaction((projection: string, version: number, rows: Rows, checkpoint: bigint) => {
      for (let i = 0; i < rows.length; i += 4) {
        if (rows[i + 2] === null) this.stmts.del.run(rows[i] as string, rows[i + 1] as string, rows[i + 3] as bigint);
        else this.stmts.put.run(rows[i] as string, rows[i + 1] as string, rows[i + 2] as string, rows[i + 3] as bigint);
      }
      this.stmts.saveCheckpoint.run(projection, checkpoint, version);
    });
    // One commit for all of them; each in a savepoint of its own (a nested transaction), so one that fails fails alone.
    this.applyAllTx = this.db.transaction((writes: Write[]) => {
      const failed = new Map<Write, unknown>();
      for (const w of writes) {
        try {
          this.applyTx(w.projection, w.version, w.rows, w.checkpoint);
        } catch (err) {
          failed.set(w, err);
        }
      }
      return failed;
    });
    this.resetTx = this.db.transaction((projection: string, collections: string[]) => {
      for (const c of collections) this.stmts.dropDocs.run(c);
      this.stmts.dropCheckpoint.run(projection);
    });
  }

  private prepareSchema(): void {
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS docs (
        collection TEXT    NOT NULL,
        id         TEXT    NOT NULL,
        doc        TEXT    NOT NULL,
        position   INTEGER NOT NULL,
        PRIMARY KEY (collection, id)
      );
      CREATE TABLE IF NOT EXISTS checkpoints (
        projection TEXT    PRIMARY KEY,
        position   INTEGER NOT NULL,
        version    INTEGER NOT NULL
      );
      ${indexStatements()}
    `);
  }

  /**
   * The documents are serialized before this returns. The writer thread writes each batch in order. An in-memory
   * database, which no second connection can share, writes on this connection instead: the batches given in the same
   * turn of the event loop together at its end, in one transaction.
   */
  async apply(projection: string, version: number, changes: DocChange[], checkpoint: bigint): Promise<void> {
    if (this.closing) throw new Error('read models are closed');
    const latest = latestPerDocAndEvent(changes);
    const rows: Rows = [];
    for (let i = 0; i < changes.length; i++) {
      if (!latest[i]) continue;
      const c = changes[i];
      rows.push(c.collection, c.id, c.op === 'put' ? JSON.stringify(c.doc) : null, c.position);
    }
    if (this.file !== ':memory:') {
      await this.onWriter(projection, version, rows, checkpoint);
      return;
    }
    await new Promise<void>((resolve, reject) => {
      if (this.pending.length === 0) setImmediate(() => this.writePending());
      this.pending.push({ projection, version, rows, checkpoint, resolve, reject });
    });
  }

  private writePending(): void {
    const writes = this.pending;
    this.pending = [];
    let failed: Map<Write, unknown>;
    try {
      failed = this.applyAllTx(writes);
    } catch (err) {
      for (const w of writes) w.reject(err);
      return;
    }
    for (const w of writes) {
      if (failed.has(w)) w.reject(failed.get(w));
      else w.resolve();
    }
  }

  private onWriter(projection: string, version: number, rows: Rows, checkpoint: bigint): Promise<void> {
    if (this.closed) return Promise.reject(new Error('read models are closed'));
    const writer = (this.writer ??= this.startWriter());
    const id = this.nextCall++;
    this.queued += 1;
    writer.ref();
    return new Promise<void>((resolve, reject) => {
      this.calls.set(id, { resolve, reject });
      writer.postMessage({ id, projection, version, rows, checkpoint });
    });
  }

  private async settlePending(): Promise<void> {
    if (this.pending.length > 0) await new Promise<void>((r) => setImmediate(r));
    await this.whenIdle();
  }

  private whenIdle(): Promise<void> {
    return this.queued === 0 ? Promise.resolve() : new Promise((r) => this.idle.push(r));
  }

  private becameIdle(): void {
    // Idle, the writer must not keep the process alive.
    this.writer?.unref();
    const waiting = this.idle;
    this.idle = [];
    for (const r of waiting) r();
  }

  private startWriter(): Worker {
    const writer = new Worker(new URL('./sqlite-read-models.worker.js', import.meta.url), {
      workerData: { file: this.file, sql: SQL, putsPerStatement: PUTS_PER_STATEMENT, busyTimeoutMs: BUSY_TIMEOUT_MS },
    });
    writer.on('message', (reply: { id: number; error?: { message: string; code?: string } }) => {
      const call = this.calls.get(reply.id);
      if (!call) return;
      this.calls.delete(reply.id);
      this.queued -= 1;
      if (reply.error) call.reject(Object.assign(new Error(reply.error.message), { code: reply.error.code }));
      else call.resolve();
      if (this.queued === 0) this.becameIdle();
    });
    const fail = (err: unknown) => {
      if (this.writer === writer) this.writer = undefined;
      this.queued = 0;
      for (const call of this.calls.values()) call.reject(err);
      this.calls.clear();
      this.becameIdle();
    };
    writer.on('error', fail);
    writer.on('exit', (code) => fail(new Error(`the read-model writer stopped (exit ${code})`)));
    return writer;
  }

  async get(collection: string, id: string): Promise<Doc | undefined> {
    const row = this.stmts.get.get(collection, id);
    return row ? JSON.parse(row.doc) : undefined;
  }

  async getMany(collection: string, ids: readonly string[]): Promise<Doc[]> {
    const rows: Array<{ id: string; doc: string }> = [];
    // In chunks, one prepared statement per chunk size: SQLite bounds a statement's parameters.
    for (let i = 0; i < ids.length; i += GET_MANY_CHUNK) {
      const chunk = ids.slice(i, i + GET_MANY_CHUNK);
      let stmt = this.getManys.get(chunk.length);
      if (!stmt) this.getManys.set(chunk.length, (stmt = this.db.prepare(`SELECT id, doc FROM docs WHERE collection = ? AND id IN (${chunk.map(() => '?').join(',')})`)));
      rows.push(...stmt.all(collection, ...chunk));
    }
    // As find orders them: by id, as text.
    return rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((r) => JSON.parse(r.doc) as Doc);
  }

  /**
   * Read a page at a time, with a turn of the event loop between pages: a listing of 20,000 machines held the main
   * thread, and every request with it, for as long as it took (SQLite reads synchronously). Each document is read
   * whole; the list is not one snapshot, as with MongoDB's cursor.
   */
  async find(collection: string, filter: Record<string, FilterValue> = {}): Promise<Doc[]> {
    const docs: Doc[] = [];
    let after: string | undefined;
    for (;;) {
      const rows = this.findPage(collection, filter, after);
      for (const row of rows) docs.push(JSON.parse(row.doc));
      if (rows.length < FIND_PAGE) return docs;
      after = rows[rows.length - 1].id;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Up to FIND_PAGE rows of `find`, with ids after `after` (from the first without). */
  private findPage(collection: string, filter: Record<string, FilterValue>, after: string | undefined): Array<{ id: string; doc: string }> {
    const entries = filterEntries(filter);
    // SQLite uses an index on an expression only for that very expression: a filter on an indexed field is written
    // with its collection and paths in the SQL (names of the code's, from INDEXED_FIELDS); any other, as parameters.
    const indexed = INDEXED_FIELDS[collection]?.find((field) => typeof filter[field] === 'string' || typeof filter[field] === 'number');
    const literal = indexed !== undefined;
    const shape = entries.map(([field, v]) => (literal ? `${field}:${shapeOf(v)}` : shapeOf(v))).join(',');
    const key = `${literal ? `${collection}/${shape}` : shape}${after === undefined ? '' : '>'}`;
    let stmt = this.finds.get(key);
    if (!stmt) {
      const conditions = entries.map(([field, v]) => CONDITIONS[shapeOf(v)](literal ? sqlPath(field) : '?'));
      if (after !== undefined) conditions.push('id > ?');
      // Named: without statistics the planner would rather take the collection's key and read all of it.
      const from = indexed === undefined ? 'docs' : `docs INDEXED BY ${indexName(collection, indexed)}`;
      stmt = this.db.prepare(`SELECT id, doc FROM ${from} WHERE collection = ${literal ? sqlText(collection) : '?'}${conditions.map((c) => ` AND ${c}`).join('')} ORDER BY id LIMIT ${FIND_PAGE}`);
      this.finds.set(key, stmt);
    }
    const params: unknown[] = literal ? [] : [collection];
    for (const [field, value] of entries) {
      // Quoted so field names with dashes or spaces stay one key.
      if (!literal) params.push(`$."${field}"`);
      if (typeof value === 'string' || typeof value === 'number') {
        if (!literal) params.push(`$."${field}"`);
        params.push(value);
      }
    }
    if (after !== undefined) params.push(after);
    return stmt.all(...params);
  }

  async checkpoint(projection: string): Promise<Checkpoint | undefined> {
    const row = this.stmts.checkpoint.get(projection);
    return row ? { position: row.position, version: Number(row.version) } : undefined;
  }

  async writtenAfter(collections: string[], position: bigint): Promise<boolean> {
    await this.settlePending();
    return collections.some((c) => this.stmts.writtenAfter.get(c, position) !== undefined);
  }

  async reset(projection: string, collections: string[]): Promise<void> {
    // Behind the writes given before it, so they cannot land after it.
    await this.settlePending();
    this.resetTx(projection, collections);
  }

  async ping(): Promise<void> {
    if (this.closed) throw new Error('read models are closed');
    this.db.prepare('SELECT 1').get();
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    // Writes given before finish first.
    await this.settlePending();
    this.closed = true;
    const writer = this.writer;
    this.writer = undefined;
    await writer?.terminate();
    this.db.close();
  }
}

type Shape = 's' | 'n' | 't' | 'f' | 'z';



function shapeOf(value: FilterValue): Shape {
  if (value === null) return 'z';
  if (typeof value === 'string') return 's';
  if (typeof value === 'number') return 'n';
  return value ? 't' : 'f';
}

/**
 * json_extract turns true/false into 1/0 and null into SQL NULL, so the JSON type is checked too:
 * {active: true} must not match {active: 1}, and {n: 1} must not match {n: true} or {n: [1]}.
 * null matches an explicit null or a missing field, as in MongoDB.
 */
const CONDITIONS: Record<Shape, (path: string) => string> = {
  s: (p) => `json_type(doc, ${p}) = 'text' AND json_extract(doc, ${p}) = ?`,
  n: (p) => `json_type(doc, ${p}) IN ('integer', 'real') AND json_extract(doc, ${p}) = ?`,
  t: (p) => `json_type(doc, ${p}) = 'true'`,
  f: (p) => `json_type(doc, ${p}) = 'false'`,
  z: (p) => `coalesce(json_type(doc, ${p}), 'null') = 'null'`,
};

/** An SQL string literal. */
const sqlText = (text: string) => `'${text.replaceAll("'", "''")}'`;
/** A field's JSON path as an SQL literal, the field quoted as find's parameters quote it. */
const sqlPath = (field: string) => sqlText(`$."${field}"`);

const indexName = (collection: string, field: string) => JSON.stringify(`docs_${collection}_${field}`);

/** The indexes of INDEXED_FIELDS: per collection and field, only that collection's documents (a partial index). */
function indexStatements(): string {
  return Object.entries(INDEXED_FIELDS)
    .flatMap(([collection, fields]) =>
      fields.map((field) => `CREATE INDEX IF NOT EXISTS ${indexName(collection, field)} ON docs (json_extract(doc, ${sqlPath(field)})) WHERE collection = ${sqlText(collection)};`),
    )
    .join('\n');
}
