import { describe, expect, it, jest } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteEventStore } from '../../src/adapters/eventstore/sqlite-event-store.js';
import { RecentEvents } from '../../src/http/ops/events.controller.js';
import type { Ledger } from '../../src/application/ledger.service.js';

/**
 * GET /events reads the newest events from the store. After a restart it once read the whole ledger forwards from
 * position 0 to find the newest 200, on the main thread without yielding: 1.2 s with 320,000 events (40,000
 * sessions of history), every other request held meanwhile.
 */
describe('RecentEvents', () => {
  it('reads only the newest events of a long ledger, not its whole history', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-recent-'));
    const store = new SqliteEventStore(join(dir, 'ledger.sqlite'));
    try {
      for (let i = 0; i < 30; i++) {
        await store.append([{ stream: `s-${i}`, expected: 'no_stream', events: Array.from({ length: 100 }, (_, n) => ({ type: 'T', data: { i, n }, metadata: {} })) }]);
      }
      const readAll = jest.spyOn(store, 'readAll');
      const ledger = { store, world: { position: 3000n } } as unknown as Ledger;
      const recent = new RecentEvents(ledger);
      const newest = await recent.newest(50);
      expect(newest.map((e) => e.position)).toEqual(Array.from({ length: 50 }, (_, k) => 3000n - BigInt(k)));
      expect((await recent.newest(200)).at(-1)?.position).toBe(2801n);
      // The 3,000 events before them were never read.
      expect(readAll).not.toHaveBeenCalled();
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
