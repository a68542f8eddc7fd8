import { describe, it } from '@jest/globals';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storeUrl, withoutPassword } from '../../src/config/config.js';
import { KurrentDbEventStore } from '../../src/adapters/eventstore/kurrentdb-event-store.js';
import { SqliteEventStore } from '../../src/adapters/eventstore/sqlite-event-store.js';
import { eventStoreContract } from './event-store.contract.js';

const dir = mkdtempSync(join(tmpdir(), 'duffy-es-'));
eventStoreContract('embedded SQLite (group commit)', async () => new SqliteEventStore(join(dir, 'group.sqlite')));
eventStoreContract('embedded SQLite (one fsync per append)', async () => new SqliteEventStore(join(dir, 'single.sqlite'), { groupCommit: false }));
// Every lean catch-up from the file read ahead on the reader thread, as a rebuild's is.
eventStoreContract('embedded SQLite (lean catch-up read ahead)', async () => new SqliteEventStore(join(dir, 'ahead.sqlite'), { readAheadFrom: 0 }));

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
