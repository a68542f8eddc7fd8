import { describe, expect, it } from '@jest/globals';
import type { Ledger } from '../../src/application/ledger.service.js';
import type { Catalog } from '../../src/application/catalog.js';
import type { Metrics } from '../../src/adapters/metrics.js';
import type { WaitingQueue } from '../../src/application/queue.service.js';
import { RequestSessionCommand, UpdateTenantCommand } from '../../src/application/commands.js';
import { RequestSessionHandler } from '../../src/application/handlers/request-session.handler.js';
import { UpdateTenantHandler } from '../../src/application/handlers/update-tenant.handler.js';
import { SessionLifecycle } from '../../src/application/session-lifecycle.js';
import { type Write, decideEndSession, decideLeaveQueue, decideRegisterMachines, decideRegisterTenant, decideRequestSession, decideUpdateTenant } from '../../src/domain/decide.js';
import { decideServiceChange } from '../../src/domain/decide-service.js';
import { type PlaybookRun, stream } from '../../src/domain/events.js';
import { ledgerInstances, registerSmallFarm } from '../support/ledgers.js';
import { ArtifactsController } from '../../src/http/artifacts.controller.js';
import type { ReadViews } from '../../src/http/read-views.js';
import { type Session, emptyWorld } from '../../src/domain/world.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const NOW = '2026-12-03T09:00:00.000Z';
const POOLS = [{ name: 'p', type: 'baremetal' as const, arch: 'x86_64', platform: 'intel' }];
const DEFAULTS = { nodeQuota: 10, sessionLifetime: 3600, sessionLifetimeMax: 7200 };
const settings = { sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null };
/** A pool whose hand-over runs a contextualize playbook: the caller waits for it. */
const catalog = {
  profiles: POOLS,
  defaults: DEFAULTS,
  settings: { maxConnections: 100 },
  pool: (name: string) => (name === 'p' ? { contextualize: true, 'handover-timeout': 10, 'release-policy': 'reuse', 'collect-artifacts': false } : undefined),
} as unknown as Catalog;
const metrics = { allocation: { startTimer: () => () => undefined } } as unknown as Metrics;
const queue = { heldFromNewRequest: () => undefined } as unknown as WaitingQueue;
const run: PlaybookRun = { action: 'contextualize', playbook: 'contextualize.yml', exitCode: 0, durationMs: 1, timedOut: false, tail: '' };

/**
 * Answers built after an `await`: what the caller is told must be what held at one moment, even when an admin's
 * change lands between the decision and the answer.
 */
describe('an answer and an admin change landing before it is built', () => {
  const instances = ledgerInstances();

  /** Tenants admin (1) and t (2), machines m1-m3 in pool p. */
  const farm = async () => registerSmallFarm(await instances.ledger(instances.store()), { pools: POOLS, settings, now: NOW });
  const requests = (ledger: Ledger) => new RequestSessionHandler(ledger, catalog, new SessionLifecycle(ledger, catalog), metrics, queue);
  const ask = (ledger: Ledger, waitSeconds = 0) =>
    requests(ledger)
      .execute(new RequestSessionCommand({ tenant: ledger.world.tenants.get(2)! }, 2, [{ pool: 'p', quantity: 1 }], waitSeconds))
      .then(
        (s) => ({ status: s.status }),
        (err: { kind: string; message: string }) => ({ kind: err.kind, message: err.message }),
      );
  const setActive = (ledger: Ledger, active: boolean) =>
    ledger.decide((w, f) => decideUpdateTenant(w.tenants.get(2)!, { changes: {}, active, now: NOW }, w, f), { actor: 'admin' });

  it('given a request in hand-over, when its tenant is retired and the hand-over ends before the retirement ended that session, then 403, not a 201 for a retired tenant', async () => {
    const ledger = await farm();
    const answer = ask(ledger);
    await ledger.until(() => ledger.world.sessions.get(1)?.status === 'active');
    // The retirement has landed; its handler ends the tenant's sessions one by one and has not come to this one.
    await setActive(ledger, false);
    const m = ledger.world.machines.get(ledger.world.sessions.get(1)!.machineIds[0])!;
    await ledger.decide(() => [{ stream: stream.machine(m.hostname), expected: m.revision, events: [{ type: 'MachineContextualized', data: { machineId: m.id, sessionId: 1, run, at: NOW } }] }], { actor: 'provisioning' });
    // Before: 201 with the session active and its tenant shown retired (the retirement's loop ended it right after).
    expect(await answer).toEqual({ kind: 'forbidden', message: 'tenant t was retired before the machines were handed over' });
    expect(ledger.world.sessions.get(1)).toMatchObject({ status: 'released', releaseReason: 'tenant-retired' });
  });

  it('given a request that left the queue because its tenant was retired, when the reactivation lands with the leaving, then the retirement\'s 403, not a 422 "capacity" in the retirement\'s words', async () => {
    const ledger = await farm();
    // Every machine in maintenance: the request waits (they may come back).
    for (const id of [1, 2, 3]) await ledger.decide((w, f) => decideServiceChange(w.machines.get(id)!, { maintenance: true, reason: 'disk swap' }, 'admin', NOW, f), { actor: 'admin' });
    const answer = ask(ledger, 60);
    await ledger.until(() => ledger.world.sessions.get(1)?.status === 'waiting');
    await setActive(ledger, false);
    // The queue's pass takes it out for the retirement; an admin's reactivation is delivered together with that.
    await ledger.decide(
      (w, f) => [...decideLeaveQueue(w.sessions.get(1)!, 'tenant t was retired', NOW), ...(decideUpdateTenant(w.tenants.get(2)!, { changes: {}, active: true, now: NOW }, w, f) as Write[])],
      { actor: 'queue' },
    );
    expect(ledger.world.tenants.get(2)!.retiredAt).toBeNull();
    // Before: {kind: 'capacity', message: "can't reserve nodes: tenant t was retired"} (the kind of the answer's moment).
    expect(await answer).toEqual({ kind: 'forbidden', message: "can't reserve nodes: tenant t was retired" });
  });

  it('given a request that left the queue because its tenant was retired, when Duffy begins to stop before it is answered, then the retirement\'s 403, not a 503 "ask again" in the retirement\'s words', async () => {
    const ledger = await farm();
    for (const id of [1, 2, 3]) await ledger.decide((w, f) => decideServiceChange(w.machines.get(id)!, { maintenance: true, reason: 'disk swap' }, 'admin', NOW, f), { actor: 'admin' });
    const handler = requests(ledger);
    const answer = handler.execute(new RequestSessionCommand({ tenant: ledger.world.tenants.get(2)! }, 2, [{ pool: 'p', quantity: 1 }], 60)).then(
      () => 'served',
      (err: { kind: string; message: string }) => ({ kind: err.kind, message: err.message }),
    );
    await ledger.until(() => ledger.world.sessions.get(1)?.status === 'waiting');
    await setActive(ledger, false);
    const left = ledger.decide((w) => decideLeaveQueue(w.sessions.get(1)!, 'tenant t was retired', NOW), { actor: 'queue' });
    const stopped = handler.beforeApplicationShutdown();
    await Promise.all([left, stopped]);
    expect(ledger.world.sessions.get(1)!.rejection).toBe('tenant t was retired');
    // Before: {kind: 'unavailable', message: "can't reserve nodes: tenant t was retired"}: a 503 telling to ask again.
    expect(await answer).toEqual({ kind: 'forbidden', message: "can't reserve nodes: tenant t was retired" });
  });

  it('given a tenant holding sessions, when it is reactivated while its retirement still ends them, then the retirement is answered as it was decided: retired', async () => {
    const ledger = await farm();
    for (const sessionId of [1, 2, 3]) {
      await ledger.decide((w, f) => decideRequestSession(w, POOLS, DEFAULTS, { sessionId, tenantId: 2, specs: [{ pool: 'p', quantity: 1 }], now: NOW, contextualize: () => false }, f), { actor: 't' });
    }
    const retire = new UpdateTenantHandler(ledger, new SessionLifecycle(ledger, catalog)).execute(new UpdateTenantCommand({ tenant: ledger.world.tenants.get(1)! }, 2, {}, false, undefined));
    await ledger.until(() => ledger.world.tenants.get(2)!.retiredAt !== null);
    await setActive(ledger, true);
    const { tenant } = await retire;
    expect(ledger.world.tenants.get(2)!.retiredAt).toBeNull();
    // Before: the answer was the live tenant, read after the loop: `active: true` in the answer to a retirement.
    expect(tenant.retiredAt).not.toBeNull();
  });
});

/** GET /sessions/{id}/artifacts: `collecting` (the World) and `incomplete` (the read models) of one moment. */
describe('the artifacts list while the release collects', () => {
  const instances = ledgerInstances();

  it('given a release collecting, when its failed collection lands while the read models are read, then never "collecting: false" without the note it left', async () => {
    const ledger = await instances.ledger(instances.store());
    await ledger.decide((w, f) => decideRegisterTenant(w, { name: 't', apiKeyDigest: 't', isAdmin: false, settings, now: NOW }, f), { actor: 'test' });
    await ledger.decide((w, f) => decideRegisterMachines(w, POOLS, { machines: [{ hostname: 'm1', ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready' }], now: NOW }, f), { actor: 'test' });
    await ledger.decide((w, f) => decideRequestSession(w, POOLS, DEFAULTS, { sessionId: 1, tenantId: 1, specs: [{ pool: 'p', quantity: 1 }], now: NOW, contextualize: () => false }, f), { actor: 't' });
    await ledger.decide((w, f) => decideEndSession(w, w.sessions.get(1)!, { reason: 'done', now: NOW, recyclesInstantly: () => false }, f), { actor: 't' });
    const collects = { ...catalog, pool: () => ({ 'collect-artifacts': true }), artifactsDir: () => join(tmpdir(), 'duffy-no-such-artifacts') } as unknown as Catalog;
    const m = ledger.world.machines.get(1)!;
    const collected = (): Promise<unknown> =>
      ledger.decide(() => [{ stream: stream.machine(m.hostname), expected: m.revision, events: [{ type: 'ArtifactsCollected', data: { machineId: 1, sessionId: 1, files: [], error: 'disk on fire', run: { ...run, action: 'collect_artifacts' }, at: NOW } }] }], { actor: 'provisioning' });
    // The read models as they were before the collection's outcome; the outcome lands while they are read.
    const views = {
      load: async () => {
        const read = emptyWorld();
        read.sessions.set(1, { ...ledger.world.sessions.get(1)!, artifactsIncomplete: [] } as Session);
        await collected();
        return read;
      },
    } as unknown as ReadViews;
    const answer = await new ArtifactsController(collects, views, ledger).list({ tenant: ledger.world.tenants.get(1)! }, 1);
    expect(ledger.world.sessions.get(1)!.artifactsIncomplete).toEqual(['m1: collection failed (disk on fire): only files copied before that are there']);
    // Before: {collecting: false, incomplete: []}: the CLI stopped waiting and said every file was there.
    expect(answer.collecting || answer.incomplete.length > 0).toBe(true);
  });
});

/** An admin's change of a tenant while this process ends or requests that tenant's sessions: never a 409 in one process. */
describe('a tenant change beside quota claims and returns in flight', () => {
  const instances = ledgerInstances();

  it('given a retirement ending 30 sessions one by one, when the tenant is reactivated meanwhile, then the reactivation lands, not a 409', async () => {
    const ledger = await instances.ledger(instances.store());
    await ledger.decide((w, f) => decideRegisterTenant(w, { name: 'admin', apiKeyDigest: 'a', isAdmin: true, settings, now: NOW }, f), { actor: 'test' });
    await ledger.decide((w, f) => decideRegisterTenant(w, { name: 't', apiKeyDigest: 't', isAdmin: false, settings: { ...settings, nodeQuota: 30 }, now: NOW }, f), { actor: 'test' });
    const machines = Array.from({ length: 30 }, (_, i) => ({ hostname: `m${i}`, ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready' as const }));
    await ledger.decide((w, f) => decideRegisterMachines(w, POOLS, { machines, now: NOW }, f), { actor: 'test' });
    for (let sessionId = 1; sessionId <= 30; sessionId++) {
      await ledger.decide((w, f) => decideRequestSession(w, POOLS, DEFAULTS, { sessionId, tenantId: 2, specs: [{ pool: 'p', quantity: 1 }], now: NOW, contextualize: () => false }, f), { actor: 't' });
    }
    const retire = new UpdateTenantHandler(ledger, new SessionLifecycle(ledger, catalog)).execute(new UpdateTenantCommand({ tenant: ledger.world.tenants.get(1)! }, 2, {}, false, undefined));
    await ledger.until(() => ledger.world.tenants.get(2)!.retiredAt !== null);
    await new Promise((r) => setTimeout(r, 10));
    // Before: decided at the World's revision of the tenant's stream, under each QuotaReturned of the loop in flight,
    // it conflicted five times and was refused: 409 "the ledger changed under this request too often".
    const reactivated = await ledger.decide((w, f) => decideUpdateTenant(w.tenants.get(2)!, { changes: {}, active: true, now: NOW }, w, f), { actor: 'admin' }).then(
      () => 'landed',
      (err: Error) => err.message,
    );
    await retire;
    expect(reactivated).toBe('landed');
    expect(ledger.world.tenants.get(2)!.retiredAt).toBeNull();
  });
});
