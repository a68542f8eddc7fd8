import { afterEach, describe, expect, it } from '@jest/globals';
import type { EventBus } from '@nestjs/cqrs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ledger } from '../../src/application/ledger.service.js';
import { SqliteEventStore } from '../../src/adapters/eventstore/sqlite-event-store.js';
import { decideRegisterTenant, decideUpdateTenant } from '../../src/domain/decide.js';
import { DomainError } from '../../src/domain/errors.js';

const bus = { publish: () => undefined } as unknown as EventBus;
const NOW = '2026-11-29T23:00:00.000Z';
const settings = { sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null };

describe('the last active admin, across instances sharing one ledger', () => {
  const open: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    for (const x of open.splice(0).reverse()) await x.close();
  });

  it('given two admins, when two instances retire one each at the same moment, then one is refused and an admin is left', async () => {
    const store = new SqliteEventStore(join(mkdtempSync(join(tmpdir(), 'duffy-admins-')), 'ledger.sqlite'));
    open.push(store);
    const [one, two] = [new Ledger(store, bus), new Ledger(store, bus)];
    for (const ledger of [one, two]) {
      await ledger.start();
      open.push({ close: () => ledger.onApplicationShutdown().catch(() => undefined) });
    }
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
