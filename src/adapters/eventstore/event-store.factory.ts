import { join } from 'node:path';
import { type EventStore, WrongExpectedRevisionError } from '../../application/ports/event-store.port.js';
import { storeUrl } from '../../config/config.js';
import { LEDGER_FILE, assertNoRestoreUnfinished, lockDataDir } from './data-dir-lock.js';
import { KurrentDbEventStore } from './kurrentdb-event-store.js';
import { Logger } from '@nestjs/common';
import { SqliteEventStore } from './sqlite-event-store.js';
import { upgradeLegacyLedger } from './legacy-ledger.js';
import { storageFault } from '../../application/ports/storage-fault.port.js';
import { FULL_DISK_BYTES, freeBytes } from '../disk-space.js';

/** `DUFFY_EVENTSTORE=kurrentdb://...` selects KurrentDB (EventStoreDB's current name, 25.1+); unset means the embedded SQLite ledger in the data dir. */
export function createEventStore(url: string | undefined, dataDir: string, lockAdvice?: string): EventStore {
  if (!url) {
    // One writer per embedded ledger: a second process on this data dir stops here, naming the first.
    const lock = lockDataDir(dataDir, lockAdvice);
    try {
      assertNoRestoreUnfinished(dataDir);
      const file = join(dataDir, LEDGER_FILE);
      const linked = upgradeLegacyLedger(file);
      if (linked > 0) {
        new Logger('Ledger').warn(
          `${file} was written by the Duffy of 2026-11-26, before the global chain: its ${linked} events are now linked into it (upgraded in place, the events unchanged); their stream hashes cover each event's type and data, not its metadata, which the first checkpoint this server signs covers (duffy audit verify says so)`,
        );
      }
      return watchWrites(new SqliteEventStore(file), () => lock.release(), dataDir);
    } catch (err) {
      lock.release();
      throw err;
    }
  }
  return watchWrites(new KurrentDbEventStore(storeUrl('DUFFY_EVENTSTORE', url)!));
}

/** The last write the store could not make (a full disk...), until a write succeeds again. */
export class WriteHealth {
  failure: { message: string; at: string; full: boolean } | null = null;

  /** `dir`: where the embedded ledger writes, whose free space tells a full disk before a write fails or after it mends. */
  constructor(readonly dir?: string) {}

  failed(err: unknown): void {
    this.failure = { message: String((err as Error)?.message ?? err), at: new Date().toISOString(), full: storageFault(err)?.full === true };
  }

  succeeded(): void {
    this.failure = null;
  }

  /**
   * For /health: why writes fail or will, or null. A failure stands until a write succeeds, except a full disk's,
   * which ends when the disk has room again: a load balancer that waits for /health would send no write to end it.
   * A disk that filled while nothing was written is down before the next write fails.
   */
  async problem(): Promise<{ down: string } | { recovering: string } | null> {
    const free = this.dir === undefined ? undefined : await freeBytes(this.dir);
    const full = free !== undefined && free < FULL_DISK_BYTES;
    const failure = this.failure;
    if (failure && (!failure.full || free === undefined || full)) return { down: `last write failed at ${failure.at}: ${failure.message}` };
    if (failure) return { recovering: `last write failed at ${failure.at} (${failure.message}); the disk under ${this.dir} has ${free} bytes free again` };
    return full ? { down: `the disk under ${this.dir} is full (${free} bytes free): the next write will fail` } : null;
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
function watchWrites(store: EventStore, onClose?: () => void, dir?: string): EventStore {
  const health = new WriteHealth(dir);
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
