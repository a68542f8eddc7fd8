import { describe, expect, it, jest } from '@jest/globals';
import { EventBus } from '@nestjs/cqrs';
import { type EventStore, WrongExpectedRevisionError } from '../../src/application/ports/event-store.port.js';
import { Ledger } from '../../src/application/ledger.service.js';
import { DomainError } from '../../src/domain/errors.js';

/** A store that makes appends durable but whose subscription never delivers them (a broken subscription). */
function silentStore(): EventStore {
  let position = 0n;
  return {
    singleWriter: true,
    append: async (writes) => ({ position: (position += BigInt(writes.reduce((n, w) => n + w.events.length, 0))), nextExpectedRevisions: writes.map((w) => w.events.length - 1) }),
    readStream: async () => [],
    readAll: async () => [],
    readLast: async () => [],
    subscribeAll: () => ({ close: async () => undefined }),
    subscribeAllLean: () => ({ close: async () => undefined }),
    ping: async () => undefined,
    close: async () => undefined,
  };
}

/** `test` on a started Ledger over silentStore, under Jest's fake timers. */
async function onFakeTimers(test: (ledger: Ledger) => Promise<void>): Promise<void> {
  jest.useFakeTimers();
  try {
    const ledger = new Ledger(silentStore(), { publish: () => undefined } as unknown as EventBus);
    await ledger.start();
    await test(ledger);
  } finally {
    jest.useRealTimers();
  }
}

describe('Ledger: an append that never comes back through the subscription', () => {
  it('answers unavailable after 30 s, naming the position, and not before', () =>
    onFakeTimers(async (ledger) => {
      let outcome: unknown = 'pending';
      void ledger
        .record([{ stream: 'tenant-1', expected: 'no_stream', events: [{ type: 'QuotaClaimed', data: { tenantId: 1, sessionId: 1, count: 1, at: 'x' } }] }], { actor: 'test' })
        .then(
          () => (outcome = 'resolved'),
          (err) => (outcome = err),
        );
      await jest.advanceTimersByTimeAsync(29_000);
      expect(outcome).toBe('pending');
      await jest.advanceTimersByTimeAsync(2_000);
      expect(outcome).toBeInstanceOf(DomainError);
      expect((outcome as DomainError).kind).toBe('unavailable');
      expect((outcome as DomainError).message).toMatch(/did not deliver position 1 back in time/);
      await ledger.onApplicationShutdown();
    }));
});

describe('Ledger: a stop while a caller waits for the World (a hand-over of up to 15 min)', () => {
  it('answers the wait unavailable at once and leaves no timer behind', () =>
    onFakeTimers(async (ledger) => {
      const outcome = ledger.until(() => false, 900_000).catch((err: unknown) => err);
      expect(jest.getTimerCount()).toBe(1);
      await ledger.onApplicationShutdown();
      expect(await outcome).toMatchObject({ kind: 'unavailable', message: 'Duffy is stopping; ask again' });
      expect(jest.getTimerCount()).toBe(0);
    }));
});

describe('Ledger: a decision that keeps conflicting', () => {
  it('is taken again after each conflict, then answered 409 after the fifth append', async () => {
    let appends = 0;
    const store: EventStore = {
      ...silentStore(),
      append: async (writes) => {
        appends += 1;
        throw new WrongExpectedRevisionError(writes[0].stream, writes[0].expected, 7);
      },
    };
    const ledger = new Ledger(store, { publish: () => undefined } as unknown as EventBus);
    await ledger.start();
    let decided = 0;
    const outcome = await ledger
      .decide(() => (decided++, [{ stream: 'tenant-1', expected: 'no_stream', events: [{ type: 'TenantRetired', data: { tenantId: 1, at: 'x' } }] }]), { actor: 'test' })
      .catch((err: unknown) => err);
    expect(outcome).toBeInstanceOf(DomainError);
    expect(outcome).toMatchObject({ kind: 'conflict', message: 'the ledger changed under this request too often; try again' });
    expect({ decided, appends }).toEqual({ decided: 5, appends: 5 });
    await ledger.onApplicationShutdown();
  });
});
