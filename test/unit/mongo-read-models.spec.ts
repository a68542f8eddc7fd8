import { describe, expect, it } from '@jest/globals';
import { type MongoClient, MongoServerError } from 'mongodb';
import { MongoReadModels } from '../../src/adapters/readmodels/mongo-read-models.js';

/**
 * The MongoDB adapter's own logic over a stand-in database (no server here). Against a real server the same
 * behaviour is test/contract/read-models.contract.spec.ts with DUFFY_READMODELS set.
 */
describe('MongoDB read models (database stand-in)', () => {
  it('moves a checkpoint another writer created at the same instant, instead of taking its duplicate key as "already past"', async () => {
    // The server's answer to two concurrent upserts of one new checkpoint: the loser's insert is a duplicate key
    // (E11000), although its position may be the newer one. The document exists after that, so a second try decides.
    const calls: unknown[] = [];
    const checkpoints = {
      updateOne: async (...args: unknown[]) => {
        calls.push(args);
        if (calls.length === 1) throw new MongoServerError({ code: 11000, errmsg: 'E11000 duplicate key error collection: duffy._checkpoints' });
        return { acknowledged: true, matchedCount: 1, modifiedCount: 1, upsertedCount: 0, upsertedId: null };
      },
    };
    const store = new MongoReadModels('mongodb://localhost:1/duffy');
    (store as unknown as { connecting: Promise<unknown> }).connecting = Promise.resolve({ collection: () => checkpoints });
    await store.apply('p', 1, [], 20n);
    expect(calls).toHaveLength(2);
    expect(calls[1]).toEqual(calls[0]);
    await store.close();
  });
});

/** A stand-in for the driver's client: connect() answers a db whose collections record createIndex and drop. */
function standIn(failIndexOnce: boolean) {
  const created: string[] = [];
  let failing = failIndexOnce;
  const db = {
    collection: (name: string) => ({
      createIndex: async (spec: Record<string, number>) => {
        if (failing) {
          failing = false;
          throw new Error('connection reset');
        }
        created.push(`${name}:${Object.keys(spec).join(',')}`);
        return 'ok';
      },
      drop: async () => true,
      findOne: async () => null,
      updateOne: async () => ({}),
      deleteOne: async () => ({}),
    }),
  };
  let connects = 0;
  const client = { connect: async () => (connects++, client), db: () => db, close: async () => undefined };
  return { client, created, connects: () => connects };
}

describe('MongoDB read models: connecting and indexes (driver stand-in)', () => {
  it('connects again after creating an index failed, instead of failing every later call', async () => {
    const s = standIn(true);
    const store = new MongoReadModels('mongodb://localhost:1/duffy');
    (store as unknown as { client: unknown }).client = s.client;
    await expect(store.checkpoint('p')).rejects.toThrow('connection reset');
    await expect(store.checkpoint('p')).resolves.toBeUndefined();
    expect(s.connects()).toBe(2);
    await store.close();
  });

  it('creates the indexes of the collections a reset dropped again', async () => {
    const s = standIn(false);
    const store = new MongoReadModels('mongodb://localhost:1/duffy');
    (store as unknown as { client: unknown }).client = s.client;
    await store.ping().catch(() => undefined);
    s.created.length = 0;
    await store.reset('entities', ['tenants', 'machines', 'sessions']);
    expect(s.created).toContain('sessions:status');
    await store.close();
  });
});

describe('MongoDB read models: write concern (the driver parses the URL; no server involved)', () => {
  const writeConcern = (url: string) => (new MongoReadModels(url) as unknown as { client: MongoClient }).client.options.writeConcern;
  it('writes with w: majority when the URL does not say, so a write it acknowledged survives a failover', () => {
    expect(writeConcern('mongodb://db1,db2,db3/duffy?replicaSet=rs0')?.w).toBe('majority');
    expect(writeConcern('mongodb://db1/duffy?journal=true')).toMatchObject({ w: 'majority', journal: true });
  });
  it("keeps the URL's own w", () => {
    expect(writeConcern('mongodb://db1/duffy?w=1')?.w).toBe(1);
    expect(writeConcern('mongodb://db1/duffy?w=2&wtimeoutMS=5000')).toMatchObject({ w: 2, wtimeoutMS: 5000 });
  });
});
