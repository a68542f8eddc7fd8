import { describe, it } from '@jest/globals';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EsdbEventStore } from '../../src/eventstore/esdb-event-store.js';
import { SqliteEventStore } from '../../src/eventstore/sqlite-event-store.js';
import { eventStoreContract } from './event-store.contract.js';

const dir = mkdtempSync(join(tmpdir(), 'duffy-es-'));
eventStoreContract('embedded SQLite (group commit)', async () => new SqliteEventStore(join(dir, 'group.sqlite')));
eventStoreContract('embedded SQLite (one fsync per append)', async () => new SqliteEventStore(join(dir, 'single.sqlite'), false));

const esdb = process.env.DUFFY_EVENTSTORE;
if (esdb && /^esdb/.test(esdb)) {
  eventStoreContract(`EventStoreDB at ${esdb}`, async () => new EsdbEventStore(esdb));
} else {
  console.log('SKIPPED: EventStoreDB contract suite (set DUFFY_EVENTSTORE=esdb://... e.g. after `docker compose up -d eventstore`)');
  describe('event store contract: EventStoreDB', () => {
    it.skip('SKIPPED: no DUFFY_EVENTSTORE=esdb://... server configured', () => undefined);
  });
}
