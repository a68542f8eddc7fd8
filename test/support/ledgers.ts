import { afterEach } from '@jest/globals';
import type { EventBus } from '@nestjs/cqrs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EventStore } from '../../src/application/ports/event-store.port.js';
import { Ledger } from '../../src/application/ledger.service.js';
import { SqliteEventStore } from '../../src/adapters/eventstore/sqlite-event-store.js';

const bus = { publish: () => undefined } as unknown as EventBus;

/**
 * Ledgers without the app (no sagas: events go to a bus that drops them), as several instances sharing one store
 * would run; everything opened is closed after each test, last first.
 */
export function ledgerInstances() {
  const opened: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const close of opened.splice(0).reverse()) await close();
  });
  return {
    /** An embedded store in a fresh temporary directory. */
    store(): SqliteEventStore {
      const store = new SqliteEventStore(join(mkdtempSync(join(tmpdir(), 'duffy-ledger-')), 'ledger.sqlite'));
      opened.push(() => store.close());
      return store;
    },
    /** A started Ledger on `store`. */
    async ledger(store: EventStore): Promise<Ledger> {
      const ledger = new Ledger(store, bus);
      await ledger.start();
      opened.push(() => ledger.onApplicationShutdown().catch(() => undefined));
      return ledger;
    },
  };
}
