import { join } from 'node:path';
import { type EventStore } from '../../application/ports/event-store.port.js';
import { KurrentDbEventStore } from './kurrentdb-event-store.js';
import { SqliteEventStore } from './sqlite-event-store.js';

/** `DUFFY_EVENTSTORE=kurrentdb://...` selects KurrentDB (EventStoreDB's current name, 25.1+); unset means the embedded SQLite ledger in the data dir. */
export function createEventStore(url: string | undefined, dataDir: string): EventStore {
  if (!url) return new SqliteEventStore(join(dataDir, 'ledger.sqlite'));
  if (/^(esdb|kurrentdb|kurrent|kdb)(\+discover)?:\/\//.test(url)) return new KurrentDbEventStore(url);
  throw new Error(`DUFFY_EVENTSTORE: unsupported URL '${url}' (expected kurrentdb://... (esdb://... still works) or unset for the embedded ledger)`);
}
