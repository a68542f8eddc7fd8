import { describe, expect, it } from '@jest/globals';
import type { Catalog } from '../../src/application/catalog.js';
import type { EventStore, StreamWrite } from '../../src/application/ports/event-store.port.js';
import { WaitingQueue } from '../../src/application/queue.service.js';
import { decideLeaveQueue, decideRegisterMachines, decideRegisterTenant, decideRequestSession } from '../../src/domain/decide.js';
import { ledgerInstances } from '../support/ledgers.js';

const POOLS = [{ name: 'p', type: 'baremetal' as const, arch: 'x86_64', platform: 'intel' }];
const DEFAULTS = { nodeQuota: 10, sessionLifetime: 3600, sessionLifetimeMax: 7200 };
const settings = { sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null };

describe('a queue pass while waiting requests are cancelled', () => {
  const instances = ledgerInstances();

  it('given a request cancelled while the pass writes an earlier one out of the queue, when the pass reaches it, then the pass goes on (it threw on its missing queue place)', async () => {
    const store = instances.store();
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    // The first request's leaving waits at the store's door until the second one's cancel has landed.
    const held = new Proxy(store, {
      get: (target, prop) => {
        if (prop === 'append') {
          return async (writes: StreamWrite[]) => {
            if (writes.some((w) => w.stream === 'session-2' && w.events.some((e) => e.type === 'SessionRejected'))) await gate;
            return target.append(writes);
          };
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as EventStore;
    const ledger = await instances.ledger(held);
    const now = () => new Date().toISOString();
    await ledger.decide((w, f) => decideRegisterTenant(w, { name: 't', apiKeyDigest: 't', isAdmin: false, settings, now: now() }, f), { actor: 'test' });
    await ledger.decide((w, f) => decideRegisterMachines(w, POOLS, { machines: [{ hostname: 'm1', ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready' }], now: now() }, f), { actor: 'test' });
    const ask = (sessionId: number, waitSeconds: number) =>
      ledger.decide((w, f) => decideRequestSession(w, POOLS, DEFAULTS, { sessionId, tenantId: 1, specs: [{ pool: 'p', quantity: 1 }], now: now(), contextualize: () => false, waitSeconds }, f), { actor: 't' });
    await ask(1, 0);
    await ask(2, 0.05); // its wait is over first: it leaves the queue first in the pass
    await ask(3, 60);
    await new Promise((r) => setTimeout(r, 100));

    const queue = new WaitingQueue(ledger, { profiles: POOLS, defaults: DEFAULTS, pool: () => undefined } as unknown as Catalog);
    const pass = (queue as unknown as { pass(): Promise<void> }).pass();
    await ledger.decide((w) => decideLeaveQueue(w.sessions.get(3)!, 'cancelled by t', now()), { actor: 't' });
    open();
    await expect(pass).resolves.toBeUndefined();
    expect([2, 3].map((id) => ledger.world.sessions.get(id)!.status)).toEqual(['rejected', 'rejected']);
  });
});
