import { describe, expect, it } from '@jest/globals';
import type { Ledger } from '../../src/application/ledger.service.js';
import { decideRegisterTenant, decideUpdateTenant } from '../../src/domain/decide.js';
import { DomainError } from '../../src/domain/errors.js';
import { ledgerInstances } from '../support/ledgers.js';
const NOW = '2026-11-29T23:00:00.000Z';
const settings = { sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null };

describe('the last active admin, across instances sharing one ledger', () => {
  const instances = ledgerInstances();

  it('given two admins, when two instances retire one each at the same moment, then one is refused and an admin is left', async () => {
    const store = instances.store();
    const [one, two] = [await instances.ledger(store), await instances.ledger(store)];
    for (const name of ['a', 'b']) {
      await one.decide((w, f) => decideRegisterTenant(w, { name, apiKeyDigest: name, isAdmin: true, settings, now: NOW }, f), { actor: 'test' });
    }
    await two.catchUp();
    expect([...two.world.tenants.values()].filter((t) => t.isAdmin && t.retiredAt === null)).toHaveLength(2);

    // Each instance decides on its own World, where the other admin is still active.
    const retire = (ledger: Ledger, id: number) =>
      ledger.decide((w, f) => decideUpdateTenant(w.tenants.get(id)!, { changes: {}, active: false, now: NOW }, w, f), { actor: 'test' });
    const outcomes = await Promise.allSettled([retire(one, 1), retire(two, 2)]);

    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    const refused = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason).toBeInstanceOf(DomainError);
    expect((refused.reason as DomainError).kind).toBe('conflict');
    expect((refused.reason as DomainError).message).toMatch(/last active admin/);
    const retired = (await store.readAll(0n, 1000)).filter((e) => e.type === 'TenantRetired');
    expect(retired).toHaveLength(1);
  });
});
