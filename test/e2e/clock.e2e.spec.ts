import { replay } from '../../src/audit/audit.js';
import { checkPublished } from '../../src/audit/checkpoint.js';
import { Catalog } from '../../src/application/catalog.js';
import { CheckpointService } from '../../src/audit/checkpoint.service.js';
import { type Running, ledgerEvents, newTenant, startDuffy } from '../support/server.js';
import { clockSetBack, setClockBack } from '../support/clock.js';
import { LedgerDigest } from '../../src/audit/digest.js';
import { run } from '../../src/cli/main.js';
import { verifyLedger } from '../../src/cli/audit.js';
import { ledgerFile } from '../support/server.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const V1 = '/api/v1';

describe('the host clock stepped back after a signed checkpoint', () => {
  let duffy: Running;
  afterAll(() => duffy?.close());

  it('leaves an honest ledger that plain verify passes: what Duffy writes never claims a time before a checkpoint it signed', async () => {
    duffy = await startDuffy();
    const ci = await newTenant(duffy, 'ci-clock');
    expect((await ci.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).status).toBe(201);
    await duffy.app.get(CheckpointService).publish();
    await clockSetBack(5 * 60_000, async () => {
      const s = await ci.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] });
      expect(s.status).toBe(201);
      expect((await ci.put(`${V1}/sessions/${s.body.session.id}`, { active: false })).status).toBe(200);
    });
    const events = await ledgerEvents(duffy);
    expect(replay(events, duffy.app.get(Catalog).defaults)).toEqual([]);
    const published = checkPublished(LedgerDigest.of(events));
    expect(published.checked).toBe(1);
    // Before: every event of the next five minutes was reported back-dated (TAMPERED).
    expect(published.problems).toEqual([]);
  });
});

describe('the host clock stepped back a day under a running Duffy', () => {
  let duffy: Running;
  afterAll(() => duffy?.close());

  it('goes on from where it was: a lease starts when its session does and lasts its lifetime, an extension is capped from there, a release comes after its hold', async () => {
    duffy = await startDuffy();
    const ci = await newTenant(duffy, 'ci-step');
    const lifetime = duffy.app.get(Catalog).defaults.sessionLifetime * 1000;
    const first = (await ci.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session;
    await duffy.app.get(CheckpointService).publish();
    await clockSetBack(24 * 3600_000, async () => {
      const s = await ci.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] });
      expect(s.status).toBe(201);
      const { created_at: created, expires_at: expires } = s.body.session as { created_at: string; expires_at: string };
      expect(Date.parse(created)).toBeGreaterThanOrEqual(Date.parse(first.created_at));
      // Before: created a day ahead (pinned to the checkpoint), expiring from the host's clock, a day before it began.
      expect(Date.parse(expires) - Date.parse(created)).toBe(lifetime);
      const extended = await ci.put(`${V1}/sessions/${s.body.session.id}`, { expires_at: '+30d' });
      expect(Date.parse(extended.body.session.expires_at) - Date.parse(created)).toBeLessThanOrEqual(duffy.app.get(Catalog).defaults.sessionLifetimeMax * 1000);
      expect((await ci.put(`${V1}/sessions/${s.body.session.id}`, { active: false })).status).toBe(200);
      const ended = (await ci.get(`${V1}/sessions/${s.body.session.id}`)).body.session as { retired_at: string };
      expect(Date.parse(ended.retired_at)).toBeGreaterThanOrEqual(Date.parse(created));
    });
    const events = await ledgerEvents(duffy);
    expect(replay(events, duffy.app.get(Catalog).defaults)).toEqual([]);
    expect(checkPublished(LedgerDigest.of(events)).problems).toEqual([]);
    const times = events.map((e) => Date.parse(String(e.metadata.at)));
    expect(times).toEqual([...times].sort((a, b) => a - b));
  }, 60_000);
});

describe('the host clock stepped back while a request waits in the queue', () => {
  let duffy: Running;
  afterAll(() => duffy?.close());

  it('takes the request out of the queue when its caller is answered at the end of its wait, so it is never served to nobody', async () => {
    duffy = await startDuffy();
    const holder = await newTenant(duffy, 'holder');
    const waiter = await newTenant(duffy, 'waiter');
    const held = await holder.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 2 }] });
    expect(held.status).toBe(201);
    const asked = waiter.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 1 }], wait: 1 });
    await new Promise((r) => setTimeout(r, 300));
    expect((await duffy.admin.get(`${V1}/queue`)).body.queue).toHaveLength(1);
    // NTP steps the clock back a day while the request waits: its `until` is a day ahead of the clock now.
    const restore = setClockBack(24 * 3600_000);
    try {
      const answer = await asked;
      expect(answer.status).toBe(422);
      // The machines free up: the request its caller was refused must not be served (nobody would give them back).
      expect((await holder.put(`${V1}/sessions/${held.body.session.id}`, { active: false })).status).toBe(200);
      await new Promise((r) => setTimeout(r, 2_000));
      expect((await duffy.admin.get(`${V1}/queue`)).body.queue).toEqual([]);
      const mine = (await waiter.get(`${V1}/sessions`)).body.sessions;
      expect(mine.filter((s: { active: boolean }) => s.active)).toEqual([]);
    } finally {
      restore();
    }
  }, 60_000);
});

describe('the host clock stepped back, then Duffy restarted before it signed a checkpoint', () => {
  let duffy: Running | undefined;
  afterAll(() => duffy?.close());

  it('goes on from the last time its ledger holds (within the hour a clock may step): a session started before the restart ends after it began', async () => {
    duffy = await startDuffy();
    const dataDir = duffy.dataDir;
    const made = await duffy.admin.post(`${V1}/tenants`, { name: 'ci-restart', ssh_key: 'ssh-ed25519 AAAAC3Nza ci-restart@ci' });
    const key = made.body.tenant.api_key as string;
    const ci = duffy.client('ci-restart', key);
    const first = (await ci.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session as { id: number; created_at: string };
    await duffy.close();
    duffy = undefined;
    // NTP steps the clock back 30 minutes at boot (a VM restored from a snapshot); no checkpoint was signed since the session began.
    await clockSetBack(30 * 60_000, async () => {
      duffy = await startDuffy({ dataDir });
      const again = duffy.client('ci-restart', key);
      expect((await again.put(`${V1}/sessions/${first.id}`, { active: false })).status).toBe(200);
      const ended = (await again.get(`${V1}/sessions/${first.id}`)).body.session as { retired_at: string };
      // Before: released 30 minutes before it was created (a hold of negative length, a lease that ran 30 minutes longer).
      expect(Date.parse(ended.retired_at)).toBeGreaterThanOrEqual(Date.parse(first.created_at));
      const next = (await again.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session as { created_at: string };
      expect(Date.parse(next.created_at)).toBeGreaterThanOrEqual(Date.parse(ended.retired_at));
    });
    const times = (await ledgerEvents(duffy!)).map((e) => Date.parse(String(e.metadata.at)));
    expect(times).toEqual([...times].sort((a, b) => a - b));
  }, 60_000);
});

describe('the host clock stepped back a day: what the admins read', () => {
  let duffy: Running;
  afterAll(() => duffy?.close());

  it('counts machine time and queue places by the ledger clock, as the fair queue does: /stats/fairness and a session\'s queue position agree with GET /queue', async () => {
    duffy = await startDuffy();
    const heavy = await newTenant(duffy, 'heavy');
    const light = await newTenant(duffy, 'light');
    const held = await heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 2 }] });
    expect(held.status).toBe(201);
    await new Promise((r) => setTimeout(r, 2_500));
    const hours = async () => ((await duffy.admin.get(`${V1}/stats/fairness`)).body.tenants as { tenant: string; machine_hours: { '1h': number } }[]).find((t) => t.tenant === 'heavy')!.machine_hours['1h'];
    const before = await hours();
    expect(before).toBeGreaterThan(0);
    await clockSetBack(24 * 3600_000, async () => {
      // Before: 0 (every hold dated a day after the host's clock), while the fair queue weighed the real figure.
      expect(await hours()).toBeGreaterThanOrEqual(before);
      const first = heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 1 }], wait: 5 });
      await new Promise((r) => setTimeout(r, 200));
      const second = light.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 1 }], wait: 5 });
      await new Promise((r) => setTimeout(r, 300));
      const queue = (await duffy.admin.get(`${V1}/queue`)).body.queue as { session: number; position: number; tenant: string }[];
      expect(queue.map((q) => q.tenant)).toEqual(['light', 'heavy']);
      for (const q of queue) {
        // Before: light's own session said position 2 (machine time counted from the host's clock: a tie, so first come).
        expect((await duffy.admin.get(`${V1}/sessions/${q.session}`)).body.session.data.queue.position).toBe(q.position);
      }
      expect((await first).status).toBe(422);
      expect((await second).status).toBe(422);
    });
  }, 60_000);
});

describe('the host clock stepped back, then an operator runs duffy restore and duffy admin-key', () => {
  it('what they write offline is dated no earlier than the ledger they write to: plain verify passes the restored ledger', async () => {
    const dut = async (...args: string[]) => {
      const code = await run(['node', 'duffy', ...args], () => undefined);
      process.exitCode = 0;
      return code;
    };
    let duffy = await startDuffy();
    const { dataDir } = duffy;
    const ci = await newTenant(duffy, 'ci-offline');
    expect((await ci.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).status).toBe(201);
    await duffy.app.get(CheckpointService).publish();
    await duffy.close();
    const backup = join(mkdtempSync(join(tmpdir(), 'duffy-clock-backup-')), 'monday');
    expect(await dut('backup', backup, '--data-dir', dataDir)).toBe(0);
    // Hours the restore undoes: a machine taken, a checkpoint signed over it.
    duffy = await startDuffy({ dataDir });
    const later = await newTenant(duffy, 'ci-later');
    expect((await later.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).status).toBe(201);
    await duffy.app.get(CheckpointService).publish();
    await duffy.close();
    // NTP steps the clock back 5 minutes: before, both commands dated their events by it, under the backup's signed checkpoint.
    await clockSetBack(5 * 60_000, async () => {
      expect(await dut('restore', backup, '--data-dir', dataDir)).toBe(0);
      expect(await dut('admin-key', 'admin', '--data-dir', dataDir)).toBe(0);
    });
    const v = await verifyLedger(join(dataDir, 'ledger.sqlite'));
    expect(v.problems).toEqual([]);
    const events = await ledgerFile(join(dataDir, 'ledger.sqlite'));
    expect(events.map((e) => e.type).slice(-4)).toEqual(['LedgerRestored', 'MachineServiceChanged', 'TenantUpdated', 'ApiKeyAssigned']);
  }, 60_000);
});
