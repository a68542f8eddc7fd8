import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import Database from 'better-sqlite3';
import { copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ReadSide } from '../../src/application/read-side.service.js';
import { Ledger } from '../../src/application/ledger.service.js';
import { isLegacyLedger, upgradeLegacyLedger } from '../../src/adapters/eventstore/legacy-ledger.js';
import { APPEND_ONLY_TRIGGERS } from '../../src/adapters/eventstore/sqlite-event-store.js';
import { Client, type Running, basic, ledgerFile, newTenant, startDuffy } from '../support/server.js';
import { clockSetBack, setClockBack } from '../support/clock.js';
import { duffyCli } from '../support/cli.js';

/**
 * An operator's upgrade in place: today's Duffy started on a data dir an old Duffy left behind (see the README
 * beside each fixture for how it was made). Nothing may be lost, and the audit must stay clean.
 */
const OLD = [
  // The first day's format: no global chain, stream hashes without the metadata, no checkpoints; projections
  // entities 1, fairness 3, machine-stress 1, tenant-allocations 1; no maintenance yet.
  { fixture: 'upgrade-0920043', made: '2026-11-26', entitiesWas: 1, legacy: true },
  // Both chains, signed checkpoints without the Merkle frontier; entities 4, fairness 4, tenant-allocations 1.
  { fixture: 'upgrade-0697c2b', made: '2026-11-29', entitiesWas: 4, legacy: false },
];
type Expected = {
  adminKey: string;
  tenants: Record<string, { id: number; key: string }>;
  quotas: Record<string, { node_quota: number | null; active: boolean }>;
  sessions: Record<string, { active: boolean; tenant: string; expires_at: string | null; nodes: string[] }>;
  nodes: Record<string, { state: string; service: string | null; service_reason: string | null }>;
  queue: Array<{ session: number }>;
};
const hostnames = (s: { nodes: Array<{ hostname: string }> }) => s.nodes.map((n) => n.hostname).sort();


describe.each(OLD)("upgrade in place: today's Duffy on the data dir of $fixture ($made)", ({ fixture, entitiesWas, legacy }) => {
  const FIXTURE = fileURLToPath(new URL(`../fixtures/${fixture}/`, import.meta.url));
  const expected = JSON.parse(readFileSync(join(FIXTURE, 'expected.json'), 'utf8')) as Expected;
  let duffy: Running;
  let dataDir: string;
  let admin: Client;
  const as = (name: string) => duffy.client(name, expected.tenants[name].key);
  const every = process.env.DUFFY_CHECKPOINT_EVERY_EVENTS;
  let oldEvents: number;
  let restoreClock = () => {};

  beforeAll(async () => {
    dataDir = join(mkdtempSync(join(tmpdir(), 'duffy-upgrade-')), 'data');
    cpSync(join(FIXTURE, 'datadir'), dataDir, { recursive: true });
    const old = await ledgerFile(join(dataDir, 'ledger.sqlite'));
    oldEvents = old.length;
    // Ten minutes after the old Duffy stopped, whenever this runs: its sessions (12 h at most) are still open,
    // and its events are older than the minute the audit allows a checkpoint's time to run ahead of them.
    const stopped = Math.max(...old.map((e) => Date.parse(String(e.metadata.at ?? (e.data as { at?: string }).at))).filter(Number.isFinite));
    restoreClock = setClockBack(Date.now() - (stopped + 10 * 60_000));
    // Fewer than the events since the old ledger's last checkpoint: one is due at once.
    process.env.DUFFY_CHECKPOINT_EVERY_EVENTS = '5';
    // The configuration the old Duffy ran with (its demo inventory), as an operator keeps theirs.
    duffy = await startDuffy({ dataDir, configFile: join(FIXTURE, 'config.yaml') });
    admin = new Client(duffy.url, basic('admin', expected.adminKey));
  });

  afterAll(async () => {
    if (every === undefined) delete process.env.DUFFY_CHECKPOINT_EVERY_EVENTS;
    else process.env.DUFFY_CHECKPOINT_EVERY_EVENTS = every;
    await duffy?.close();
    restoreClock();
  });
  it('reads every session as the old Duffy answered it: open ones still hold their machines, ended ones stay readable', async () => {
    const waiting = new Set(expected.queue.map((q) => q.session));
    expect(waiting.size).toBe(1);
    for (const [id, old] of Object.entries(expected.sessions)) {
      const r = await admin.get(`/api/v1/sessions/${id}`);
      expect(r.status).toBe(200);
      const s = r.body.session;
      expect([id, s.tenant.name, hostnames(s)]).toEqual([id, old.tenant, old.nodes]);
      if (waiting.has(Number(id))) {
        // Its caller went with the old process: let go at start, with nothing held.
        expect([s.active, s.retired_at === null]).toEqual([false, false]);
      } else {
        expect([id, s.active]).toEqual([id, old.active]);
        if (old.active) expect([id, s.expires_at]).toEqual([id, old.expires_at]);
      }
    }
    // The machines of the open sessions are still theirs.
    const open = Object.entries(expected.sessions).filter(([, s]) => s.active);
    expect(open.length).toBeGreaterThanOrEqual(3);
    const nodes = (await admin.get('/api/v1/nodes')).body.nodes as Array<{ hostname: string; state: string }>;
    for (const [, s] of open) for (const h of s.nodes) expect([h, nodes.find((n) => n.hostname === h)?.state]).toEqual([h, 'deployed']);
  });

  it('finishes the releases the old Duffy had under way: those machines serve again', async () => {
    const releasing = Object.entries(expected.nodes).filter(([, n]) => n.state === 'deprovisioning').map(([h]) => h);
    expect(releasing.length).toBeGreaterThan(0);
    for (let tries = 0; ; tries++) {
      const nodes = (await admin.get('/api/v1/nodes')).body.nodes as Array<{ hostname: string; state: string }>;
      const states = releasing.map((h) => nodes.find((n) => n.hostname === h)?.state);
      if (states.every((st) => st === 'ready') || tries > 600) {
        expect(states).toEqual(releasing.map(() => 'ready'));
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }, 90_000);

  it('keeps tenants, their keys and quotas; a retired tenant stays retired; a machine in maintenance stays there', async () => {
    const tenants = (await admin.get('/api/v1/tenants')).body.tenants as Array<{ name: string; node_quota: number | null; active: boolean }>;
    for (const [name, q] of Object.entries(expected.quotas)) expect(tenants.find((t) => t.name === name)).toMatchObject(q);
    const alphaOpen = Object.entries(expected.sessions).filter(([, s]) => s.active && s.tenant === 'alpha').map(([id]) => Number(id));
    const mine = await as('alpha').get('/api/v1/sessions');
    expect(mine.status).toBe(200);
    expect(mine.body.sessions.map((s: { id: number }) => s.id).sort()).toEqual(alphaOpen.sort());
    expect((await as('gamma').get('/api/v1/sessions')).status).toBe(403);
    const out = Object.entries(expected.nodes).filter(([, n]) => n.service === 'maintenance');
    const now = (await admin.get('/api/v1/nodes')).body.nodes as Array<{ hostname: string; service: string; service_reason: string }>;
    for (const [host, n] of out) expect(now.find((x) => x.hostname === host)).toMatchObject({ service: 'maintenance', service_reason: n.service_reason });
  });

  it('rebuilds the projections whose version changed since, saying so', () => {
    const because = duffy.app.get(ReadSide).runners.map((r) => [r.projection.name, r.rebuiltBecause]);
    expect(because).toEqual(expect.arrayContaining([['entities', expect.stringMatching(new RegExp(`^its version changed from ${entitiesWas} to \\d+$`))]]));
  });

  it('allocates and releases, counting quota with what the old Duffy handed out', async () => {
    const alpha = as('alpha');
    const held = Object.values(expected.sessions).filter((s) => s.active && s.tenant === 'alpha').reduce((n, s) => n + s.nodes.length, 0);
    const quota = expected.quotas.alpha.node_quota!;
    const over = await alpha.post('/api/v1/sessions', { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: quota - held + 1 }] });
    expect([over.status, over.body.detail]).toEqual([403, `quota exceeded: tenant alpha has ${held} of ${quota} nodes and asked for ${quota - held + 1} more`]);
    const got = await alpha.post('/api/v1/sessions', { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 1 }] });
    expect(got.status).toBe(201);
    expect((await alpha.put(`/api/v1/sessions/${got.body.session.id}`, { active: false })).status).toBe(200);
    // An old session ends as well, and its machines come back.
    const [oldId, old] = Object.entries(expected.sessions).find(([, s]) => s.active && s.tenant === 'alpha')!;
    const done = await alpha.put(`/api/v1/sessions/${oldId}`, { active: false });
    expect([done.status, done.body.session.active, hostnames(done.body.session)]).toEqual([200, false, old.nodes]);
    // cico's call with an old key.
    const legacy = await new Client(duffy.url).get(`/Inventory?key=${expected.tenants.beta.key}`);
    expect(legacy.status).toBe(200);
    expect(legacy.body.length).toBeGreaterThan(0);
  }, 120_000);

  it('leaves a ledger that `audit verify` and `audit replay` find clean, with a checkpoint of the whole old history', async () => {
    await duffy.close();
    const ledger = join(dataDir, 'ledger.sqlite');
    const verify = await duffyCli('audit', '--ledger', ledger, 'verify');
    expect([verify.exitCode, verify.lines.at(-1)]).toEqual([0, expect.stringMatching(/^OK: /)]);
    // Said, not hidden: the first day's events are hashed without their metadata.
    expect(verify.lines.at(-1)!.includes(`positions 1..${oldEvents} written by the Duffy of 2026-11-26`)).toBe(legacy);
    const replay = await duffyCli('audit', '--ledger', ledger, 'replay');
    expect([replay.exitCode, replay.lines.at(-1)]).toEqual([0, 'OK: no invariant is broken']);
    // The first checkpoint this server signed covers every event the old one wrote (one of part of them, signed
    // now, would make the rest read as back-dated).
    const events = await ledgerFile(ledger);
    const mine = events.filter((e) => e.type === 'CheckpointPublished' && e.position > oldEvents);
    expect(mine.length).toBeGreaterThan(0);
    expect((mine[0].data as { size: number }).size).toBeGreaterThanOrEqual(oldEvents);
  });
});

describe('a start that catches up on more events than DUFFY_CHECKPOINT_EVERY_EVENTS since the last checkpoint', () => {
  // A ledger without checkpoints (from before 2026-11-29, or younger than DUFFY_CHECKPOINT_EVERY_SECONDS), or the
  // setting lowered: the start used to sign a checkpoint of part of its history, dated now, and `audit verify`
  // then read every later event of that history as back-dated.
  const every = process.env.DUFFY_CHECKPOINT_EVERY_EVENTS;
  afterAll(() => {
    if (every === undefined) delete process.env.DUFFY_CHECKPOINT_EVERY_EVENTS;
    else process.env.DUFFY_CHECKPOINT_EVERY_EVENTS = every;
  });

  it('signs one checkpoint of the whole history once caught up, and verify stays clean', async () => {
    process.env.DUFFY_CHECKPOINT_EVERY_EVENTS = '100000';
    const dataDir = await clockSetBack(10 * 60_000, async () => {
      const first = await startDuffy();
      const ci = await newTenant(first, 'ci');
      for (let i = 0; i < 3; i++) {
        const s = (await ci.post('/api/v1/sessions', { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 1 }] })).body.session;
        await ci.put(`/api/v1/sessions/${s.id}`, { active: false });
      }
      await first.close();
      return first.dataDir;
    });
    const ledger = join(dataDir, 'ledger.sqlite');
    const history = (await ledgerFile(ledger)).length;
    expect((await ledgerFile(ledger)).filter((e) => e.type === 'CheckpointPublished')).toEqual([]);
    process.env.DUFFY_CHECKPOINT_EVERY_EVENTS = '5';
    const second = await startDuffy({ dataDir });
    await second.app.get(Ledger).until(() => second.app.get(Ledger).world.position > BigInt(history));
    await second.close();
    const signed = (await ledgerFile(ledger)).filter((e) => e.type === 'CheckpointPublished').map((e) => (e.data as { size: number }).size);
    expect(signed[0]).toBeGreaterThanOrEqual(history);
    const verify = await duffyCli('audit', '--ledger', ledger, 'verify');
    expect([verify.exitCode, verify.lines.at(-1)]).toEqual([0, expect.stringMatching(/^OK: /)]);
  });
});

describe('a ledger of 2026-11-26 is taken over only as it was written', () => {
  const FIXTURE = fileURLToPath(new URL('../fixtures/upgrade-0920043/datadir/ledger.sqlite', import.meta.url));
  const copy = () => {
    const file = join(mkdtempSync(join(tmpdir(), 'duffy-legacy-')), 'ledger.sqlite');
    copyFileSync(FIXTURE, file);
    return file;
  };
  /** A SQL shell's edit: the append-only triggers dropped for it and put back as the store made them. */
  const edit = (file: string, sql: string) => {
    const db = new Database(file);
    for (const name of Object.keys(APPEND_ONLY_TRIGGERS)) db.exec(`DROP TRIGGER IF EXISTS ${name}`);
    db.exec(sql);
    for (const trigger of Object.values(APPEND_ONLY_TRIGGERS)) db.exec(trigger);
    db.close();
  };
  const verify = async (file: string) => {
    const r = await duffyCli('audit', '--ledger', file, 'verify');
    return [r.exitCode, r.lines.at(-1)];
  };

  it('is upgraded when every event is in its format, and an edit after that is caught', async () => {
    const file = copy();
    expect(await verify(file)).toEqual([0, expect.stringMatching(/^OK \(NOT CHECKED: the global chain \(a ledger of the Duffy of 2026-11-26 has none/)]);
    expect(upgradeLegacyLedger(file)).toBe(132);
    expect(upgradeLegacyLedger(file)).toBe(0);
    // No writer's head yet: the server's first append writes it. No checkpoint signs the events' metadata yet: not
    // claimed (verify said a checkpoint covered it, and an edit of an actor read OK).
    expect(await verify(file)).toEqual([0, expect.stringMatching(/^OK \(NOT CHECKED: deletion of the newest events .*; the metadata \(actor, time\) of positions 1\.\.132, written by the Duffy of 2026-11-26: no checkpoint in the ledger signs them yet\): 132 events in their stream chains \(positions 1\.\.132 written by the Duffy of 2026-11-26, whose stream hashes cover each event's type and data, not its metadata\); 132 links of the global chain$/)]);
    // Data of a session's event: its old hash no longer matches.
    edit(file, `UPDATE events SET data = json_set(data, '$.tenant', 'beta') WHERE stream = 'session-2' AND revision = 0`);
    expect(await verify(file)).toEqual([1, expect.stringMatching(/^TAMPERED/)]);
  });

  it("is signed by the first start's checkpoint once caught up, not after DUFFY_CHECKPOINT_EVERY_EVENTS more events", async () => {
    // Only a checkpoint covers those events' metadata: an upgraded farm stopped within the first ten minutes had none.
    const every = process.env.DUFFY_CHECKPOINT_EVERY_EVENTS;
    delete process.env.DUFFY_CHECKPOINT_EVERY_EVENTS;
    try {
      const dataDir = join(mkdtempSync(join(tmpdir(), 'duffy-legacy-')), 'data');
      cpSync(join(FIXTURE, '..'), dataDir, { recursive: true });
      const duffy = await startDuffy({ dataDir, configFile: join(FIXTURE, '../../config.yaml') });
      const signedNow = async () => (await ledgerFile(join(dataDir, 'ledger.sqlite'))).filter((e) => e.type === 'CheckpointPublished');
      for (let tries = 0; tries < 100 && (await signedNow()).length === 0; tries++) await new Promise((r) => setTimeout(r, 100));
      await duffy.close();
      const signed = await signedNow();
      expect(signed.map((e) => (e.data as { size: number }).size >= 132)).toEqual([true]);
      expect(await verify(join(dataDir, 'ledger.sqlite'))).toEqual([0, expect.stringMatching(/^OK: .*written by the Duffy of 2026-11-26, whose stream hashes cover each event's type and data, not its metadata, which a checkpoint signed after them covers\)/)]);
    } finally {
      if (every !== undefined) process.env.DUFFY_CHECKPOINT_EVERY_EVENTS = every;
    }
  }, 120_000);

  it('is refused, not upgraded, when an event was edited before (its old hash no longer matches)', async () => {
    const file = copy();
    edit(file, `UPDATE events SET data = json_set(data, '$.nodeQuota', 99) WHERE type = 'TenantRegistered' AND stream = 'tenant-alpha'`);
    expect(isLegacyLedger(file)).toBe(false);
    expect(upgradeLegacyLedger(file)).toBe(0);
    expect(await verify(file)).toEqual([1, expect.stringMatching(/^TAMPERED/)]);
  });

  it("does not take today's ledger with its chain column dropped and its head record removed for one", async () => {
    const duffy = await startDuffy();
    await duffy.close();
    const file = join(duffy.dataDir, 'ledger.sqlite');
    rmSync(`${file}.head`);
    edit(file, 'ALTER TABLE events DROP COLUMN chain');
    expect(isLegacyLedger(file)).toBe(false);
    expect(await verify(file)).toEqual([1, expect.stringMatching(/^TAMPERED/)]);
  });
});
