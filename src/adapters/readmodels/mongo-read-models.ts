import {
  type AnyBulkWriteOperation,
  type Collection,
  type Db,
  type Filter,
  Long,
  MongoBulkWriteError,
  MongoClient,
  MongoServerError,
} from 'mongodb';
import { type Checkpoint, type Doc, type DocChange, INDEXED_FIELDS, type ReadModelStore } from '../../application/ports/read-model.port.js';
import { type FilterValue, filterEntries, latestPerDocAndEvent } from './changes.js';

interface StoredDoc {
  _id: string;
  _position?: number;
  [field: string]: unknown;
}
interface StoredCheckpoint {
  _id: string;
  position: number | Long | bigint;
  version: number;
}

const CHECKPOINTS = '_checkpoints';
const DUPLICATE_KEY = 11000;

/**
 * MongoDB read models: one collection per read-model collection, checkpoints in `_checkpoints`.
 * No multi-document transaction: every document keeps the position that last wrote it (`_position`), a change at
 * or below it is skipped, and the checkpoint is written after the documents, so replaying a batch after a crash
 * converges. Positions are stored as numbers (exact up to 2^53).
 */
export class MongoReadModels implements ReadModelStore {
  private readonly client: MongoClient;
  private readonly dbName: string;
  private connecting?: Promise<Db>;
  private closed = false;

  constructor(url: string) {
    // JSON semantics, as in the embedded store: an undefined field is absent, not null.
    const client = new MongoClient(url, { ignoreUndefined: true });
    // No `w` in the URL: majority, not the server's default (w: 1 before MongoDB 5.0 and in a set with an arbiter),
    // whose acknowledged writes a failover can roll back under a checkpoint that has moved on. A URL's own `w` stands.
    const wc = client.options.writeConcern;
    this.client = wc?.w === undefined ? new MongoClient(url, { ignoreUndefined: true, writeConcern: { ...wc, w: 'majority' } }) : client;
    this.dbName = dbNameOf(url);
  }

  /** Writes given and not yet done: close() lets them finish, as the embedded store does. */
  private readonly applying = new Set<Promise<void>>();

  apply(projection: string, version: number, changes: DocChange[], checkpoint: bigint): Promise<void> {
    const write = this.write(projection, version, changes, checkpoint);
    this.applying.add(write);
    const forget = () => void this.applying.delete(write);
    write.then(forget, forget);
    return write;
  }

  private async write(projection: string, version: number, changes: DocChange[], checkpoint: bigint): Promise<void> {
    const checkpointAt = toStoredPosition(checkpoint);
    const keep = latestPerDocAndEvent(changes);
    const byCollection = new Map<string, AnyBulkWriteOperation<StoredDoc>[]>();
    for (let i = 0; i < changes.length; i++) {
      if (!keep[i]) continue;
      const c = changes[i];
      const position = toStoredPosition(c.position);
      const olderOrUnpositioned: Filter<StoredDoc> = {
        _id: c.id,
        $or: [{ _position: { $lt: position } }, { _position: { $exists: false } }],
      };
      let ops = byCollection.get(c.collection);
      if (!ops) byCollection.set(c.collection, (ops = []));
      if (c.op === 'put') {
        if ('_id' in c.doc || '_position' in c.doc) {
          throw new Error(`read models: ${c.collection}/${c.id}: _id and _position are reserved field names`);
        }
        // A put replaces the whole document, so fields the projection dropped disappear.
        ops.push({ replaceOne: { filter: olderOrUnpositioned, replacement: { ...c.doc, _position: position }, upsert: true } });
      } else {
        ops.push({ deleteOne: { filter: olderOrUnpositioned } });
      }
    }

    const db = await this.database();
    // Unordered: the driver groups puts before deletes. Harmless, since each document ends at its highest position.
    const results = await Promise.allSettled(
      [...byCollection].map(async ([name, ops]) => {
        try {
          await collection<StoredDoc>(db, name).bulkWrite(ops, { ordered: false });
        } catch (err) {
          const refused = duplicateKeyOps(err);
          if (!refused) throw err;
          // Two writers upserting a new document at once: the loser's insert fails although its change may be the
          // newer one. Now that the document exists, its filter decides: a second duplicate key means at or past.
          try {
            await collection<StoredDoc>(db, name).bulkWrite(refused.map((i) => ops[i]), { ordered: false });
          } catch (again) {
            if (!duplicateKeyOps(again)) throw again;
          }
        }
      }),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;

    const moveCheckpoint = () =>
      db.collection<StoredCheckpoint>(CHECKPOINTS).updateOne(
        { _id: projection, $or: [{ position: { $lt: checkpointAt } }, { position: { $exists: false } }] },
        { $set: { position: checkpointAt, version } },
        { upsert: true },
      );
    const duplicate = (err: unknown) => err instanceof MongoServerError && err.code === DUPLICATE_KEY;
    try {
      await moveCheckpoint();
    } catch (err) {
      if (!duplicate(err)) throw err;
      // The checkpoint is at or past this one (it only moves forward), or another writer created it at this instant
      // (the $or keeps the server from retrying the upsert itself): now that it exists, its filter decides.
      await moveCheckpoint().catch((again: unknown) => {
        if (!duplicate(again)) throw again;
      });
    }
  }

  async get(collectionName: string, id: string): Promise<Doc | undefined> {
    const db = await this.database();
    const found = await collection<StoredDoc>(db, collectionName).findOne(
      { _id: id },
      { projection: { _id: 0, _position: 0 } },
    );
    return found ?? undefined;
  }

  async getMany(collectionName: string, ids: readonly string[]): Promise<Doc[]> {
    const db = await this.database();
    return collection<StoredDoc>(db, collectionName)
      .find({ _id: { $in: [...ids] } } as Filter<StoredDoc>, { projection: { _id: 0, _position: 0 }, sort: { _id: 1 } })
      .toArray();
  }

  async find(collectionName: string, filter: Record<string, FilterValue> = {}): Promise<Doc[]> {
    const query: Record<string, unknown> = {};
    for (const [field, value] of filterEntries(filter)) {
      // Plain equality would also match an array containing the value (and null a missing field, which we want).
      query[field] = { $eq: value, $not: { $type: 'array' } };
    }
    const db = await this.database();
    return collection<StoredDoc>(db, collectionName)
      .find(query as Filter<StoredDoc>, { projection: { _id: 0, _position: 0 }, sort: { _id: 1 } })
      .toArray();
  }

  async checkpoint(projection: string): Promise<Checkpoint | undefined> {
    const db = await this.database();
    const found = await db.collection<StoredCheckpoint>(CHECKPOINTS).findOne({ _id: projection });
    return found ? { position: toBigInt(found.position), version: Number(found.version) } : undefined;
  }

  async writtenAfter(collections: string[], position: bigint): Promise<boolean> {
    const db = await this.database();
    const after = { _position: { $gt: toStoredPosition(position) } };
    for (const name of collections) {
      const c = collection<StoredDoc>(db, name);
      // Asked at every start: an index, not a scan of the collection (created once, a no-op afterwards).
      await c.createIndex({ _position: 1 });
      if (await c.findOne(after, { projection: { _id: 1 } })) return true;
    }
    return false;
  }

  async reset(projection: string, collections: string[]): Promise<void> {
    const db = await this.database();
    // Not atomic: first mark the checkpoint as an unknown version, so a crash halfway still reads as "rebuild".
    await db.collection<StoredCheckpoint>(CHECKPOINTS).updateOne({ _id: projection }, { $set: { version: -1 } });
    for (const name of collections) {
      await collection(db, name).drop();
      // A drop takes the collection's indexes with it: without this, `sessions` had no index until the next start.
      await createIndexes(db, name);
    }
    await db.collection<StoredCheckpoint>(CHECKPOINTS).deleteOne({ _id: projection });
  }

  async ping(): Promise<void> {
    const db = await this.database();
    await db.command({ ping: 1 });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await Promise.allSettled([...this.applying]);
    this.closed = true;
    await this.client.close();
  }

  private database(): Promise<Db> {
    if (this.closed) return Promise.reject(new Error('read models are closed'));
    // Any failure, an index's too, lets the next call retry: a promise kept rejected failed every call until a restart.
    this.connecting ??= this.open().catch((err: unknown) => {
      this.connecting = undefined;
      throw err;
    });
    return this.connecting;
  }

  private async open(): Promise<Db> {
    const db = (await this.client.connect()).db(this.dbName);
    for (const name of Object.keys(INDEXED_FIELDS)) await createIndexes(db, name);
    return db;
  }
}

/** The filters INDEXED_FIELDS names for this collection, served by an index (a no-op when it exists). */
async function createIndexes(db: Db, name: string): Promise<void> {
  for (const field of INDEXED_FIELDS[name] ?? []) await collection(db, name).createIndex({ [field]: 1 });
}

function collection<T extends StoredDoc = StoredDoc>(db: Db, name: string): Collection<T> {
  if (name === CHECKPOINTS) throw new Error(`read models: '${CHECKPOINTS}' is reserved for checkpoints`);
  return db.collection<T>(name);
}

/**
 * An upsert whose filter misses because the document is already at or past the change's position tries to insert
 * the same _id and fails with a duplicate key: that change was already applied, unless another writer inserted the
 * document meanwhile. The indexes of the operations refused that way; undefined if anything else failed.
 */
function duplicateKeyOps(err: unknown): number[] | undefined {
  if (!(err instanceof MongoBulkWriteError)) return undefined;
  const writeErrors = Array.isArray(err.writeErrors) ? err.writeErrors : [err.writeErrors];
  const onlyDuplicates = writeErrors.length > 0 && writeErrors.every((e) => e.code === DUPLICATE_KEY) && !err.result.getWriteConcernError();
  return onlyDuplicates ? writeErrors.map((e) => e.index) : undefined;
}

/** The database from the URL path (`mongodb://host/duffy?...`), `duffy` if none. */
function dbNameOf(url: string): string {
  const match = /^mongodb(?:\+srv)?:\/\/[^/?]*\/([^?]*)/.exec(url);
  return match?.[1] ? decodeURIComponent(match[1]) : 'duffy';
}

function toStoredPosition(position: bigint): number {
  if (position < 0n || position > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(`read models: position ${position} is outside what MongoDB numbers hold exactly`);
  }
  return Number(position);
}

function toBigInt(value: number | Long | bigint): bigint {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number') return BigInt(value);
  return value.toBigInt();
}


