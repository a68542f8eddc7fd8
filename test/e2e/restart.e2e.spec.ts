import { describe, expect, it, jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { ConfigError } from '../../src/config/config.js';
import { Ledger } from '../../src/application/ledger.service.js';
import { Catalog } from '../../src/application/catalog.js';
import { decideRequestSession } from '../../src/domain/decide.js';
import { type Running, instantDemoConfig, ledgerEvents, newTenant, startDuffy } from '../support/server.js';
import { CheckpointService } from '../../src/audit/checkpoint.service.js';
import { checkPublished, checkpointOf, keyId, newSigningKey, privateKeyOf, signCheckpoint } from '../../src/audit/checkpoint.js';
import { SqliteEventStore } from '../../src/adapters/eventstore/sqlite-event-store.js';
import { createApp } from '../../src/main.js';
import { type Settings, loadConfig } from '../../src/config/config.js';
import { LedgerDigest } from '../../src/audit/digest.js';

const V1 = '/api/v1';

describe('restart', () => {
  it('shows the admin key a first start creates before that start registers its inventory: one killed meanwhile leaves no admin without a key', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-first-'));
    const configFile = instantDemoConfig();
    const settings: Settings = { port: 0, dataDir, configFile, adminName: 'admin', config: loadConfig(configFile) };
    let shown: string | undefined;
    const dies = new Error('killed right after the key was shown');
    await expect(
      createApp(settings, {
        logger: false,
        showAdminKey: (key) => {
          shown = key;
          throw dies;
        },
      }),
    ).rejects.toBe(dies);
    expect(shown).toMatch(/^[0-9a-f-]{36}$/);
    let again: string | undefined;
    const { app } = await createApp(settings, { logger: false, showAdminKey: (key) => (again = key) });
    try {
      expect(again).toBeUndefined();
      const world = app.get(Ledger).world;
      expect(world.machines.size).toBeGreaterThan(0);
      expect(world.tenantIdsByDigest.size).toBe(1);
      await app.listen(0, '127.0.0.1');
      const url = `http://127.0.0.1:${(app.getHttpServer().address() as { port: number }).port}`;
      const r = await fetch(`${url}${V1}/tenants`, { headers: { authorization: `Basic ${Buffer.from(`admin:${shown}`).toString('base64')}` } });
      expect(r.status).toBe(200);
    } finally {
      await app.close();
    }
  });

  it('comes back with every tenant, session and machine state as before', async () => {
    let duffy: Running = await startDuffy();
    const key = (await duffy.admin.post(`${V1}/tenants`, { name: 'alice', ssh_key: 'ssh-ed25519 AAAA alice', node_quota: 4 })).body.tenant.api_key;
    let alice = duffy.client('alice', key);
    const kept = (await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 2 }] })).body.session;
    const ended = (await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session;
    await alice.put(`${V1}/sessions/${ended.id}`, { active: false });
    await alice.put(`${V1}/sessions/${kept.id}`, { expires_at: '+8h' });
    const snapshot = async () => ({
      tenants: (await duffy.admin.get(`${V1}/tenants`)).body,
      sessions: (await duffy.admin.get(`${V1}/sessions`)).body,
      nodes: (await duffy.admin.get(`${V1}/nodes`)).body,
      kept: (await alice.get(`${V1}/sessions/${kept.id}`)).body,
      ended: (await alice.get(`${V1}/sessions/${ended.id}`)).body,
    });
    const before = await snapshot();
    const dataDir = duffy.dataDir;
    await duffy.close();

    duffy = await startDuffy({ dataDir });
    try {
      // The same API key still works.
      alice = duffy.client('alice', key);
      expect(await snapshot()).toEqual(before);
      // Ids keep counting up; nothing is handed out twice.
      const next = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 1 }] });
      expect(next.status).toBe(201);
      expect(next.body.session.id).toBe(ended.id + 1);
      expect(kept.nodes.map((n: { hostname: string }) => n.hostname)).not.toContain(next.body.session.nodes[0].hostname);
    } finally {
      await duffy.close();
    }
  });

  it('records the tenant defaults it starts with before any decision, again only when they change', async () => {
    const configFile = instantDemoConfig();
    const config = parse(readFileSync(configFile, 'utf8'));
    const recorded = async (d: Running) => (await ledgerEvents(d)).filter((e) => e.type === 'DefaultsSet').map((e) => e.data);
    let duffy = await startDuffy({ configFile });
    const dataDir = duffy.dataDir;
    const first = await ledgerEvents(duffy);
    // Before any decision made under them (the admin's registration is the first).
    expect(first.findIndex((e) => e.type === 'DefaultsSet')).toBeLessThan(first.findIndex((e) => e.type === 'TenantRegistered'));
    expect(await recorded(duffy)).toEqual([{ nodeQuota: 10, sessionLifetime: 21600, sessionLifetimeMax: 43200, at: expect.any(String) }]);
    await duffy.close();
    duffy = await startDuffy({ dataDir, configFile });
    expect(await recorded(duffy)).toHaveLength(1);
    await duffy.close();
    writeFileSync(configFile, stringify({ ...config, defaults: { ...config.defaults, 'node-quota': 1 } }));
    duffy = await startDuffy({ dataDir, configFile });
    try {
      expect((await recorded(duffy)).map((d) => d.nodeQuota)).toEqual([10, 1]);
      expect(duffy.app.get(Ledger).world.defaults?.nodeQuota).toBe(1);
      const bob = await newTenant(duffy, 'bob');
      expect((await bob.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 2 }] })).status).toBe(403);
    } finally {
      await duffy.close();
    }
  });

  it('given a ledger restored from a backup under newer read models, then the read models are rebuilt from it, not served', async () => {
    let duffy: Running = await startDuffy();
    const dataDir = duffy.dataDir;
    const alice = async () => duffy.client('alice', key);
    const key = (await duffy.admin.post(`${V1}/tenants`, { name: 'alice', ssh_key: 'x' })).body.tenant.api_key;
    const before = (await (await alice()).post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session;
    await duffy.close();
    const backup = mkdtempSync(join(tmpdir(), 'duffy-backup-'));
    const ledgerFiles = readdirSync(dataDir).filter((f) => f.startsWith('ledger.sqlite'));
    for (const f of ledgerFiles) copyFileSync(join(dataDir, f), join(backup, f));

    duffy = await startDuffy({ dataDir });
    const lost = (await (await alice()).post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 1 }] })).body.session;
    expect(lost.id).toBe(before.id + 1);
    await duffy.close();
    // Files collected for the session the restore will lose.
    mkdirSync(join(dataDir, 'artifacts', `session-${lost.id}`, 'h'), { recursive: true });
    writeFileSync(join(dataDir, 'artifacts', `session-${lost.id}`, 'h', 'secret.log'), 'not for the next session with this id');
    for (const f of ledgerFiles) copyFileSync(join(backup, f), join(dataDir, f));

    duffy = await startDuffy({ dataDir });
    try {
      const ids = (await duffy.admin.get(`${V1}/sessions`)).body.sessions.map((x: { id: number }) => x.id);
      expect(ids).toContain(before.id);
      expect(ids).not.toContain(lost.id);
      const again = (await (await alice()).post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session;
      expect(again.id).toBe(lost.id);
      expect((await (await alice()).get(`${V1}/sessions/${again.id}`)).body.session.nodes[0].pool).toBe('vm-intel-x86_64');
      // The lost session's files were set aside, never served as the new one's.
      expect(JSON.stringify((await (await alice()).get(`${V1}/sessions/${again.id}/artifacts`)).body)).not.toContain('secret.log');
      const aside = readdirSync(join(dataDir, 'artifacts')).filter((n) => n.startsWith('set-aside-'));
      expect(aside).toHaveLength(1);
      expect(readdirSync(join(dataDir, 'artifacts', aside[0]))).toEqual([`session-${lost.id}`]);
    } finally {
      await duffy.close();
    }
  });

  it('refuses a configuration that drops a pool whose machines are not retired, naming them; starts once they are', async () => {
    const config = instantDemoConfig();
    let duffy: Running = await startDuffy({ configFile: config });
    const dataDir = duffy.dataDir;
    const arm = (await duffy.admin.get(`${V1}/nodes`)).body.nodes.filter((n: { pool: string }) => n.pool === 'vm-arm-aarch64');
    expect(arm.length).toBeGreaterThan(0);
    await duffy.close();
    const demo = parse(readFileSync(config, 'utf8'));
    demo.pools = demo.pools.filter((p: { name: string }) => p.name !== 'vm-arm-aarch64');
    demo.machines = demo.machines.filter((m: { pool: string }) => m.pool !== 'vm-arm-aarch64');
    const smaller = join(mkdtempSync(join(tmpdir(), 'duffy-cfg-')), 'smaller.yaml');
    writeFileSync(smaller, stringify(demo));

    const refused = await startDuffy({ dataDir, configFile: smaller }).then(() => undefined, (err: unknown) => err);
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as Error).message).toMatch(new RegExp(`pool vm-arm-aarch64 \\(${arm[0].hostname}.*\\): the pool is gone from the configuration but its machines are not retired`));

    duffy = await startDuffy({ dataDir, configFile: config });
    for (const n of arm) expect((await duffy.admin.put(`${V1}/nodes/${n.id}`, { retired: true })).status).toBe(200);
    await duffy.close();
    duffy = await startDuffy({ dataDir, configFile: smaller });
    await duffy.close();
  });

  it("refuses a configuration whose new machine has the address of a node added by POST /nodes, before writing anything", async () => {
    const config = instantDemoConfig();
    let duffy: Running = await startDuffy({ configFile: config });
    const dataDir = duffy.dataDir;
    expect((await duffy.admin.post(`${V1}/nodes`, { hostname: 'x-99.lab', pool: 'vm-intel-x86_64', ipaddr: '10.1.0.99' })).status).toBe(201);
    await duffy.close();
    const demo = parse(readFileSync(config, 'utf8'));
    demo.machines.push({ hostname: 'y-01.lab', ipaddr: '10.1.0.99', pool: 'vm-intel-x86_64', state: 'ready' });
    demo.defaults = { ...(demo.defaults ?? {}), 'node-quota': 1 };
    const clashing = join(mkdtempSync(join(tmpdir(), 'duffy-cfg-')), 'clashing.yaml');
    writeFileSync(clashing, stringify(demo));
    const before = statSync(join(dataDir, 'ledger.sqlite.head')).mtimeMs;
    const refused = await startDuffy({ dataDir, configFile: clashing }).then(() => undefined, (err: unknown) => err);
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as Error).message).toMatch(new RegExp(`clashing\\.yaml: machines\\[${demo.machines.length - 1}\\]: node y-01\\.lab: address 10\\.1\\.0\\.99 is node x-99\\.lab's$`));
    // Nothing written: not even the tenant defaults of the configuration it refused.
    expect(statSync(join(dataDir, 'ledger.sqlite.head')).mtimeMs).toBe(before);
    duffy = await startDuffy({ dataDir, configFile: config });
    await duffy.close();
  });

  it('takes out of the queue, at start, the requests that were waiting when the previous process died (their callers went with it)', async () => {
    let duffy: Running = await startDuffy();
    const dataDir = duffy.dataDir;
    const key = (await duffy.admin.post(`${V1}/tenants`, { name: 'waiter', ssh_key: 'x', node_quota: 20 })).body.tenant.api_key;
    const waiter = () => duffy.client('waiter', key);
    const pool = (await duffy.admin.get(`${V1}/nodes`)).body.nodes.filter((n: { pool: string }) => n.pool === 'vm-arm-aarch64').length;
    const held = (await waiter().post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: pool }] })).body.session;
    // A request waiting in the queue whose caller is gone with the process (recorded as the handler records it).
    const ledger = duffy.app.get(Ledger);
    const catalog = duffy.app.get(Catalog);
    const tenantId = [...ledger.world.tenants.values()].find((t) => t.name === 'waiter')!.id;
    const id = ledger.inFlight.lastSessionId() + 1;
    await ledger.decide(
      (w, f) => decideRequestSession(w, catalog.profiles, catalog.defaults, { sessionId: id, tenantId, specs: [{ pool: 'vm-arm-aarch64', quantity: 1 }], now: new Date().toISOString(), contextualize: () => false, waitSeconds: 600 }, f),
      { actor: 'waiter' },
    );
    expect(ledger.world.sessions.get(id)!.status).toBe('waiting');
    await duffy.close();

    const warned = jest.spyOn(Logger.prototype, 'warn');
    duffy = await startDuffy({ dataDir });
    try {
      // The log names the request let go, so on-call can tell which job lost it (it said only how many).
      expect(warned.mock.calls.map(([m]) => String(m))).toContainEqual(expect.stringMatching(new RegExp(`let go: .*: session ${id} \\(waiter, waiting in the queue\\)$`)));
      warned.mockRestore();
      const s = (await waiter().get(`${V1}/sessions/${id}`)).body.session;
      expect(s.active).toBe(false);
      expect(s.data.rejected).toMatch(/Duffy restarted while it waited/);
      expect((await duffy.admin.get(`${V1}/queue`)).body.queue).toEqual([]);
      expect((await waiter().put(`${V1}/sessions/${held.id}`, { active: false })).status).toBe(200);
    } finally {
      await duffy.close();
    }
  });

  it("goes on from its own last signed checkpoint, not from a forged one appended after it, and takes no forged checkpoint's time for its clock", async () => {
    const first = await startDuffy();
    await newTenant(first, 'ann');
    await first.app.get(CheckpointService).publish();
    const published = (await ledgerEvents(first)).filter((e) => e.type === 'CheckpointPublished');
    const genuine = BigInt((published.at(-1)!.data as { lastPosition: string }).lastPosition);
    // Valid hashes (appended through the writer, as a tamperer who recomputes them would), no valid signature: a
    // frontier of one leaf and a time far ahead.
    const forged = { size: 1, lastPosition: '1', rootHash: 'a'.repeat(64), time: '2099-01-01T00:00:00.000Z', frontier: ['a'.repeat(64)] };
    // And one signed, with a key made up for it, dated within the hour a clock may have been set back.
    const selfSigned = { ...signCheckpoint({ ...forged, time: new Date(Date.now() + 50 * 60_000).toISOString() }, privateKeyOf(newSigningKey().privatePem)), frontier: forged.frontier };
    for (const data of [forged, { ...forged, signature: 'AAAA', publicKey: published.at(-1)!.data.publicKey }, selfSigned]) {
      const revision = (await ledgerEvents(first)).filter((e) => e.stream === 'audit-checkpoints').length - 1;
      await first.app.get(Ledger).record([{ stream: 'audit-checkpoints', expected: revision, events: [{ type: 'CheckpointPublished', data } as never] }], { actor: 'duffy' });
    }
    await first.close();

    const subscribed = jest.spyOn(SqliteEventStore.prototype, 'subscribeAll');
    const again = await startDuffy({ dataDir: first.dataDir });
    try {
      expect(subscribed.mock.calls.map((c) => c[0])).toContain(genuine);
      await newTenant(again, 'bob');
      await again.app.get(CheckpointService).publish();
      const events = await ledgerEvents(again);
      // The new events are dated now, not 2099.
      for (const e of events.filter((x) => x.position > genuine + 2n)) expect(Date.parse(String(e.metadata.at))).toBeLessThan(Date.now() + 60_000);
      // What it signed since is the ledger as it is: only the forged checkpoints are named.
      const forgedAt = events.filter((e) => e.type === 'CheckpointPublished' && (e.data as { rootHash: string }).rootHash === 'a'.repeat(64)).map((e) => e.position);
      expect(forgedAt).toHaveLength(3);
      expect(checkPublished(LedgerDigest.of(events)).problems.map((p) => p.position)).toEqual(forgedAt);
    } finally {
      subscribed.mockRestore();
      await again.close();
    }
  });

  it('does not go on from its own checkpoint when the store counts fewer events up to it than it signed (as after a deletion with the chains recomputed; the count is stubbed, the decision is real)', async () => {
    const first = await startDuffy();
    await newTenant(first, 'ann');
    await first.app.get(CheckpointService).publish();
    const cp = (await ledgerEvents(first)).filter((e) => e.type === 'CheckpointPublished').at(-1)!.data as { size: number; lastPosition: string };
    await first.close();
    const store = new SqliteEventStore(join(first.dataDir, 'ledger.sqlite'), { readonly: true });
    expect(await store.countUpTo(BigInt(cp.lastPosition))).toBe(cp.size);
    await store.close();

    // What the store counts after such an edit: fewer events up to the checkpoint than it signed.
    const counted = jest.spyOn(SqliteEventStore.prototype, 'countUpTo').mockResolvedValue(cp.size - 3);
    const subscribed = jest.spyOn(SqliteEventStore.prototype, 'subscribeAll');
    const again = await startDuffy({ dataDir: first.dataDir });
    try {
      expect(counted).toHaveBeenCalledWith(BigInt(cp.lastPosition));
      // The checkpoint service hashes the ledger from its first event.
      expect(subscribed.mock.calls.map((c) => c[0])).toContain(0n);
    } finally {
      counted.mockRestore();
      subscribed.mockRestore();
      await again.close();
    }
  });

  it('verify names the key of a checkpoint that dates later events: one signed by a key made up for it is told apart from the server\'s', async () => {
    const duffy = await startDuffy();
    try {
      await newTenant(duffy, 'ann');
      await duffy.app.get(CheckpointService).publish();
      // A true tree head of the ledger so far, dated ahead, signed with another key: it passes as sound, and dates what follows.
      const madeUp = newSigningKey();
      const ahead = signCheckpoint(checkpointOf(LedgerDigest.of(await ledgerEvents(duffy)), new Date(Date.now() + 50 * 60_000)), privateKeyOf(madeUp.privatePem));
      const revision = (await ledgerEvents(duffy)).filter((e) => e.stream === 'audit-checkpoints').length - 1;
      await duffy.app.get(Ledger).record([{ stream: 'audit-checkpoints', expected: revision, events: [{ type: 'CheckpointPublished', data: ahead } as never] }], { actor: 'duffy' });
      await newTenant(duffy, 'bob');
      // A genuine checkpoint after it, dated now: what follows is still dated by the made-up one (the later time).
      await duffy.app.get(CheckpointService).publish();
      await newTenant(duffy, 'cyd');
      const problems = checkPublished(LedgerDigest.of(await ledgerEvents(duffy))).problems.map((p) => p.problem);
      expect(problems.length).toBeGreaterThan(0);
      for (const p of problems) expect(p).toMatch(new RegExp(`was appended after a checkpoint of \\d+ events signed at ${ahead.time.replace(/\./g, '\\.')} by ${keyId(madeUp.publicKey)}, but claims .*: back-dated`));
    } finally {
      await duffy.close();
    }
  });

  it('hashes for its checkpoints only the events after the last one published (not the whole history), and they still verify', async () => {
    const first = await startDuffy();
    await newTenant(first, 'ann');
    await first.app.get(CheckpointService).publish();
    await newTenant(first, 'bob');
    const published = (await ledgerEvents(first)).filter((e) => e.type === 'CheckpointPublished');
    const resumeAfter = BigInt((published.at(-1)!.data as { lastPosition: string }).lastPosition);
    await first.close();

    const subscribed = jest.spyOn(SqliteEventStore.prototype, 'subscribeAll');
    const again = await startDuffy({ dataDir: first.dataDir });
    try {
      expect(resumeAfter).toBeGreaterThan(0n);
      // The checkpoint service's subscription starts where the last checkpoint ended; before, every start began at 0.
      expect(subscribed.mock.calls.map((c) => c[0])).toContain(resumeAfter);
      expect(subscribed.mock.calls.map((c) => c[0])).not.toContain(0n);
      await newTenant(again, 'cyd');
      await again.app.get(CheckpointService).publish();
      const events = await ledgerEvents(again);
      const check = checkPublished(LedgerDigest.of(events));
      expect(check.problems).toEqual([]);
      expect(check.checked).toBe(2);
    } finally {
      subscribed.mockRestore();
      await again.close();
    }
  });
});
