import { describe, expect, it, jest } from '@jest/globals';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storeUrl, withoutPassword } from '../../src/config/config.js';
import { KurrentDbEventStore } from '../../src/adapters/eventstore/kurrentdb-event-store.js';
import { SqliteEventStore, timeOrderedId } from '../../src/adapters/eventstore/sqlite-event-store.js';
import { eventStoreContract } from './event-store.contract.js';

const dir = mkdtempSync(join(tmpdir(), 'duffy-es-'));
eventStoreContract('embedded SQLite (group commit)', async () => new SqliteEventStore(join(dir, 'group.sqlite')));
eventStoreContract('embedded SQLite (one fsync per append)', async () => new SqliteEventStore(join(dir, 'single.sqlite'), { groupCommit: false }));
// Every lean catch-up from the file read ahead on the reader thread, as a rebuild's is.
eventStoreContract('embedded SQLite (lean catch-up read ahead)', async () => new SqliteEventStore(join(dir, 'ahead.sqlite'), { readAheadFrom: 0 }));

// Embedded only (KurrentDB makes its own ids): random ids dirtied a page of the id index per event, time-ordered ones
// add to its end. Ordered over concurrent calls in one group commit, and across commits.
describe('embedded SQLite: event ids', () => {
  it('are UUIDv7, in position order, so the id index grows at its end', async () => {
    const store = new SqliteEventStore(join(dir, 'ids.sqlite'));
    try {
      const event = (n: number) => ({ type: 'Counted', data: { n } });
      const calls = Array.from({ length: 20 }, (_, i) => store.append([{ stream: `ids-a-${i}`, expected: 'no_stream', events: [event(1), event(2)] }, { stream: `ids-b-${i}`, expected: 'any', events: [event(3)] }]));
      await Promise.all(calls);
      await store.append([{ stream: 'ids-later', expected: 'no_stream', events: [event(4)] }]);
      const ids = (await store.readAll(0n, 1000)).map((e) => e.id);
      expect(ids).toHaveLength(61);
      for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect([...ids].sort()).toEqual(ids);
    } finally {
      await store.close();
    }
  });

  it('stay in the order they were made when the clock steps back, and past 4,096 in one millisecond', () => {
    const now = jest.spyOn(Date, 'now');
    try {
      const ids: string[] = [];
      now.mockReturnValue(Date.UTC(2030, 0, 1));
      for (let i = 0; i < 5000; i++) ids.push(timeOrderedId());
      now.mockReturnValue(Date.UTC(2029, 0, 1));
      for (let i = 0; i < 10; i++) ids.push(timeOrderedId());
      expect(new Set(ids).size).toBe(ids.length);
      expect([...ids].sort()).toEqual(ids);
    } finally {
      now.mockRestore();
    }
  });
});

// A set but unsupported URL fails the suite (as it fails start-up), it is not skipped.
const esdb = storeUrl('DUFFY_EVENTSTORE', process.env.DUFFY_EVENTSTORE);
if (esdb) {
  eventStoreContract(`KurrentDB at ${withoutPassword(esdb)}`, async () => new KurrentDbEventStore(esdb));
} else {
  console.log('SKIPPED: KurrentDB (EventStoreDB) contract suite (set DUFFY_EVENTSTORE=kurrentdb://localhost:2113?tls=false, e.g. after `docker compose up -d eventstore`)');
  describe('event store contract: EventStoreDB', () => {
    it.skip('SKIPPED: no DUFFY_EVENTSTORE=kurrentdb://... server configured', () => undefined);
  });
}
