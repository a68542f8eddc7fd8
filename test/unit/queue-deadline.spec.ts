import { describe, expect, it } from '@jest/globals';
import type { Catalog } from '../../src/application/catalog.js';
import { WaitingQueue } from '../../src/application/queue.service.js';
import { decideRegisterMachines, decideRegisterTenant, decideRequestSession } from '../../src/domain/decide.js';
import { ledgerInstances } from '../support/ledgers.js';
import { setTimeout as sleep } from 'node:timers/promises';

const POOLS = [{ name: 'p', type: 'baremetal' as const, arch: 'x86_64', platform: 'intel' }];
const DEFAULTS = { nodeQuota: 10, sessionLifetime: 3600, sessionLifetimeMax: 7200 };
const settings = { sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null };

describe('a waiting request whose wait is over', () => {
  const instances = ledgerInstances();

  it('given a wait of 2 s and no pass due for a minute, when its wait is over, then the queue answers it at its deadline, not at the next timer pass', async () => {
    const ledger = await instances.ledger(instances.store());
    const now = () => new Date().toISOString();
    await ledger.decide((w, f) => decideRegisterTenant(w, { name: 't', apiKeyDigest: 't', isAdmin: false, settings, now: now() }, f), { actor: 'test' });
    await ledger.decide((w, f) => decideRegisterMachines(w, POOLS, { machines: [{ hostname: 'm1', ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready' }], now: now() }, f), { actor: 'test' });
    const ask = (sessionId: number, waitSeconds: number) =>
      ledger.decide((w, f) => decideRequestSession(w, POOLS, DEFAULTS, { sessionId, tenantId: 1, specs: [{ pool: 'p', quantity: 1 }], now: now(), contextualize: () => false, waitSeconds }, f), { actor: 't' });
    await ask(1, 0);
    await ask(2, 2);
    const queue = new WaitingQueue(ledger, { profiles: POOLS, defaults: DEFAULTS, pool: () => undefined } as unknown as Catalog);
    queue.start(60_000);
    try {
      queue.poke(); // as the saga does on RequestQueued
      await sleep(200);
      expect(ledger.world.sessions.get(2)!.status).toBe('waiting');
      // Answered within seconds of its deadline (a loaded machine fires timers late), long before the pass due in a minute.
      const deadline = Date.parse(ledger.world.sessions.get(2)!.queue!.until);
      while (ledger.world.sessions.get(2)!.status === 'waiting' && Date.now() < deadline + 10_000) await sleep(50);
      expect(ledger.world.sessions.get(2)!.status).toBe('rejected');
      expect(Date.now()).toBeLessThan(deadline + 10_000);
    } finally {
      await queue.onApplicationShutdown();
    }
  });
});
