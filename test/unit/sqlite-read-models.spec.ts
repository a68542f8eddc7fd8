import { afterEach, describe, expect, it, jest } from '@jest/globals';
import Database from 'better-sqlite3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteReadModels } from '../../src/adapters/readmodels/sqlite-read-models.js';

describe('the embedded read models: what GET /sessions asks is read through an index', () => {
  afterEach(() => {
    jest.restoreAllMocks();
  });

  it('finds open sessions by status with the partial index on sessions, not by reading every session ever stored', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'duffy-rm-index-')), 'readmodels.sqlite');
    const store = new SqliteReadModels(file);
    const asked: string[] = [];
    const prepare = Database.prototype.prepare;
    jest.spyOn(Database.prototype, 'prepare').mockImplementation(function (this: Database.Database, sql: string) {
      if (sql.startsWith("SELECT id, doc FROM docs")) asked.push(sql);
      return prepare.call(this, sql);
    } as typeof prepare);
    try {
      const changes = Array.from({ length: 300 }, (_, i) => ({ op: 'put' as const, collection: 'sessions', id: String(i), doc: { id: i, tenantId: i % 3, status: i % 100 === 0 ? 'active' : 'ended' }, position: BigInt(i + 1) }));
      await store.apply('entities', 1, changes, 300n);
      expect((await store.find('sessions', { tenantId: 0, status: 'active' })).map((d) => d.id)).toEqual([0]);
      expect((await store.find('sessions', { status: 'active' })).map((d) => d.id)).toEqual([0, 100, 200]);
      expect((await store.find('machines', { status: 'active' })).map((d) => d.id)).toEqual([]);
    } finally {
      await store.close();
    }
    const db = new Database(file, { readonly: true });
    try {
      const plan = (sql: string) => (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...Array.from(sql.matchAll(/\?/g), () => 'x')) as Array<{ detail: string }>).map((r) => r.detail).join('; ');
      const [both, byStatus, other] = asked;
      expect(plan(both)).toMatch(/USING INDEX docs_sessions_status/);
      expect(plan(byStatus)).toMatch(/USING INDEX docs_sessions_status/);
      // Another collection is not indexed by status: its own key.
      expect(plan(other)).not.toMatch(/docs_sessions_status/);
    } finally {
      db.close();
    }
  });
});
