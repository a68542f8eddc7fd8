import { afterEach } from '@jest/globals';
import type { EventBus } from '@nestjs/cqrs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EventStore } from '../../src/application/ports/event-store.port.js';
import { Ledger } from '../../src/application/ledger.service.js';
import { SqliteEventStore } from '../../src/adapters/eventstore/sqlite-event-store.js';
import { decideRegisterMachines, decideRegisterTenant } from '../../src/domain/decide.js';
import type { PoolProfile, TenantSettings } from '../../src/domain/events.js';

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

/** The race specs' farm on `ledger`: tenants admin (1) and t (2) with `settings`, machines m1-m3 ready in the first pool. */
export async function registerSmallFarm(ledger: Ledger, farm: { pools: readonly PoolProfile[]; settings: TenantSettings; now: string }): Promise<Ledger> {
  const { pools, settings, now } = farm;
  await ledger.decide((w, f) => decideRegisterTenant(w, { name: 'admin', apiKeyDigest: 'a', isAdmin: true, settings, now }, f), { actor: 'test' });
  await ledger.decide((w, f) => decideRegisterTenant(w, { name: 't', apiKeyDigest: 't', isAdmin: false, settings, now }, f), { actor: 'test' });
  const machines = ['m1', 'm2', 'm3'].map((hostname) => ({ hostname, ipaddr: null, pool: pools[0].name, reusable: true, data: {}, state: 'ready' as const }));
  await ledger.decide((w, f) => decideRegisterMachines(w, pools, { machines, now }, f), { actor: 'test' });
  return ledger;
}
