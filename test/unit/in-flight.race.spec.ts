import { describe, expect, it } from '@jest/globals';
import type { Ledger } from '../../src/application/ledger.service.js';
import { decideEndSession, decideExtendSession, decideRegisterMachines, decideRegisterTenant, decideRequestSession, decideUpdateTenant } from '../../src/domain/decide.js';
import { decideReplacement } from '../../src/domain/provisioning.decide.js';
import { decideServiceChange } from '../../src/domain/decide-service.js';
import { ExtendSessionHandler } from '../../src/application/handlers/extend-session.handler.js';
import { ExtendSessionCommand } from '../../src/application/commands.js';
import type { Catalog } from '../../src/application/catalog.js';
import { stream } from '../../src/domain/events.js';
import type { TenantSettings } from '../../src/domain/events.js';
import { ledgerInstances, registerSmallFarm } from '../support/ledgers.js';
import type { EventStore, StreamWrite } from '../../src/application/ports/event-store.port.js';
import { verifyChains } from '../../src/audit/chain.js';

const NOW = '2026-11-30T01:00:00.000Z';
const POOLS = [{ name: 'p', type: 'baremetal' as const, arch: 'x86_64', platform: 'intel' }];
const DEFAULTS = { nodeQuota: 10, sessionLifetime: 3600, sessionLifetimeMax: 7200 };
const settings = { sshKey: '', nodeQuota: 3, sessionLifetime: null, sessionLifetimeMax: null };

/**
 * One process, decisions in flight together: a request decided before a change of its tenant was seen must not
 * be written after that change as if it had not happened (the in-flight view chains only on what it accounts for).
 */
describe('a request racing a change of its tenant, in one process', () => {
  const instances = ledgerInstances();

  const farm = async () => registerSmallFarm(await instances.ledger(instances.store()), { pools: POOLS, settings, now: NOW });
  const change = (ledger: Ledger, changes: Partial<TenantSettings>, active?: boolean) =>
    ledger.decide((w, f) => decideUpdateTenant(w.tenants.get(2)!, { changes, active, now: NOW }, w, f), { actor: 'admin' });
  const request = (ledger: Ledger, sessionId: number, askedBy?: number) =>
    ledger.decide((w, f) => decideRequestSession(w, POOLS, DEFAULTS, { sessionId, tenantId: 2, specs: [{ pool: 'p', quantity: 1 }], now: NOW, contextualize: () => false, askedBy }, f), { actor: 't' });

  it('given a retirement on its way, when the tenant asks at that moment, then it is refused, not served after the retirement', async () => {
    const ledger = await farm();
    const [retired, asked] = await Promise.allSettled([change(ledger, {}, false), request(ledger, 1)]);
    expect(retired.status).toBe('fulfilled');
    expect(asked).toMatchObject({ status: 'rejected', reason: { kind: 'invalid', message: "tenant 't' isn't active" } });
    expect([...ledger.world.sessions.values()].filter((s) => s.status === 'active')).toEqual([]);
  });

  it('given a retirement on its way, when the tenant asks with its own key at that moment, then 403 as its next request gets, not an admin\'s 422', async () => {
    const ledger = await farm();
    const [, own, forOther] = await Promise.allSettled([change(ledger, {}, false), request(ledger, 1, 2), request(ledger, 2, 1)]);
    expect(own).toMatchObject({ status: 'rejected', reason: { kind: 'forbidden', message: 'tenant t is retired' } });
    expect(forOther).toMatchObject({ status: 'rejected', reason: { kind: 'invalid', message: "tenant 't' isn't active" } });
  });

  it.each([['retirement first'], ['release first']])('given two sessions, when the tenant is retired as it releases one (%s), then each session ends once and every machine and quota unit comes back', async (order) => {
    const ledger = await farm();
    await request(ledger, 1);
    await request(ledger, 2);
    const release = () => ledger.decide((w, f) => decideEndSession(w, w.sessions.get(1)!, { reason: 'done', now: NOW, recyclesInstantly: () => false }, f), { actor: 't' });
    const outcomes = await Promise.allSettled(order === 'retirement first' ? [change(ledger, {}, false), release()] : [release(), change(ledger, {}, false)]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled']);
    const ended = [1, 2].map((id) => ledger.world.sessions.get(id)!);
    expect(ended.map((s) => s.status)).toEqual(['released', 'released']);
    expect(ended[1].releaseReason).toBe('tenant-retired');
    expect([...ledger.world.machines.values()].filter((m) => m.sessionId !== null)).toEqual([]);
    expect(ledger.world.tenants.get(2)!.held).toBe(0);
    const events = await ledger.store.readAll(0n, 1000);
    expect(events.filter((e) => e.type === 'SessionReleased').map((e) => e.data.sessionId).sort()).toEqual([1, 2]);
    expect(events.filter((e) => e.type === 'QuotaReturned')).toHaveLength(2);
    expect(verifyChains(events).breaks).toEqual([]);
  });

  it.each([['retirement first'], ['serve first']])('given a request of the tenant waiting in the queue, when it is retired as the queue serves that request (%s), then the request ends once and nothing stays held', async (order) => {
    const ledger = await farm();
    // The admin holds all three machines, so t's request for one waits.
    await ledger.decide((w, f) => decideRequestSession(w, POOLS, DEFAULTS, { sessionId: 1, tenantId: 1, specs: [{ pool: 'p', quantity: 3 }], now: NOW, contextualize: () => false }, f), { actor: 'admin' });
    await ledger.decide((w, f) => decideRequestSession(w, POOLS, DEFAULTS, { sessionId: 2, tenantId: 2, specs: [{ pool: 'p', quantity: 1 }], now: NOW, contextualize: () => false, waitSeconds: 60 }, f), { actor: 't' });
    expect(ledger.world.sessions.get(2)!.status).toBe('waiting');
    await ledger.decide((w, f) => decideEndSession(w, w.sessions.get(1)!, { reason: 'done', now: NOW, recyclesInstantly: () => true }, f), { actor: 'admin' });
    const serve = () =>
      ledger.decide((w, f) => {
        const waiting = w.sessions.get(2)!;
        return waiting.status === 'waiting' ? decideRequestSession(w, POOLS, DEFAULTS, { sessionId: 2, tenantId: 2, specs: waiting.specs, now: NOW, contextualize: () => false, waiting }, f) : [];
      }, { actor: 'queue' });
    const outcomes = await Promise.allSettled(order === 'retirement first' ? [change(ledger, {}, false), serve()] : [serve(), change(ledger, {}, false)]);
    expect(outcomes[order === 'retirement first' ? 0 : 1].status).toBe('fulfilled');
    const s = ledger.world.sessions.get(2)!;
    // Left the queue with the retirement, or served and then ended by it: never served after it.
    if (order === 'retirement first') expect([s.status, s.rejection]).toEqual(['rejected', 'tenant t was retired']);
    else expect([s.status, s.releaseReason]).toEqual(['released', 'tenant-retired']);
    expect([...ledger.world.machines.values()].filter((m) => m.sessionId !== null)).toEqual([]);
    expect(ledger.world.tenants.get(2)!.held).toBe(0);
    const events = await ledger.store.readAll(0n, 1000);
    expect(events.filter((e) => e.data.sessionId === 2 && ['SessionRejected', 'SessionReleased'].includes(e.type))).toHaveLength(1);
    expect(verifyChains(events).breaks).toEqual([]);
  });

  it('given a lower quota on its way, when the tenant asks for 3 at that moment, then it keeps to the new quota', async () => {
    const ledger = await farm();
    const outcomes = await Promise.allSettled([change(ledger, { nodeQuota: 1 }), request(ledger, 1), request(ledger, 2), request(ledger, 3)]);
    expect(outcomes[0].status).toBe('fulfilled');
    // Each request waits for the change and is decided on the new quota: the first one served, the others refused.
    const asked = outcomes.slice(1);
    expect(asked.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    expect(asked.filter((o) => o.status === 'rejected').map((o) => (o as PromiseRejectedResult).reason.kind)).toEqual(['quota', 'quota']);
    expect(ledger.world.tenants.get(2)!.held).toBe(1);
  });

  it('given one host registered twice at once under two spellings, then one registration is refused', async () => {
    const ledger = await farm();
    const register = (hostname: string) =>
      ledger.decide((w, f) => decideRegisterMachines(w, POOLS, { machines: [{ hostname, ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready' }], now: NOW }, f), { actor: 'admin' });
    const outcomes = await Promise.allSettled([register('twin.lab'), register('TWIN.LAB'), register('twin.lab.')]);
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected', 'rejected']);
    expect([...ledger.world.machines.values()].filter((m) => m.hostname.toLowerCase().startsWith('twin'))).toHaveLength(1);
  });

  it('given one tenant name registered twice at once in two cases, then one registration is refused', async () => {
    const ledger = await farm();
    const register = (name: string) => ledger.decide((w, f) => decideRegisterTenant(w, { name, apiKeyDigest: `key-${name}`, isAdmin: false, settings, now: NOW }, f), { actor: 'admin' });
    const outcomes = await Promise.allSettled([register('twin'), register('TWIN'), register('Twin')]);
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected', 'rejected']);
    expect([...ledger.world.tenants.values()].filter((t) => t.name.toLowerCase() === 'twin')).toHaveLength(1);
  });

  it('given one API key given to two tenants at once, then one change is refused', async () => {
    const ledger = await farm();
    await ledger.decide((w, f) => decideRegisterTenant(w, { name: 'u', apiKeyDigest: 'u', isAdmin: false, settings, now: NOW }, f), { actor: 'test' });
    const give = (id: number) => ledger.decide((w, f) => decideUpdateTenant(w.tenants.get(id)!, { changes: { apiKeyDigest: 'same' }, now: NOW }, w, f), { actor: 'admin' });
    const outcomes = await Promise.allSettled([give(2), give(3)]);
    expect(outcomes.map((o) => o.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect([...ledger.world.tenants.values()].filter((t) => t.apiKeyDigest === 'same')).toHaveLength(1);
  });

  it('given 8 extensions of one session at once, then each waits for the one before instead of failing on its revision', async () => {
    const ledger = await farm();
    await request(ledger, 1);
    const expiry = Date.parse(ledger.world.sessions.get(1)!.expiresAt);
    const extend = () =>
      ledger.decide((w) => decideExtendSession(w.sessions.get(1)!, w.tenants.get(2)!, DEFAULTS, '+1m', NOW), { actor: 't' });
    const outcomes = await Promise.allSettled(Array.from({ length: 8 }, extend));
    expect(outcomes.map((o) => o.status)).toEqual(Array(8).fill('fulfilled'));
    expect(Date.parse(ledger.world.sessions.get(1)!.expiresAt) - expiry).toBe(8 * 60_000);
  });

  it('given requests of one tenant in flight together, then they still chain on each other (no conflict, quota counted)', async () => {
    const ledger = await farm();
    const outcomes = await Promise.allSettled([request(ledger, 1), request(ledger, 2), request(ledger, 3), request(ledger, 4)]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'rejected']);
    expect(ledger.world.tenants.get(2)!.held).toBe(3);
  });

  it('given a lower maximum lifetime on its way, when the tenant extends its session at that moment, then the extension keeps to the new maximum', async () => {
    const ledger = await farm();
    await request(ledger, 1);
    const created = Date.parse(ledger.world.sessions.get(1)!.createdAt);
    const extend = new ExtendSessionHandler(ledger, { defaults: DEFAULTS } as Catalog);
    const [, extended] = await Promise.all([change(ledger, { sessionLifetimeMax: 3600 }), extend.execute(new ExtendSessionCommand({ tenant: ledger.world.tenants.get(2)! }, 1, '+1h'))]);
    // Before: decided on the old maximum (7200 s) and written after the change, a lease 2 h long under a 1 h maximum.
    expect(Date.parse(extended.expiresAt) - created).toBe(3600_000);
  });

  it('given a machine put in maintenance or retired on its way, when a request is decided at that moment, then it gets another machine, not that one', async () => {
    for (const change of [{ maintenance: true }, { retired: true }]) {
      const ledger = await farm();
      // m1 is the one the policy picks first (least worn, lowest id).
      const out = ledger.decide((w, f) => decideServiceChange(w.machines.get(1)!, { ...change, reason: 'disk swap' }, 'admin', NOW, f), { actor: 'admin' });
      const asked = await Promise.all([request(ledger, 1), request(ledger, 2), out]);
      expect(asked).toHaveLength(3);
      // Before: both requests were decided on a World without the change, and m1 was reserved after it in the ledger.
      expect([1, 2].map((id) => ledger.world.sessions.get(id)!.machineIds).flat().sort()).toEqual([2, 3]);
      expect(ledger.world.machines.get(1)!.sessionId).toBeNull();
    }
  });
});

/** A new tenant's first requests by type in flight together: the first one's family is the tenant's (invariant 7). */
describe("a new tenant's first requests racing each other, in one process", () => {
  const instances = ledgerInstances();
  const FAMILIES = [
    { name: 'vm-intel', type: 'vm' as const, arch: 'x86_64', platform: 'intel' },
    { name: 'vm-amd', type: 'vm' as const, arch: 'x86_64', platform: 'amd' },
  ];

  it('given two families with 3 free machines each, when a new tenant asks for one vm by type twice at once, then both come from one family', async () => {
    const ledger = await instances.ledger(instances.store());
    await ledger.decide((w, f) => decideRegisterTenant(w, { name: 't', apiKeyDigest: 't', isAdmin: false, settings, now: NOW }, f), { actor: 'test' });
    const machines = ['i1', 'i2', 'i3', 'a1', 'a2', 'a3'].map((hostname) => ({ hostname, ipaddr: null, pool: hostname.startsWith('i') ? 'vm-intel' : 'vm-amd', reusable: true, data: {}, state: 'ready' as const }));
    await ledger.decide((w, f) => decideRegisterMachines(w, FAMILIES, { machines, now: NOW }, f), { actor: 'test' });
    const ask = (sessionId: number) =>
      ledger.decide((w, f) => decideRequestSession(w, FAMILIES, DEFAULTS, { sessionId, tenantId: 1, specs: [{ type: 'vm', arch: 'x86_64', quantity: 1 }], now: NOW, contextualize: () => false }, f), { actor: 't' });
    await Promise.all([ask(1), ask(2)]);
    // Before: the second was decided while the first's reservation was in flight, as for a tenant with no family yet,
    // and landed on the other family (then the roomier one), labelled `established` too.
    const pools = [1, 2].map((id) => ledger.world.machines.get(ledger.world.sessions.get(id)!.machineIds[0])!.pool);
    expect(pools[1]).toBe(pools[0]);
  });
});

/** A replacement for a machine whose hand-over failed, and the session's end, decided at the same moment. */
describe('a replacement racing the end of its session, in one process', () => {
  const instances = ledgerInstances();
  const run = { action: 'contextualize' as const, playbook: 'contextualize.yml', exitCode: 2, durationMs: 1, timedOut: false, tail: '' };

  it.each([['replacement first'], ['end first']])('given a lost machine, when both are decided at once (%s), then no machine stays with the ended session', async (order) => {
    const ledger = await instances.ledger(instances.store());
    await ledger.decide((w, f) => decideRegisterTenant(w, { name: 't', apiKeyDigest: 't', isAdmin: false, settings, now: NOW }, f), { actor: 'test' });
    const machines = ['m1', 'm2', 'm3'].map((hostname) => ({ hostname, ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready' as const }));
    await ledger.decide((w, f) => decideRegisterMachines(w, POOLS, { machines, now: NOW }, f), { actor: 'test' });
    await ledger.decide((w, f) => decideRequestSession(w, POOLS, DEFAULTS, { sessionId: 1, tenantId: 1, specs: [{ pool: 'p', quantity: 1 }], now: NOW, contextualize: () => true }, f), { actor: 't' });
    const lost = ledger.world.machines.get(ledger.world.sessions.get(1)!.machineIds[0])!;
    await ledger.decide(() => [{ stream: stream.machine(lost.hostname), expected: lost.revision, events: [{ type: 'ProvisioningFailed', data: { machineId: lost.id, sessionId: 1, action: 'contextualize', error: 'disk on fire', run, at: NOW } }] }], { actor: 'test' });

    const replace = () => ledger.decide((w, f) => { const d = decideReplacement(w, w.sessions.get(1)!, POOLS, DEFAULTS, () => true, (id) => f.busy(id), NOW); return 'fail' in d ? [] : d; }, { actor: 'provisioning' });
    const end = () => ledger.decide((w, f) => decideEndSession(w, w.sessions.get(1)!, { reason: 'done', now: NOW, recyclesInstantly: () => false }, f), { actor: 't' });
    const outcomes = await Promise.allSettled(order === 'replacement first' ? [replace(), end()] : [end(), replace()]);

    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled']);
    expect(ledger.world.sessions.get(1)!.status).toBe('released');
    expect([...ledger.world.machines.values()].filter((m) => m.sessionId === 1).map((m) => m.hostname)).toEqual([]);
  });
});

/** A write in flight that will fail, and the World already past its revision: the next link must be the real one. */
describe('the hash chain under a write in flight that fails', () => {
  const instances = ledgerInstances();

  it('given a quota claim held at the store while a tenant change lands, when a session ends, then its QuotaReturned links to the tenant change, not to the claim that never landed', async () => {
    const store = instances.store();
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    let holding = false;
    // Appends holding a QuotaClaimed wait at the door while `holding`.
    const held = new Proxy(store, {
      get: (target, prop) => {
        if (prop === 'append') {
          return async (writes: StreamWrite[]) => {
            if (holding && writes.some((w) => w.events.some((e) => e.type === 'QuotaClaimed'))) await gate;
            return target.append(writes);
          };
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as EventStore;
    const ledger = await instances.ledger(held);
    await ledger.decide((w, f) => decideRegisterTenant(w, { name: 't', apiKeyDigest: 't', isAdmin: false, settings, now: NOW }, f), { actor: 'test' });
    const machines = ['m1', 'm2', 'm3'].map((hostname) => ({ hostname, ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready' as const }));
    await ledger.decide((w, f) => decideRegisterMachines(w, POOLS, { machines, now: NOW }, f), { actor: 'test' });
    const request = (sessionId: number) =>
      ledger.decide((w, f) => decideRequestSession(w, POOLS, DEFAULTS, { sessionId, tenantId: 1, specs: [{ pool: 'p', quantity: 1 }], now: NOW, contextualize: () => false }, f), { actor: 't' });
    await request(1);

    holding = true;
    const claim = request(2).catch((err: unknown) => err);
    await new Promise((r) => setTimeout(r, 20));
    await ledger.decide((w, f) => decideUpdateTenant(w.tenants.get(1)!, { changes: { nodeQuota: 2 }, now: NOW }, w, f), { actor: 'admin' });
    await ledger.decide((w, f) => decideEndSession(w, w.sessions.get(1)!, { reason: 'done', now: NOW, recyclesInstantly: () => false }, f), { actor: 't' });
    open();
    await claim;

    expect(verifyChains(await store.readAll(0n, 1000)).breaks).toEqual([]);
  });
});

