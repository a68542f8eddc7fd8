import { describe, expect, it } from '@jest/globals';
import type { Ledger } from '../../src/application/ledger.service.js';
import { decideRegisterMachines, decideRegisterTenant, decideRequestSession, decideUpdateTenant } from '../../src/domain/decide.js';
import { DomainError } from '../../src/domain/errors.js';
import { ledgerInstances } from '../support/ledgers.js';
import type { EventStore } from '../../src/application/ports/event-store.port.js';
import { verifyChains } from '../../src/audit/chain.js';
const NOW = '2026-11-29T23:00:00.000Z';
const settings = { sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null };

describe('rules that hold across instances sharing one ledger', () => {
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

  const tenants = async (ledger: Ledger, ...names: string[]) => {
    for (const name of names) {
      await ledger.decide((w, f) => decideRegisterTenant(w, { name, apiKeyDigest: name, isAdmin: name === 'admin', settings, now: NOW }, f), { actor: 'test' });
    }
  };

  it('given two instances, when each registers one host under another spelling at the same moment, then one host is one machine', async () => {
    const store = instances.store();
    const [one, two] = [await instances.ledger(store), await instances.ledger(store)];
    const pools = [{ name: 'p', type: 'baremetal' as const, arch: 'x86_64', platform: 'intel' }];
    const register = (ledger: Ledger, hostname: string) =>
      ledger.decide((w, f) => decideRegisterMachines(w, pools, { machines: [{ hostname, ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready' }], now: NOW }, f), { actor: 'test' });

    const outcomes = await Promise.allSettled([register(one, 'twin.lab'), register(two, 'TWIN.LAB.')]);

    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(((outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult).reason as DomainError).message).toMatch(/already exists/);
    expect((await store.readAll(0n, 1000)).filter((e) => e.type === 'MachineRegistered')).toHaveLength(1);
  });

  it('given two instances, when each registers one tenant name in another case at the same moment, then one is refused', async () => {
    const store = instances.store();
    const [one, two] = [await instances.ledger(store), await instances.ledger(store)];
    const register = (ledger: Ledger, name: string) =>
      ledger.decide((w, f) => decideRegisterTenant(w, { name, apiKeyDigest: `key-${name}`, isAdmin: false, settings, now: NOW }, f), { actor: 'test' });

    const outcomes = await Promise.allSettled([register(one, 'ann'), register(two, 'Ann')]);

    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(((outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult).reason as DomainError).message).toMatch(/already exists \(tenant names ignore case\)/);
    expect((await store.readAll(0n, 1000)).filter((e) => e.type === 'TenantRegistered')).toHaveLength(1);
  });

  it('given two instances, when each gives one key to a different tenant at the same moment, then one is refused and the key has one owner', async () => {
    const store = instances.store();
    const one = await instances.ledger(store);
    await tenants(one, 'admin', 't', 'u');
    const two = await instances.ledger(store);
    const give = (ledger: Ledger, id: number) =>
      ledger.decide((w, f) => decideUpdateTenant(w.tenants.get(id)!, { changes: { apiKeyDigest: 'same' }, now: NOW }, w, f), { actor: 'admin' });

    const outcomes = await Promise.allSettled([give(one, 2), give(two, 3)]);

    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(((outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult).reason as DomainError).message).toMatch(/already in use/);
    await two.catchUp();
    expect([...two.world.tenants.values()].filter((t) => t.apiKeyDigest === 'same')).toHaveLength(1);
  });

  it('given two instances, when one registers a tenant with a key as the other gives that key to a tenant, then the key has one owner', async () => {
    const store = instances.store();
    const one = await instances.ledger(store);
    await tenants(one, 'admin', 't');
    const two = await instances.ledger(store);

    const outcomes = await Promise.allSettled([
      one.decide((w, f) => decideRegisterTenant(w, { name: 'new', apiKeyDigest: 'same', isAdmin: false, settings, now: NOW }, f), { actor: 'admin' }),
      two.decide((w, f) => decideUpdateTenant(w.tenants.get(2)!, { changes: { apiKeyDigest: 'same' }, now: NOW }, w, f), { actor: 'admin' }),
    ]);

    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    await two.catchUp();
    expect([...two.world.tenants.values()].filter((t) => t.apiKeyDigest === 'same')).toHaveLength(1);
  });

  /** The store as several writers share it (KurrentDB): not a single writer; this instance's appends wait for `open`. */
  const shared = (store: EventStore) => {
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const view = new Proxy(store, {
      get: (target, prop) => {
        if (prop === 'singleWriter') return false;
        if (prop === 'append') return async (...args: Parameters<EventStore['append']>) => (await gate, target.append(...args));
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    return { view, open };
  };

  it('given two key changes in flight on one instance, when the other instance lands first and the first change fails, then the second is decided again, not written after the other\'s event', async () => {
    const store = instances.store();
    const setup = await instances.ledger(store);
    await tenants(setup, 'admin', 'x', 'y', 'z');
    const slow = shared(store);
    const one = await instances.ledger(slow.view);
    const two = await instances.ledger(store);
    await Promise.all([one.catchUp(), two.catchUp()]);
    const give = (ledger: Ledger, id: number, digest: string) =>
      ledger.decide((w, f) => decideUpdateTenant(w.tenants.get(id)!, { changes: { apiKeyDigest: digest }, now: NOW }, w, f), { actor: 'admin' });

    // On `one`: x gets k1, then z gets k, chained on x's change (both held at the store's door).
    const first = give(one, 2, 'k1');
    const second = give(one, 4, 'k');
    // `two` gives k to y, and lands.
    await give(two, 3, 'k');
    slow.open();
    const outcomes = await Promise.allSettled([first, second]);

    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected']);
    expect(((outcomes[1] as PromiseRejectedResult).reason as DomainError).message).toMatch(/already in use/);
    await one.catchUp();
    expect([...one.world.tenants.values()].filter((t) => t.apiKeyDigest === 'k').map((t) => t.name)).toEqual(['y']);
    expect(verifyChains(await store.readAll(0n, 1000)).breaks).toEqual([]);
  });

  it('given two instances, when each puts one tenant\'s request in the queue at the same moment, then what it waits for stays within its quota', async () => {
    const store = instances.store();
    const one = await instances.ledger(store);
    await tenants(one, 'admin', 't');
    const two = await instances.ledger(store);
    // A pool with nothing free (its 2 machines failed, to be fixed): every request waits. Quota 3: two requests
    // for 2 cannot both wait.
    const pools = [{ name: 'p', type: 'baremetal' as const, arch: 'x86_64', platform: 'intel' }];
    const broken = ['f1', 'f2'].map((hostname) => ({ hostname, ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'failed' as const }));
    await one.decide((w, f) => decideRegisterMachines(w, pools, { machines: broken, now: NOW }, f), { actor: 'test' });
    await two.catchUp();
    const defaults = { nodeQuota: 3, sessionLifetime: 3600, sessionLifetimeMax: 7200 };
    const queue = (ledger: Ledger, sessionId: number) =>
      ledger.decide((w, f) => decideRequestSession(w, pools, defaults, { sessionId, tenantId: 2, specs: [{ pool: 'p', quantity: 2 }], now: NOW, contextualize: () => false, waitSeconds: 60 }, f), { actor: 't' });

    const outcomes = await Promise.allSettled([queue(one, 1), queue(two, 2)]);

    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(((outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult).reason as DomainError).message).toMatch(/2 more waiting/);
    await two.catchUp();
    expect(two.world.tenants.get(2)!.waiting).toBe(2);
    expect((await store.readAll(0n, 1000)).filter((e) => e.type === 'RequestQueued')).toHaveLength(1);
  });
});
