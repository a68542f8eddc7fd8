import { describe, expect, it } from '@jest/globals';
import type { EventStore } from '../../src/application/ports/event-store.port.js';
import { verifyChains } from '../../src/audit/chain.js';
import type { DuffyEvent } from '../../src/domain/events.js';
import { ledgerInstances } from '../support/ledgers.js';
const quarantined = (machineId: number): DuffyEvent => ({ type: 'MachineQuarantined', data: { machineId, reason: 'test', at: '2026-11-29T20:00:00.000Z' } }) as DuffyEvent;

describe('Ledger: the hash chain goes on from the real head', () => {
  const instances = ledgerInstances();

  it('when this instance has not seen the stream head yet, it reads it from the store instead of chaining on genesis', async () => {
    const store = instances.store();
    const first = await instances.ledger(store);
    expect((await first.record([{ stream: 'machine-m1', expected: 'no_stream', events: [quarantined(1)] }], { actor: 'first' })).ok).toBe(true);

    // Another instance that has not caught up yet (its start found nothing, its subscription delivers 100 ms late):
    // it knows no head of machine-m1 when it appends at revision 0.
    const late: EventStore = Object.assign(Object.create(store) as EventStore, {
      readAll: async () => [],
      subscribeAll: (...args: Parameters<EventStore['subscribeAll']>) => {
        let subscription: ReturnType<EventStore['subscribeAll']> | undefined;
        const timer = setTimeout(() => (subscription = store.subscribeAll(...args)), 100);
        return { close: async () => (clearTimeout(timer), await subscription?.close()) };
      },
    });
    const second = await instances.ledger(late);
    expect((await second.record([{ stream: 'machine-m1', expected: 0, events: [quarantined(1)] }], { actor: 'second' })).ok).toBe(true);

    const events = await store.readAll(0n, 100);
    expect(events.map((e) => e.revision)).toEqual([0, 1]);
    expect(verifyChains(events).breaks).toEqual([]);
  });
});
