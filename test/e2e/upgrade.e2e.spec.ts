import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { cpSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/cli/main.js';
import { ReadSide } from '../../src/application/read-side.service.js';
import { Ledger } from '../../src/application/ledger.service.js';
import { Client, type Running, basic, ledgerFile, newTenant, startDuffy } from '../support/server.js';
import { clockSetBack, setClockBack } from '../support/clock.js';

/**
 * An operator's upgrade in place: today's Duffy started on a data dir an old Duffy left behind (made by commit
 * 0697c2b of 2026-11-29, see test/fixtures/upgrade-0697c2b/README.md). Nothing may be lost, and the audit must
 * stay clean: the old ledger's events are written long before this test runs.
 */
const FIXTURE = fileURLToPath(new URL('../fixtures/upgrade-0697c2b/', import.meta.url));
type Expected = {
  adminKey: string;
  tenants: Record<string, { id: number; key: string }>;
  quotas: Record<string, { node_quota: number | null; active: boolean }>;
  sessions: Record<string, { active: boolean; tenant: string; expires_at: string | null; nodes: string[] }>;
  nodes: Record<string, { state: string; service: string | null; service_reason: string | null }>;
  queue: Array<{ session: number }>;
};
const expected = JSON.parse(readFileSync(join(FIXTURE, 'expected.json'), 'utf8')) as Expected;
const hostnames = (s: { nodes: Array<{ hostname: string }> }) => s.nodes.map((n) => n.hostname).sort();

async function duffyCli(...args: string[]): Promise<{ lines: string[]; exitCode: number }> {
  const lines: string[] = [];
  process.exitCode = 0;
  const exitCode = await run(['node', 'duffy', ...args], (l) => lines.push(...l.split('\n')));
  process.exitCode = 0;
  return { lines, exitCode };
}

describe('upgrade in place: today\'s Duffy on the data dir of Duffy 0697c2b (2026-11-29)', () => {
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
    const stopped = Math.max(...old.map((e) => Date.parse(String(e.metadata.at))));
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

  it('keeps tenants, their keys and quotas; a retired tenant stays retired; a machine in maintenance stays there', async () => {
    const tenants = (await admin.get('/api/v1/tenants')).body.tenants as Array<{ name: string; node_quota: number | null; active: boolean }>;
    for (const [name, q] of Object.entries(expected.quotas)) expect(tenants.find((t) => t.name === name)).toMatchObject(q);
    const alphaOpen = Object.entries(expected.sessions).filter(([, s]) => s.active && s.tenant === 'alpha').map(([id]) => Number(id));
    const mine = await as('alpha').get('/api/v1/sessions');
    expect(mine.status).toBe(200);
    expect(mine.body.sessions.map((s: { id: number }) => s.id).sort()).toEqual(alphaOpen.sort());
    expect((await as('gamma').get('/api/v1/sessions')).status).toBe(403);
    const out = Object.entries(expected.nodes).filter(([, n]) => n.service === 'maintenance');
    expect(out.length).toBe(1);
    const now = (await admin.get('/api/v1/nodes')).body.nodes as Array<{ hostname: string; service: string; service_reason: string }>;
    for (const [host, n] of out) expect(now.find((x) => x.hostname === host)).toMatchObject({ service: 'maintenance', service_reason: n.service_reason });
  });

  it('rebuilds the projections whose version changed since, saying so', () => {
    const because = duffy.app.get(ReadSide).runners.map((r) => [r.projection.name, r.rebuiltBecause]);
    // entities and fairness were version 4 in 0697c2b.
    expect(because).toEqual(expect.arrayContaining([['entities', expect.stringMatching(/^its version changed from 4 to \d+$/)]]));
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
