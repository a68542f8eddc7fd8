import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { type Checkpoint, type Doc, type DocChange, type ReadModelStore } from '../../application/ports/read-model.port.js';
import { type FilterValue, filterEntries, latestPerDocAndEvent } from './changes.js';

/**
 * Embedded read models: one SQLite file, WAL, synchronous=NORMAL. A batch and its checkpoint commit together, so a
 * power cut can only lose whole trailing batches, which the projector replays from the ledger: no fsync per batch.
 * Documents also keep their last applied position, so the embedded and MongoDB adapters skip the same changes.
 */
export class SqliteReadModels implements ReadModelStore {
  private readonly db: Database.Database;
  private readonly stmts;
  /** find() statements by filter shape; the field paths are parameters, so shapes are few. */
  private readonly finds = new Map<string, Database.Statement<unknown[], { doc: string }>>();
  private readonly applyTx: (projection: string, version: number, changes: DocChange[], checkpoint: bigint) => void;
  private readonly resetTx: (projection: string, collections: string[]) => void;
  private closed = false;

  constructor(file: string) {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
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
    `);
    this.stmts = {
      // A change at or below the document's position was already applied (a replayed batch).
      put: this.db.prepare<[string, string, string, bigint]>(
        `INSERT INTO docs (collection, id, doc, position) VALUES (?, ?, ?, ?)
         ON CONFLICT (collection, id) DO UPDATE SET doc = excluded.doc, position = excluded.position
         WHERE excluded.position > docs.position`,
      ),
      del: this.db.prepare<[string, string, bigint]>('DELETE FROM docs WHERE collection = ? AND id = ? AND position < ?'),
      saveCheckpoint: this.db.prepare<[string, bigint, number]>(
        `INSERT INTO checkpoints (projection, position, version) VALUES (?, ?, ?)
         ON CONFLICT (projection) DO UPDATE SET position = excluded.position, version = excluded.version
         WHERE excluded.position > checkpoints.position`,
      ),
      get: this.db.prepare<[string, string], { doc: string }>('SELECT doc FROM docs WHERE collection = ? AND id = ?'),
      checkpoint: this.db.prepare<[string], { position: bigint; version: bigint }>(
        'SELECT position, version FROM checkpoints WHERE projection = ?',
      ),
      dropDocs: this.db.prepare<[string]>('DELETE FROM docs WHERE collection = ?'),
      dropCheckpoint: this.db.prepare<[string]>('DELETE FROM checkpoints WHERE projection = ?'),
    };
    this.stmts.checkpoint.safeIntegers(true);

    this.applyTx = this.db.transaction((projection: string, version: number, changes: DocChange[], checkpoint: bigint) => {
      const latest = latestPerDocAndEvent(changes);
      for (let i = 0; i < changes.length; i++) {
        if (!latest[i]) continue;
        const c = changes[i];
        if (c.op === 'put') this.stmts.put.run(c.collection, c.id, JSON.stringify(c.doc), c.position);
        else this.stmts.del.run(c.collection, c.id, c.position);
      }
      this.stmts.saveCheckpoint.run(projection, checkpoint, version);
    });
    this.resetTx = this.db.transaction((projection: string, collections: string[]) => {
      for (const c of collections) this.stmts.dropDocs.run(c);
      this.stmts.dropCheckpoint.run(projection);
    });
  }

  async apply(projection: string, version: number, changes: DocChange[], checkpoint: bigint): Promise<void> {
    this.applyTx(projection, version, changes, checkpoint);
  }

  async get(collection: string, id: string): Promise<Doc | undefined> {
    const row = this.stmts.get.get(collection, id);
    return row ? JSON.parse(row.doc) : undefined;
  }

  async find(collection: string, filter: Record<string, FilterValue> = {}): Promise<Doc[]> {
    const entries = filterEntries(filter);
    const shape = entries.map(([, v]) => shapeOf(v)).join('');
    let stmt = this.finds.get(shape);
    if (!stmt) {
      const conditions = [...shape].map((s) => CONDITIONS[s as Shape]);
      stmt = this.db.prepare(
        `SELECT doc FROM docs WHERE collection = ?${conditions.map((c) => ` AND ${c}`).join('')} ORDER BY id`,
      );
      this.finds.set(shape, stmt);
    }
    const params: unknown[] = [collection];
    for (const [field, value] of entries) {
      // Quoted so field names with dashes or spaces stay one key.
      params.push(`$."${field}"`);
      if (typeof value === 'string' || typeof value === 'number') params.push(`$."${field}"`, value);
    }
    return stmt.all(...params).map((row) => JSON.parse(row.doc));
  }

  async checkpoint(projection: string): Promise<Checkpoint | undefined> {
    const row = this.stmts.checkpoint.get(projection);
    return row ? { position: row.position, version: Number(row.version) } : undefined;
  }

  async reset(projection: string, collections: string[]): Promise<void> {
    this.resetTx(projection, collections);
  }

  async ping(): Promise<void> {
    if (this.closed) throw new Error('read models are closed');
    this.db.prepare('SELECT 1').get();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
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
const CONDITIONS: Record<Shape, string> = {
  s: "json_type(doc, ?) = 'text' AND json_extract(doc, ?) = ?",
  n: "json_type(doc, ?) IN ('integer', 'real') AND json_extract(doc, ?) = ?",
  t: "json_type(doc, ?) = 'true'",
  f: "json_type(doc, ?) = 'false'",
  z: "coalesce(json_type(doc, ?), 'null') = 'null'",
};
