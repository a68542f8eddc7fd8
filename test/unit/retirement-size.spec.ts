import { describe, expect, it } from '@jest/globals';
import type { Ledger } from '../../src/application/ledger.service.js';
import { decideEndSession, decideRegisterMachines, decideRequestSession, decideUpdateTenant } from '../../src/domain/decide.js';
import { ledgerInstances, registerSmallFarm } from '../support/ledgers.js';

const NOW = '2026-11-30T01:00:00.000Z';
const POOLS = [{ name: 'p', type: 'baremetal' as const, arch: 'x86_64', platform: 'intel' }];
const DEFAULTS = { nodeQuota: 5000, sessionLifetime: 3600, sessionLifetimeMax: 7200 };
const settings = { sshKey: '', nodeQuota: 5000, sessionLifetime: null, sessionLifetimeMax: null };
const SESSIONS = 40;
const PER_SESSION = 100;

/** A retirement is one append, and one append holds at most 1 MiB (KurrentDB's bound, kept by the embedded store too). */
describe('retiring a tenant that holds more than one append can carry', () => {
  const instances = ledgerInstances();

  /** Tenant t (2) holding 40 sessions of 100 machines each (m1-m3 of the small farm stay free). */
  const heldLarge = async (): Promise<Ledger> => {
    const ledger = await registerSmallFarm(await instances.ledger(instances.store()), { pools: POOLS, settings, now: NOW });
    for (let chunk = 0; chunk < (SESSIONS * PER_SESSION) / 1000; chunk++) {
      const machines = Array.from({ length: 1000 }, (_, i) => ({ hostname: `big${chunk * 1000 + i}`, ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready' as const }));
      await ledger.decide((w, f) => decideRegisterMachines(w, POOLS, { machines, now: NOW }, f), { actor: 'test' });
    }
    for (let sessionId = 1; sessionId <= SESSIONS; sessionId++) {
      await ledger.decide((w, f) => decideRequestSession(w, POOLS, DEFAULTS, { sessionId, tenantId: 2, specs: [{ pool: 'p', quantity: PER_SESSION }], now: NOW, contextualize: () => false }, f), { actor: 't' });
    }
    return ledger;
  };
  const retire = (ledger: Ledger) => ledger.decide((w, f) => decideUpdateTenant(w.tenants.get(2)!, { changes: {}, active: false, now: NOW }, w, f), { actor: 'admin' });

  it('given 4,000 machines held in 40 sessions, when retired, then refused whole (422, saying how to get through); after an admin ends some sessions, retired in one append', async () => {
    const ledger = await heldLarge();
    const head = ledger.world.position;
    await expect(retire(ledger)).rejects.toMatchObject({ kind: 'invalid', message: expect.stringMatching(/^this change is too large to record: .*end some of them first$/) });
    // Nothing of it was written: still active, every session still holds its machines.
    expect(ledger.world.position).toBe(head);
    expect(ledger.world.tenants.get(2)!.retiredAt).toBeNull();
    expect(ledger.world.tenants.get(2)!.held).toBe(SESSIONS * PER_SESSION);

    for (let sessionId = 1; sessionId <= SESSIONS / 2; sessionId++) {
      await ledger.decide((w, f) => decideEndSession(w, w.sessions.get(sessionId)!, { reason: 'done', now: NOW, recyclesInstantly: () => false }, f), { actor: 'admin' });
    }
    const appends = ledger.appends;
    await retire(ledger);
    expect(ledger.appends - appends).toBe(1);
    expect(ledger.world.tenants.get(2)!.retiredAt).toBe(NOW);
    expect(ledger.world.tenants.get(2)!.held).toBe(0);
  });
});
