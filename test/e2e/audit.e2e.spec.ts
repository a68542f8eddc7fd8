import { beforeAll, describe, expect, it } from '@jest/globals';
import Database from 'better-sqlite3';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detailOf, replay } from '../../src/audit/audit.js';
import type { RecordedEvent } from '../../src/application/ports/event-store.port.js';
import type { DuffyEvent } from '../../src/domain/events.js';
import { newTenant, startDuffy } from '../support/server.js';
import { duffyCli } from '../support/cli.js';

const DEFAULTS = { nodeQuota: 2, sessionLifetime: 3600, sessionLifetimeMax: 7200 };


describe('auditor CLI on a real ledger', () => {
  let ledger: string;
  let sessionId: number;

  beforeAll(async () => {
    const duffy = await startDuffy();
    const alice = await newTenant(duffy, 'alice');
    const s = (await alice.post('/api/v1/sessions', { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 2 }] })).body.session;
    sessionId = s.id;
    await alice.put(`/api/v1/sessions/${s.id}`, { active: false });
    await alice.post('/api/v1/sessions', { nodes_specs: [{ type: 'vm', quantity: 1 }] });
    await duffy.close();
    ledger = join(duffy.dataDir, 'ledger.sqlite');
  });

  it('verifies a clean ledger', async () => {
    const r = await duffyCli('audit', '--ledger', ledger, 'verify');
    expect(r.lines.at(-1)).toMatch(/^OK: (\d+) events in their stream chains; \1 links of the global chain; the writer's head at position \1$/);
    expect(r.exitCode).toBe(0);
  });

  it('finds a one-byte change in one event of a copy, with its position', async () => {
    const copy = join(mkdtempSync(join(tmpdir(), 'duffy-tamper-')), 'ledger.sqlite');
    copyFileSync(ledger, copy);
    const db = new Database(copy);
    // An attacker with the file can drop the append-only triggers; the hash chain still gives it away.
    db.exec('DROP TRIGGER events_no_update');
    const victim = db.prepare("SELECT position, data FROM events WHERE type = 'MachineReserved' ORDER BY position LIMIT 1").get() as { position: number; data: string };
    const edited = victim.data.replace('"tenantId":2', '"tenantId":3');
    expect(edited).not.toBe(victim.data);
    expect(edited.length).toBe(victim.data.length);
    db.prepare('UPDATE events SET data = ? WHERE position = ?').run(edited, victim.position);
    db.close();
    const r = await duffyCli('audit', '--ledger', copy, 'verify');
    expect(r.exitCode).toBe(1);
    expect(r.lines[0]).toMatch(/^position +where +problem$/);
    expect(r.lines[2]).toMatch(new RegExp(`^${victim.position} +machine-[^@]+@1 +hash does not match the event: its type, data or metadata was changed$`));
    // The trigger left dropped is itself on record.
    expect(r.lines[3]).toMatch(/^- +schema +trigger events_no_update is missing: someone dropped the append-only guard$/);
    expect(r.lines.at(-1)).toMatch(/^TAMPERED: 2 problem/);
    const j = await duffyCli('--json', 'audit', '--ledger', copy, 'verify');
    expect(JSON.parse(j.lines[0])).toMatchObject({ position: String(victim.position), problem: 'hash does not match the event: its type, data or metadata was changed' });
    expect(JSON.parse(j.lines.at(-1)!)).toMatchObject({ ok: false });
  });

  it('replays without violations, and answers who-had, history and export', async () => {
    expect((await duffyCli('audit', '--ledger', ledger, 'replay')).lines.at(-1)).toBe('OK: no invariant is broken');
    // replay's --config is read, not taken by the root's client configuration option and dropped.
    expect(await duffyCli('audit', '--ledger', ledger, 'replay', '--config', join(tmpdir(), 'no-such-duffy-config.yaml'))).toMatchObject({ exitCode: 1, lines: [] });
    expect((await duffyCli('audit', '--ledger', ledger, 'replay', '--config', 'config/demo.yaml')).lines.at(-1)).toBe('OK: no invariant is broken');
    const hist = await duffyCli('--json', 'audit', '--ledger', ledger, 'history', `session-${sessionId}`);
    const types = hist.lines.map((l) => JSON.parse(l).type);
    expect(types).toEqual(expect.arrayContaining(['MachineRequested', 'QuotaClaimed', 'MachineReserved', 'SessionStarted', 'SessionReleased', 'MachineReleased', 'QuotaReturned']));
    const reserved = hist.lines.map((l) => JSON.parse(l)).find((e) => e.type === 'MachineReserved');
    const who = await duffyCli('--json', 'audit', '--ledger', ledger, 'who-had', reserved.data.hostname, '--at', reserved.data.at);
    expect(JSON.parse(who.lines[0])).toMatchObject({ sessionId, tenant: 'alice', ended: 'done' });
    const table = await duffyCli('audit', '--ledger', ledger, 'who-had', reserved.data.hostname, '--at', reserved.data.at);
    expect(table.lines[0]).toMatch(/^machine +at +session +tenant +from +until +session ended$/);
    expect(table.lines[2]).toMatch(new RegExp(`^${reserved.data.hostname.replace(/\./g, '\\.')} .* ${sessionId} +alice .* done$`));
    const readable = await duffyCli('audit', '--ledger', ledger, 'history', `session-${sessionId}`);
    expect(readable.lines[0]).toMatch(/^time +pos +event +session +tenant +machine +actor +session ended +detail$/);
    expect(readable.lines.find((l) => / MachineReserved /.test(l))).toMatch(/alice .* done$/);
    expect(await duffyCli('audit', '--ledger', ledger, 'who-had', 'nosuch.host', '--at', reserved.data.at)).toMatchObject({ exitCode: 4 });
    expect(await duffyCli('audit', '--ledger', ledger, 'history', 'session-99999')).toMatchObject({ exitCode: 4, lines: [] });
    expect(await duffyCli('audit', '--ledger', ledger, 'history', 'tenant-nobody')).toMatchObject({ exitCode: 4 });
    // The tenant defaults each start recorded: a stream of its own, with what they were.
    const defaults = await duffyCli('audit', '--ledger', ledger, 'history', 'defaults');
    expect(defaults.lines.filter((l) => / DefaultsSet /.test(l))).toEqual([expect.stringMatching(/quota 10, lifetime 21600 s, at most 43200 s$/)]);
    // A question it cannot read is a usage error (2), not the 1 of a broken ledger a script would take for tampering.
    for (const subject of ['nonsense', 'session-', 'session-abc']) expect((await duffyCli('audit', '--ledger', ledger, 'history', subject)).exitCode).toBe(2);
    // Named as Duffy tells them apart (a host as DNS compares it, a session id as the API reads it), not "no machine ... in this ledger".
    const spelt = `${reserved.data.hostname.toUpperCase()}.`;
    expect(JSON.parse((await duffyCli('--json', 'audit', '--ledger', ledger, 'who-had', spelt, '--at', reserved.data.at)).lines[0])).toMatchObject({ hostname: reserved.data.hostname, sessionId, tenant: 'alice' });
    expect((await duffyCli('--json', 'audit', '--ledger', ledger, 'history', `machine-${spelt}`)).lines).toEqual((await duffyCli('--json', 'audit', '--ledger', ledger, 'history', `machine-${reserved.data.hostname}`)).lines);
    expect((await duffyCli('--json', 'audit', '--ledger', ledger, 'history', `session-0${sessionId}`)).lines).toEqual(hist.lines);
    expect((await duffyCli('--json', 'audit', '--ledger', ledger, 'history', 'tenant-ALICE')).lines).toEqual((await duffyCli('--json', 'audit', '--ledger', ledger, 'history', 'tenant-alice')).lines);
    // The pools the configuration gave, and the checkpoints, are streams of their own too.
    const pools = await duffyCli('audit', '--ledger', ledger, 'history', 'pools');
    expect([pools.exitCode, pools.lines.filter((l) => / PoolsConfigured /.test(l))]).toEqual([0, [expect.stringMatching(/metal-intel-x86_64 baremetal x86_64 intel/)]]);
    const checkpoints = await duffyCli('audit', '--ledger', ledger, 'history', 'audit-checkpoints');
    expect([checkpoints.exitCode, checkpoints.lines[0]]).toEqual([0, expect.stringMatching(/^time +pos +event /)]);
    const nobody = await duffyCli('audit', '--ledger', ledger, 'who-had', reserved.data.hostname, '--at', '2000-01-01T00:00:00Z');
    expect(nobody.lines[0]).toMatch(/^nobody held/);
    const all = await duffyCli('audit', '--ledger', ledger, 'export');
    const none = await duffyCli('audit', '--ledger', ledger, 'export', '--to', '2000-01-01T00:00:00Z');
    expect(all.lines.length).toBeGreaterThan(10);
    expect(none.lines.filter((l) => !JSON.parse(l).stream.startsWith('ids-'))).toEqual([]);
  });

  it('reads --at, --from and --to as the server reads a time: ISO 8601 only, UTC without an offset, whatever the host TZ', async () => {
    const hist = await duffyCli('--json', 'audit', '--ledger', ledger, 'history', `session-${sessionId}`);
    const reserved = hist.lines.map((l) => JSON.parse(l)).find((e) => e.type === 'MachineReserved');
    const tz = process.env.TZ;
    process.env.TZ = 'America/New_York';
    try {
      const who = await duffyCli('--json', 'audit', '--ledger', ledger, 'who-had', reserved.data.hostname, '--at', reserved.data.at.replace(/Z$/, ''));
      expect(JSON.parse(who.lines[0])).toMatchObject({ sessionId, tenant: 'alice' });
      const from = await duffyCli('audit', '--ledger', ledger, 'export', '--from', reserved.data.at.replace(/Z$/, ''));
      expect(from.lines.map((l) => JSON.parse(l).type)).toContain('MachineReserved');
    } finally {
      if (tz === undefined) delete process.env.TZ;
      else process.env.TZ = tz;
    }
    // Positions are not times: "1" was read as 2001 and answered with nothing, exit 0.
    expect(await duffyCli('audit', '--ledger', ledger, 'export', '--from', '1', '--to', '2')).toMatchObject({ exitCode: 2, lines: [] });
    expect(await duffyCli('audit', '--ledger', ledger, 'who-had', reserved.data.hostname, '--at', 'Nov 30 2026')).toMatchObject({ exitCode: 2 });
  });
});

/** Crafted ledgers, one per invariant the replay can judge from events. */
describe('replay reports each broken invariant', () => {
  let position = 0n;
  const revisions = new Map<string, number>();
  const ev = (stream: string, event: DuffyEvent, revision?: number): RecordedEvent => {
    const r = revision ?? (revisions.get(stream) ?? -1) + 1;
    revisions.set(stream, r);
    return { id: String(position), stream, revision: r, position: ++position, type: event.type, data: event.data as never, metadata: {} };
  };
  const at = '2026-01-01T00:00:00.000Z';
  const reserve = (sessionId: number, hostname = 'm1', affinity: 'kept' | 'fallback' = 'kept', platform = 'intel'): DuffyEvent => ({
    type: 'MachineReserved',
    data: { machineId: 1, hostname, sessionId, tenantId: 1, pool: 'p', platform, affinity, contextualize: false, at },
  });
  const base = () => {
    position = 0n;
    revisions.clear();
    return [
      ev('tenant-a', { type: 'TenantRegistered', data: { tenantId: 1, name: 'a', apiKeyDigest: 'x', isAdmin: false, sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null, at } }),
      ev('machine-m1', { type: 'MachineRegistered', data: { machineId: 1, hostname: 'm1', ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready', at } }),
      // The requests of the sessions below (rule ids: a reservation for a session never requested is a breach).
      ...[1, 2].map((sessionId) => ev(`session-${sessionId}`, { type: 'MachineRequested', data: { sessionId, tenantId: 1, tenant: 'a', specs: [{ pool: 'p', quantity: 1 }], expiresAt: at, at } })),
    ];
  };
  const invariants = (events: RecordedEvent[]) => replay(events, DEFAULTS).map((v) => v.invariant);

  it('1: one machine in two active sessions', () => {
    const events = [...base(), ev('machine-m1', reserve(1)), ev('machine-m1', reserve(2))];
    expect(invariants(events)).toEqual([1]);
    expect(replay(events, DEFAULTS)[0].positions).toEqual([5n, 6n]);
  });

  it('2: a release without its reservation', () => {
    expect(invariants([...base(), ev('machine-m1', { type: 'MachineReleased', data: { machineId: 1, sessionId: 7, reason: 'done', at } })])).toEqual([2]);
  });

  it('10: a machine reserved for a session that had ended (held by nobody, for good)', () => {
    const events = [...base(), ev('session-1', { type: 'SessionReleased', data: { sessionId: 1, reason: 'done', at } }), ev('machine-m1', reserve(1))];
    expect(replay(events, DEFAULTS)).toEqual([{ invariant: 10, message: 'machine 1 reserved for session 1 after the session ended: nobody would ever release it', positions: [5n, 6n] }]);
  });

  it('3: more machines than the quota, whatever QuotaClaimed says', () => {
    const claim = (sessionId: number, count: number): DuffyEvent => ({ type: 'QuotaClaimed', data: { tenantId: 1, sessionId, count, at } });
    const other = (id: number, sessionId: number): DuffyEvent => ({ type: 'MachineReserved', data: { ...(reserve(sessionId).data as object), machineId: id, hostname: `m${id}` } } as DuffyEvent);
    expect(invariants([...base(), ev('tenant-a', claim(1, 1)), ev('machine-m1', reserve(1)), ev('machine-m2', other(2, 1)), ev('machine-m3', other(3, 2))])).toEqual([3]);
  });

  it('6: an event removed from a stream', () => {
    const events = base();
    events.push(ev('machine-m1', reserve(1), 3));
    expect(invariants(events)).toEqual([6]);
  });

  it('7: a tenant moved off its platform without asking', () => {
    const events = [
      ...base(),
      ev('session-3', { type: 'MachineRequested', data: { sessionId: 3, tenantId: 1, tenant: 'a', specs: [{ type: 'baremetal', quantity: 1 }], expiresAt: at, at } }),
      ev('machine-m1', reserve(3, 'm1', 'fallback', 'amd')),
    ];
    expect(invariants(events)).toEqual([7]);
  });

  it('8: a more worn machine given while a less worn one of the same pool was free', () => {
    const events = [
      ...base(),
      ev('machine-m2', { type: 'MachineRegistered', data: { machineId: 2, hostname: 'm2', ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready', at } }),
      ev('machine-m1', reserve(1)),
      ev('machine-m1', { type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'done', at: '2026-01-01T01:00:00.000Z' } }),
      ev('machine-m1', { type: 'MachineRecycled', data: { machineId: 1, policy: 'reuse', state: 'ready', at: '2026-01-01T01:00:00.000Z' } }),
    ];
    // m1 has an hour of wear, m2 none: m1 again is a breach.
    const again = { ...(reserve(2) as { data: object }), data: { ...(reserve(2).data as object), at: '2026-01-01T02:00:00.000Z' } } as DuffyEvent;
    expect(invariants([...events, ev('machine-m1', again)])).toEqual([8]);
  });

  describe('admin: once there is an active admin there always is one, and the admins stream says who', () => {
    const admin = (tenantId: number, name: string): DuffyEvent => ({
      type: 'TenantRegistered',
      data: { tenantId, name, apiKeyDigest: `key-of-${name}`, isAdmin: true, sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null, at },
    });
    const admins = (...ids: number[]): DuffyEvent => ({ type: 'ActiveAdminsChanged', data: { admins: ids, at } });
    const twoAdmins = () => [...base(), ev('tenant-r', admin(2, 'r')), ev('admins', admins(2)), ev('tenant-s', admin(3, 's')), ev('admins', admins(2, 3))];

    it('none when one of two admins retires, as Duffy writes it', () => {
      expect(invariants([...twoAdmins(), ev('tenant-r', { type: 'TenantRetired', data: { tenantId: 2, at } }), ev('admins', admins(3))])).toEqual([]);
    });

    it('the last active admin retired', () => {
      const events = [...twoAdmins(), ev('tenant-r', { type: 'TenantRetired', data: { tenantId: 2, at } }), ev('admins', admins(3)), ev('tenant-s', { type: 'TenantRetired', data: { tenantId: 3, at } })];
      expect(invariants(events)).toEqual(['admin']);
      expect(replay(events, DEFAULTS)[0]).toMatchObject({ message: 'TenantRetired of tenant 3 left no active admin', positions: [11n] });
    });

    it('an admins event that names others than the active admins', () => {
      const events = [...twoAdmins(), ev('tenant-r', { type: 'TenantRetired', data: { tenantId: 2, at } }), ev('admins', admins(2, 3))];
      expect(replay(events, DEFAULTS)).toEqual([{ invariant: 'admin', message: 'ActiveAdminsChanged names admins [2, 3] while [3] are active', positions: [10n] }]);
    });

    it('none on a ledger from before the admins stream (it starts at the first admin change)', () => {
      expect(invariants([...base(), ev('tenant-r', admin(2, 'r')), ev('tenant-s', admin(3, 's')), ev('tenant-r', { type: 'TenantRetired', data: { tenantId: 2, at } }), ev('admins', admins(3))])).toEqual([]);
    });
  });

  describe('key: a key another tenant holds is never given', () => {
    const tenant = (tenantId: number, name: string, apiKeyDigest: string): DuffyEvent => ({
      type: 'TenantRegistered',
      data: { tenantId, name, apiKeyDigest, isAdmin: false, sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null, at },
    });
    const rekey = (tenantId: number, apiKeyDigest: string): DuffyEvent => ({ type: 'TenantUpdated', data: { tenantId, changes: { apiKeyDigest }, at } });

    it('a tenant registered, or given a new key, with the key of another', () => {
      const registered = [...base(), ev('tenant-r', tenant(2, 'r', 'k1')), ev('tenant-s', tenant(3, 's', 'k1'))];
      expect(replay(registered, DEFAULTS)).toEqual([{ invariant: 'key', message: 'tenant 3 was given the API key tenant 2 holds', positions: [registered.at(-1)!.position] }]);
      const rekeyed = [...base(), ev('tenant-r', tenant(2, 'r', 'k1')), ev('tenant-s', tenant(3, 's', 'k2')), ev('tenant-s', rekey(3, 'k1'))];
      expect(invariants(rekeyed)).toEqual(['key']);
    });

    it('none for a key given up before it is given again', () => {
      expect(invariants([...base(), ev('tenant-r', tenant(2, 'r', 'k1')), ev('tenant-s', tenant(3, 's', 'k2')), ev('tenant-r', rekey(2, 'k3')), ev('tenant-s', rekey(3, 'k1'))])).toEqual([]);
    });
  });

  it('none on a clean ledger', () => {
    const released: DuffyEvent = { type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'done', at } };
    const recycled: DuffyEvent = { type: 'MachineRecycled', data: { machineId: 1, policy: 'reuse', state: 'ready', at } };
    expect(invariants([...base(), ev('machine-m1', reserve(1)), ev('machine-m1', released), ev('machine-m1', recycled), ev('machine-m1', reserve(2))])).toEqual([]);
    // Taken again before its recycling made it free: rule free.
    const early = [...base(), ev('machine-m1', reserve(1)), ev('machine-m1', released), ev('machine-m1', reserve(2))];
    expect(replay(early, DEFAULTS).map((v) => v.message)).toEqual(['machine m1 reserved for session 2 while deprovisioning']);
  });
});

describe('audit export through a pipe', () => {
  it('writes every line, even into a slow reader', async () => {
    const { SqliteEventStore } = await import('../../src/adapters/eventstore/sqlite-event-store.js');
    const { execFile } = await import('node:child_process');
    const { fileURLToPath } = await import('node:url');
    const file = join(mkdtempSync(join(tmpdir(), 'duffy-export-')), 'ledger.sqlite');
    const store = new SqliteEventStore(file);
    const filler = 'x'.repeat(1000);
    for (let batch = 0; batch < 10; batch++) {
      const events = Array.from({ length: 500 }, (_, i) => ({ type: 'Noted', data: { n: batch * 500 + i, filler }, metadata: { at: '2026-01-01T00:00:00.000Z' } }));
      await store.append([{ stream: `filler-${batch}`, expected: 'no_stream', events }]);
    }
    await store.close();
    const cli = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
    // gzip, then a reader that starts late: the CLI's 5 MB must wait in the pipe, not be cut off at exit.
    const lines = await new Promise<string>((resolve, reject) =>
      execFile('sh', ['-c', `"${process.execPath}" "${cli}" audit --ledger "${file}" export | gzip -c | (sleep 1; gzip -dc) | wc -l`], (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    expect(Number(lines.trim())).toBe(5000);
  }, 30_000);
});

const AT = '2026-01-01T00:00:00.000Z';
/** Events as the ledger gives them, at positions 1, 2, 3... in the order made. */
function eventMaker() {
  let position = 0n;
  return (stream: string, type: string, data: Record<string, unknown>) => ({ id: String(position), stream, revision: 0, position: ++position, type, data: { ...data, at: AT }, metadata: {} }) as RecordedEvent;
}

describe('audit history of a session', () => {
  it('takes in its machines\' release, up to their recycling, though those events name no session', async () => {
    const { history } = await import('../../src/audit/audit.js');
    const ev = eventMaker();
    const events = [
      ev('session-1', 'MachineRequested', { sessionId: 1, tenantId: 1, tenant: 'a', specs: [], expiresAt: AT }),
      ev('machine-m1', 'MachineReserved', { machineId: 1, hostname: 'm1', sessionId: 1, tenantId: 1 }),
      ev('session-1', 'SessionReleased', { sessionId: 1, reason: 'done' }),
      ev('machine-m1', 'MachineReleased', { machineId: 1, sessionId: 1, reason: 'done' }),
      ev('machine-m2', 'PlaybookStarted', { machineId: 2, action: 'release', sessionId: null }),
      ev('machine-m1', 'PlaybookStarted', { machineId: 1, action: 'release', sessionId: null }),
      ev('machine-m1', 'MachineRecycled', { machineId: 1, policy: 'rebuild', state: 'ready' }),
      ev('machine-m1', 'PlaybookStarted', { machineId: 1, action: 'provision', sessionId: null }),
    ];
    expect(history(events, 'session-1').map((e) => Number(e.position))).toEqual([1, 2, 3, 4, 6, 7]);
  });

  it("of a tenant, takes in its sessions' whole stories: their start, extension and end, and their machines' release", async () => {
    const { history } = await import('../../src/audit/audit.js');
    const ev = eventMaker();
    const events = [
      ev('tenant-a', 'TenantRegistered', { tenantId: 1, name: 'a' }),
      ev('tenant-b', 'TenantRegistered', { tenantId: 2, name: 'b' }),
      ev('session-1', 'MachineRequested', { sessionId: 1, tenantId: 1, tenant: 'a', specs: [], expiresAt: AT }),
      ev('session-2', 'MachineRequested', { sessionId: 2, tenantId: 2, tenant: 'b', specs: [], expiresAt: AT }),
      ev('machine-m1', 'MachineReserved', { machineId: 1, hostname: 'm1', sessionId: 1, tenantId: 1 }),
      ev('session-1', 'SessionStarted', { sessionId: 1, machineIds: [1] }),
      ev('session-1', 'SessionExtended', { sessionId: 1, expiresAt: AT }),
      ev('session-2', 'SessionStarted', { sessionId: 2, machineIds: [] }),
      ev('session-1', 'SessionReleased', { sessionId: 1, reason: 'done' }),
      ev('machine-m1', 'MachineReleased', { machineId: 1, sessionId: 1, reason: 'done' }),
      ev('machine-m1', 'PlaybookStarted', { machineId: 1, action: 'release', sessionId: null }),
      ev('machine-m1', 'MachineRecycled', { machineId: 1, policy: 'rebuild', state: 'ready' }),
      ev('machine-m1', 'PlaybookStarted', { machineId: 1, action: 'provision', sessionId: null }),
    ];
    expect(history(events, 'tenant-a').map((e) => Number(e.position))).toEqual([1, 3, 5, 6, 7, 9, 10, 11, 12]);
    expect(history(events, 'tenant-b').map((e) => Number(e.position))).toEqual([2, 4, 8]);
  });
});

describe('audit history of a machine with playbook runs', () => {
  it('shows playbook output tails only with --verbose', async () => {
    const { SqliteEventStore } = await import('../../src/adapters/eventstore/sqlite-event-store.js');
    const file = join(mkdtempSync(join(tmpdir(), 'duffy-tails-')), 'ledger.sqlite');
    const store = new SqliteEventStore(file);
    const at = '2026-01-01T00:00:00.000Z';
    const run = { action: 'provision', playbook: 'provision.yml', exitCode: 0, durationMs: 900, timedOut: false, tail: 'TASK [disk] ok\nPLAY RECAP m1 ok=3\u001b[0m' };
    await store.append([
      {
        stream: 'machine-m1',
        expected: 'no_stream',
        events: [
          { type: 'MachineRegistered', data: { machineId: 1, hostname: 'm1', ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'unused', at }, metadata: { actor: 'duffy', at } },
          { type: 'MachineProvisioned', data: { machineId: 1, sessionId: null, ipaddr: '10.0.0.1', run, at }, metadata: { actor: 'duffy', at } },
          // Text someone wrote, with a newline and a terminal escape: shown escaped, never as a row of its own.
          { type: 'MachineServiceChanged', data: { machineId: 1, service: 'maintenance', reason: 'disk\n\u001b[31mFORGED ROW', at }, metadata: { actor: 'duffy', at } },
        ],
      },
    ]);
    await store.close();
    const plain = await duffyCli('audit', '--ledger', file, 'history', 'machine-m1');
    expect(plain.lines[0]).toMatch(/^time +pos +event/);
    expect(plain.lines.some((l) => l.includes('PLAY RECAP'))).toBe(false);
    expect(plain.lines[0]).toMatch(/ detail$/);
    expect(plain.lines.at(-2)).toMatch(/MachineProvisioned .* \(exit 0, 900 ms\)$/);
    expect(plain.lines.at(-1)).toMatch(/MachineServiceChanged .* maintenance: disk\\n\\u001b\[31mFORGED ROW$/);
    expect(plain.lines.join('\n')).not.toContain('\u001b');
    const verbose = await duffyCli('audit', '--ledger', file, 'history', 'machine-m1', '--verbose');
    // The same table, then each tail under the event it belongs to.
    expect(verbose.lines.slice(0, plain.lines.length)).toEqual(plain.lines);
    expect(verbose.lines.slice(plain.lines.length)).toEqual(['', "position 2, MachineProvisioned of m1: the end of the playbook's output", '    | TASK [disk] ok', '    | PLAY RECAP m1 ok=3\\u001b[0m']);
    const json = await duffyCli('--json', 'audit', '--ledger', file, 'history', 'machine-m1');
    expect(JSON.parse(json.lines[1]).data.run).toEqual({ action: 'provision', playbook: 'provision.yml', exitCode: 0, durationMs: 900, timedOut: false });
    const full = await duffyCli('--json', 'audit', '--ledger', file, 'history', 'machine-m1', '--verbose');
    expect(JSON.parse(full.lines[1]).data.run.tail).toBe(run.tail);
  });
});

describe('history details', () => {
  const event = (type: string, data: Record<string, unknown>) => ({ position: 1n, stream: 'x', revision: 0n, id: 'i', type, data, metadata: {} }) as unknown as RecordedEvent;

  it("say what a restore undid and what a checkpoint signed (both were blank in `history restores` and `history audit-checkpoints`)", () => {
    const restored = event('LedgerRestored', { sharedUpTo: '86', sessionIdsUpTo: 5, lostSessions: 2, machines: ['m1', 'm2'], backup: '/b', replacedKeptIn: '/r', at: '2026-12-03T02:33:37.245Z' });
    expect(detailOf(restored)).toBe('after position 86: 2 session(s) undone, ids to 5 kept, 2 machine(s) out');
    expect(detailOf(event('CheckpointPublished', { size: 52, lastPosition: '52', rootHash: '63f71b159d1c87ef167cb5e10cb1ba47', time: '2026-11-29T20:08:22.076Z' }))).toBe('52 events, root 63f71b159d1c87ef');
  });
});
