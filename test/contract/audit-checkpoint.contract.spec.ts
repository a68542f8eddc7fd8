import { describe, it } from '@jest/globals';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storeUrl, withoutPassword } from '../../src/config/config.js';
import { KurrentDbEventStore } from '../../src/adapters/eventstore/kurrentdb-event-store.js';
import { SqliteEventStore } from '../../src/adapters/eventstore/sqlite-event-store.js';
import { auditCheckpointContract } from './audit-checkpoint.contract.js';

const dir = mkdtempSync(join(tmpdir(), 'duffy-audit-'));
auditCheckpointContract('embedded SQLite', async () => new SqliteEventStore(join(dir, 'ledger.sqlite')));

// A set but unsupported URL fails the suite (as it fails start-up), it is not skipped.
const esdb = storeUrl('DUFFY_EVENTSTORE', process.env.DUFFY_EVENTSTORE);
if (esdb) {
  auditCheckpointContract(`EventStoreDB at ${withoutPassword(esdb)}`, async () => new KurrentDbEventStore(esdb));
} else {
  console.log('SKIPPED: EventStoreDB audit checkpoint suite (set DUFFY_EVENTSTORE=esdb://... e.g. after `docker compose up -d eventstore`)');
  describe('audit checkpoints: EventStoreDB', () => {
    it.skip('SKIPPED: no DUFFY_EVENTSTORE=esdb://... server configured', () => undefined);
  });
}
