import { join } from 'node:path';
import { type EventStore } from './event-store.port.js';
import { EsdbEventStore } from './esdb-event-store.js';
import { SqliteEventStore } from './sqlite-event-store.js';

/** `DUFFY_EVENTSTORE=esdb://...` selects EventStoreDB; unset means the embedded SQLite ledger in the data dir. */
export function createEventStore(url: string | undefined, dataDir: string): EventStore {
  if (!url) return new SqliteEventStore(join(dataDir, 'ledger.sqlite'));
  if (/^(esdb|esdb\+discover|kurrentdb|kdb):\/\//.test(url)) return new EsdbEventStore(url);
  throw new Error(`DUFFY_EVENTSTORE: unsupported URL '${url}' (expected esdb://... or unset for the embedded ledger)`);
}
