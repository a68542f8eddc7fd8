import { join } from 'node:path';
import { type EventStore, WrongExpectedRevisionError } from '../../application/ports/event-store.port.js';
import { storeUrl } from '../../config/config.js';
import { LEDGER_FILE, lockDataDir } from './data-dir-lock.js';
import { KurrentDbEventStore } from './kurrentdb-event-store.js';
import { Logger } from '@nestjs/common';
import { SqliteEventStore } from './sqlite-event-store.js';
import { upgradeLegacyLedger } from './legacy-ledger.js';

/** `DUFFY_EVENTSTORE=kurrentdb://...` selects KurrentDB (EventStoreDB's current name, 25.1+); unset means the embedded SQLite ledger in the data dir. */
export function createEventStore(url: string | undefined, dataDir: string, lockAdvice?: string): EventStore {
  if (!url) {
    // One writer per embedded ledger: a second process on this data dir stops here, naming the first.
    const lock = lockDataDir(dataDir, lockAdvice);
    try {
      const file = join(dataDir, LEDGER_FILE);
      const linked = upgradeLegacyLedger(file);
      if (linked > 0) {
        new Logger('Ledger').warn(
          `${file} was written by the Duffy of 2026-11-26, before the global chain: its ${linked} events are now linked into it (upgraded in place, the events unchanged); their stream hashes cover each event's type and data, not its metadata, which the first checkpoint this server signs covers (duffy audit verify says so)`,
        );
      }
      return watchWrites(new SqliteEventStore(file), () => lock.release());
    } catch (err) {
      lock.release();
      throw err;
    }
  }
  return watchWrites(new KurrentDbEventStore(storeUrl('DUFFY_EVENTSTORE', url)!));
}

/** The last write the store could not make (a full disk...), until a write succeeds again. */
export class WriteHealth {
  failure: { message: string; at: string } | null = null;

  failed(err: unknown): void {
    this.failure = { message: String((err as Error)?.message ?? err), at: new Date().toISOString() };
  }

  succeeded(): void {
    this.failure = null;
  }
}

const healthOf = new WeakMap<EventStore, WriteHealth>();

/** The write health of a store this factory made; undefined for one handed in from elsewhere (tests). */
export function writeHealthOf(store: EventStore): WriteHealth | undefined {
  return healthOf.get(store);
}

/**
 * Decorates a store so that every append's outcome is recorded for /health, whatever the port's other methods
 * are (a Proxy, not a subclass: the adapters stay untouched). A lost revision race is an answer, not a failure.
 */
function watchWrites(store: EventStore, onClose?: () => void): EventStore {
  const health = new WriteHealth();
  const watched = new Proxy(store, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      if (prop === 'append') {
        return async (...args: unknown[]) => {
          try {
            const result: unknown = await value.apply(target, args);
            health.succeeded();
            return result;
          } catch (err) {
            if (!(err instanceof WrongExpectedRevisionError)) health.failed(err);
            throw err;
          }
        };
      }
      if (prop === 'close' && onClose) {
        return async (...args: unknown[]) => {
          try {
            return await value.apply(target, args);
          } finally {
            onClose();
          }
        };
      }
      return value.bind(target);
    },
  });
  healthOf.set(watched, health);
  return watched;
}
