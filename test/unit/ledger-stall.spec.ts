import { describe, expect, it, jest } from '@jest/globals';
import { EventBus } from '@nestjs/cqrs';
import type { EventStore } from '../../src/application/ports/event-store.port.js';
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
    subscribeAll: () => ({ close: async () => undefined }),
    ping: async () => undefined,
    close: async () => undefined,
  };
}

describe('Ledger: an append that never comes back through the subscription', () => {
  it('answers unavailable after 30 s, naming the position, and not before', async () => {
    jest.useFakeTimers();
    try {
      const ledger = new Ledger(silentStore(), { publish: () => undefined } as unknown as EventBus);
      await ledger.start();
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
    } finally {
      jest.useRealTimers();
    }
  });
});
