import type { Command } from 'commander';
import type { EventBus } from '@nestjs/cqrs';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createEventStore } from '../adapters/eventstore/event-store.factory.js';
import type { EventStore } from '../application/ports/event-store.port.js';
import { assertLedgerReadable } from '../adapters/eventstore/sqlite-event-store.js';
import { isLegacyLedger } from '../adapters/eventstore/legacy-ledger.js';
import { LEDGER_FILE } from '../adapters/eventstore/data-dir-lock.js';
import { digestKey, digestsOf, isUuid } from '../application/catalog.js';
import { Ledger } from '../application/ledger.service.js';
import { decideUpdateTenant, refusal } from '../domain/decide.js';
import { NotFoundError } from '../audit/not-found.js';
import { DomainError } from '../domain/errors.js';
import { UsageError } from './client.js';
import { dataDirOf } from '../config/config.js';

/** Events a command appends offline reach no saga: the server, started later, folds them from the ledger. */
const NO_BUS = { publish: () => undefined } as unknown as EventBus;

/** `work` on a Ledger over `store` that a command opens while no server runs on it; the store is closed after. */
export async function offline<T>(store: EventStore, work: (ledger: Ledger) => Promise<T>): Promise<T> {
  const ledger = new Ledger(store, NO_BUS);
  try {
    await ledger.start();
    return await work(ledger);
  } finally {
    await ledger.onApplicationShutdown();
  }
}

/**
 * `duffy admin-key <admin>`: a new API key for an admin tenant, written to the ledger directly, for an operator who
 * lost every admin key (the API cannot help then). Whoever can run it can read and write the data directory anyway.
 * On the embedded ledger the server must be stopped (the data directory's lock says so); on KurrentDB it may run.
 */
export function recoveryCommands(duffy: Command, out: (line: string) => void): void {
  duffy
    .command('admin-key')
    .description("give an admin tenant a new API key straight in the ledger (an operator who lost every admin key; the embedded ledger's server must be stopped)")
    .argument('<admin>', 'name of the admin tenant')
    .option('--data-dir <dir>', 'the data directory (DUFFY_DATA_DIR, default ./data)')
    .option('--eventstore <url>', 'a KurrentDB ledger instead (DUFFY_EVENTSTORE)')
    .option('--new-key <uuid>', 'the key to give (default: a new random one, printed)')
    .action(async (name: string, o: { dataDir?: string; eventstore?: string; newKey?: string }) => {
      if (o.newKey !== undefined && !isUuid(o.newKey)) throw new UsageError('--new-key must be a UUID (the form every Duffy API key has)');
      const url = o.eventstore ?? (process.env.DUFFY_EVENTSTORE || undefined);
      const key = o.newKey ?? randomUUID();
      const dataDir = o.dataDir !== undefined ? resolve(o.dataDir) : dataDirOf();
      if (!url) {
        const file = join(dataDir, LEDGER_FILE);
        // A mistyped directory would otherwise get a new empty ledger and a misleading "no admin tenant".
        if (!existsSync(file)) throw new NotFoundError(`no ledger at ${file} (give the data directory of the stopped Duffy with --data-dir or DUFFY_DATA_DIR)`);
        // As the server's start does: a damaged ledger is named in one line, before the store opens it for writing.
        assertLedgerReadable(file, isLegacyLedger(file));
      }
      const store = createEventStore(url, dataDir, 'Stop that Duffy first: admin-key writes to its ledger (while it runs, another admin can give a key: PUT /api/v1/tenants/{id} {"api_key": "reset"})');
      try {
        await offline(store, (ledger) => {
          // The ledger's clock, not the host's: one set back would date the key's change before a signed checkpoint (back-dated to verify).
          const now = ledger.clock.now();
          return ledger.decide(
            (world, inFlight) => {
              const tenant = [...world.tenants.values()].find((t) => t.name === name);
              if (!tenant || !tenant.isAdmin) return refusal('not_found', `no admin tenant named ${JSON.stringify(name)} in this ledger`);
              if (tenant.retiredAt !== null) return refusal('invalid', `admin ${name} is retired`);
              return decideUpdateTenant(tenant, { changes: { apiKeyDigest: digestKey(key) }, keyDigests: [...digestsOf(key)], now }, world, inFlight);
            },
            { actor: 'duffy admin-key (offline)', correlationId: randomUUID(), at: now },
          );
        });
      } catch (err) {
        throw err instanceof DomainError && err.kind === 'not_found' ? new NotFoundError(err.message) : err;
      }
      out(`# the new key of ${name} (the old one no longer works); shown once`);
      out(`export DUFFY_ADMIN_KEY=${key}`);
    });
}
