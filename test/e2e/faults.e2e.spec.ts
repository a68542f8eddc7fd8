import { afterAll, afterEach, describe, expect, it, jest } from '@jest/globals';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, truncateSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Logger } from '@nestjs/common';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeScaleInventory } from '../../bench/inventory.js';
import { DEMO_CONFIG } from '../../src/config/config.js';
import { Ledger } from '../../src/application/ledger.service.js';
import { Provisioner } from '../../src/application/provisioner.service.js';
import { ANSIBLE_DIR, AnsibleRunner, type DuffyIn } from '../../src/adapters/ansible-runner.js';
import { ansibleConfig, inject } from '../support/ansible.js';
import { ADMIN_KEY, Client, type Reply, type Running, basic, ledgerEvents, machine, newTenant, startDuffy, until } from '../support/server.js';
import { setTimeout as sleep } from 'node:timers/promises';

// Real playbooks and a real second process: seconds each.
jest.setTimeout(300_000);
const V1 = '/api/v1';
const MAIN = fileURLToPath(new URL('../../dist/src/main.js', import.meta.url));
const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));

const world = (duffy: Running) => duffy.app.get(Ledger).world;

let duffy: Running | undefined;
afterEach(async () => {
  await duffy?.close();
  duffy = undefined;
});

describe('fault: Ansible missing, then back (demo inventory)', () => {
  const path = process.env.PATH ?? '';
  afterEach(() => {
    process.env.PATH = path;
  });

  it('answers 503 naming the cause, blames no machine, and every machine serves once Ansible is back', async () => {
    duffy = await startDuffy({ configFile: DEMO_CONFIG });
    const alice = await newTenant(duffy, 'alice');
    // Every directory that holds ansible-playbook leaves the PATH the runner sees.
    process.env.PATH = path.split(delimiter).filter((d) => d && !existsSync(join(d, 'ansible-playbook'))).join(delimiter);

    // A whole pool (two ready machines to contextualize, one unused to provision), and most of another, whose
    // fill level then asks for a provision in the background.
    for (const spec of [{ pool: 'metal-arm-aarch64', quantity: 3 }, { pool: 'metal-intel-x86_64', quantity: 3 }]) {
      const r = await alice.post(`${V1}/sessions`, { nodes_specs: [spec] });
      expect([r.status, r.body.detail]).toEqual([503, "can't provision nodes: ansible-playbook not found on PATH"]);
      expect(r.headers.get('retry-after')).toBe('60');
    }
    // The machines go back without a release playbook (none was ever run on them), and nothing counts against them.
    await until(duffy, () => [...world(duffy!).machines.values()].every((m) => m.sessionId === null && (m.state === 'ready' || m.state === 'unused') && m.job === null));
    const health = await duffy.admin.get('/health');
    expect([health.status, health.body.error?.ansible?.status]).toEqual([503, 'down']);
    expect(health.body.error.ansible.message).toMatch(/^ansible-playbook not found on PATH/);
    // Alive all the same: a liveness probe must not restart Duffy over what a restart does not mend.
    const live = await duffy.admin.get('/health/live');
    expect([live.status, live.body]).toEqual([200, { status: 'ok' }]);
    let events = await ledgerEvents(duffy);
    // At least one per request (a run claimed after its session ended records nothing: the release came first).
    expect(events.filter((e) => e.type === 'EnvironmentFault').length).toBeGreaterThanOrEqual(2);
    expect(events.filter((e) => e.type === 'ProvisioningFailed' || e.type === 'MachineQuarantined')).toEqual([]);
    expect(events.filter((e) => e.type === 'PlaybookStarted' && e.data.action === 'release')).toEqual([]);
    for (const m of world(duffy).machines.values()) expect([m.hostname, m.failures]).toEqual([m.hostname, 0]);

    // Ansible is back: both pools, every machine the fault touched among them, are handed over whole.
    process.env.PATH = path;
    // The first run that works ends the fault; the fill level's deferred provision then runs too, so wait for
    // the farm to be idle before asking for the whole intel pool.
    const arm = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-arm-aarch64', quantity: 3 }] });
    expect([arm.status, arm.body.detail]).toEqual([201, undefined]);
    await until(duffy, () => [...world(duffy!).machines.values()].every((m) => m.job === null && m.state !== 'provisioning'));
    const intel = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 6 }] });
    expect([intel.status, intel.body.detail]).toEqual([201, undefined]);
    const hosts = [arm, intel].flatMap((r) => r.body.session.nodes.map((n: { hostname: string; state: string }) => `${n.hostname} ${n.state}`));
    expect(hosts.sort()).toEqual([...world(duffy).machines.values()].filter((m) => /^metal-(arm|intel)/.test(m.hostname)).map((m) => `${m.hostname} deployed`).sort());
    expect((await duffy.admin.get('/health')).body.details?.ansible?.status).toBe('up');
    events = await ledgerEvents(duffy);
    expect(events.filter((e) => e.type === 'ProvisioningFailed' || e.type === 'MachineQuarantined')).toEqual([]);
  });
});

describe('fault: a session that ends before its machine was ever provisioned', () => {
  it('returns the machine unused at once, with no release playbook, and it serves the next request', async () => {
    // Every runner slot busy, so the request's provision cannot start before its session ends (the job is cancelled
    // during hand-over): its machine was never provisioned. Three pools whose fill-level provision hangs take the
    // three runs other work may have, and bob's hand-over that hangs takes the one kept for hand-overs.
    const hanging = [1, 2, 3].map((i) => ({ name: `busy${i}`, 'fill-level': 1, contextualize: false, 'playbook-timeout': 10, 'quarantine-after': 1, 'health-check-interval': 3600 }));
    const held = { name: 'held', contextualize: false, 'playbook-timeout': 10, 'quarantine-after': 1, 'health-check-interval': 3600 };
    const busy = ['busy-1.test', 'busy-2.test', 'busy-3.test', 'held-1.test'];
    const config = ansibleConfig(
      [...hanging, held, { name: 'p', 'release-policy': 'rebuild', 'quarantine-after': 1 }],
      [...hanging.map((p, i) => ({ hostname: `busy-${i + 1}.test`, pool: p.name })), { hostname: 'held-1.test', pool: 'held' }, { hostname: 'never-1.test', pool: 'p' }],
    );
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-faults-'));
    for (const host of busy) inject(dataDir, host, 'hang', 'provision');
    duffy = await startDuffy({ configFile: config, dataDir });
    const bob = await newTenant(duffy, 'bob');
    const bobs = bob.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'held', quantity: 1 }] });
    await until(duffy, () => busy.every((host) => machine(duffy!, host).job?.action === 'provision'), 30_000);
    const alice = await newTenant(duffy, 'alice');

    const pending = alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'p', quantity: 1 }] });
    await until(duffy, () => machine(duffy!, 'never-1.test').sessionId !== null && world(duffy!).sessions.get(machine(duffy!, 'never-1.test').sessionId!)?.status === 'active', 10_000);
    const sessionId = machine(duffy, 'never-1.test').sessionId!;
    expect((await alice.put(`${V1}/sessions/${sessionId}`, { active: false })).status).toBe(200);
    expect((await pending).status).toBe(409);
    // Back in the pool long before any runner slot is free (the hung runs last 10 s).
    await until(duffy, () => machine(duffy!, 'never-1.test').state === 'unused', 8_000);
    const mine = (await ledgerEvents(duffy)).filter((e) => e.stream === 'machine-never-1.test');
    expect(mine.map((e) => e.type)).toEqual(['MachineRegistered', 'MachineReserved', 'MachineReleased', 'MachineRecycled']);
    expect(mine[3].data).toMatchObject({ state: 'unused', untouched: true });
    expect(existsSync(join(dataDir, 'machines', 'never-1.test'))).toBe(false);

    // Once the slots are free it is provisioned and handed over like any machine.
    await until(duffy, () => busy.every((host) => machine(duffy!, host).state === 'failed'), 60_000);
    expect((await bobs).status).toBe(503);
    const again = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'p', quantity: 1 }] });
    expect([again.status, again.body.session?.nodes?.[0]?.hostname]).toEqual([201, 'never-1.test']);
  });
});

describe('fault: a run of several machines that hangs', () => {
  it('blames only the machine that hangs when run alone; the other one serves', async () => {
    // The fill level provisions both in one run; one of them hangs, so the whole run times out. 30 s: the healthy
    // machine's run alone must finish within it on a loaded machine (8 s, then 15 s, each timed out in CI beside other suites).
    const config = ansibleConfig([{ name: 'b', 'fill-level': 2, contextualize: false, 'playbook-timeout': 30, 'quarantine-after': 1, 'health-check-interval': 3600 }], [
      { hostname: 'fine-1.test', pool: 'b' },
      { hostname: 'stuck-1.test', pool: 'b' },
    ]);
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-faults-'));
    inject(dataDir, 'stuck-1.test', 'hang', 'provision');
    duffy = await startDuffy({ configFile: config, dataDir });
    await until(duffy, () => machine(duffy!, 'stuck-1.test').state === 'failed' && machine(duffy!, 'fine-1.test').state === 'ready', 180_000);
    expect([machine(duffy, 'fine-1.test').failures, machine(duffy, 'fine-1.test').quarantines]).toEqual([0, 0]);
    const events = await ledgerEvents(duffy);
    const fine = events.filter((e) => e.stream === 'machine-fine-1.test').map((e) => e.type);
    expect(fine).toEqual(['MachineRegistered', 'PlaybookStarted', 'PlaybookTimedOutInBatch', 'PlaybookStarted', 'MachineProvisioned']);
    const stuck = events.filter((e) => e.stream === 'machine-stuck-1.test').map((e) => e.type);
    expect(stuck.slice(-3)).toEqual(['PlaybookStarted', 'ProvisioningFailed', 'MachineQuarantined']);
  });
});

describe('fault: a run of several machines where one host is unreachable (Ansible stops the play for every node)', () => {
  it('blames only the unreachable machine, found when each runs again alone; the other one serves', async () => {
    // A host gone from the network (TEST-NET-1 answers nothing), reached the way the drivers' delegated tasks reach one.
    const playbook = join(mkdtempSync(join(tmpdir(), 'duffy-unreachable-')), 'provision.yml');
    writeFileSync(
      playbook,
      `- hosts: localhost
  gather_facts: false
  tasks:
    - name: reach the host that is gone
      ansible.builtin.ping:
      delegate_to: 192.0.2.1
      vars: { ansible_connection: ssh, ansible_user: nobody, ansible_ssh_common_args: '-o ConnectTimeout=2 -o BatchMode=yes' }
      when: "'gone-1.test' in (duffy_in.nodes | map(attribute='hostname'))"
- ansible.builtin.import_playbook: ${join(ANSIBLE_DIR, 'playbooks', 'provision.yml')}
`,
    );
    const config = ansibleConfig([{ name: 'b', 'fill-level': 2, contextualize: false, 'quarantine-after': 1, 'health-check-interval': 3600, playbooks: { provision: playbook } }], [
      { hostname: 'fine-1.test', pool: 'b' },
      { hostname: 'gone-1.test', pool: 'b' },
    ]);
    const warned: string[] = [];
    jest.spyOn(Logger.prototype, 'warn').mockImplementation((message: unknown) => void warned.push(String(message)));
    duffy = await startDuffy({ configFile: config });
    await until(duffy, () => machine(duffy!, 'gone-1.test').state === 'failed' && machine(duffy!, 'fine-1.test').state === 'ready', 180_000);
    jest.restoreAllMocks();
    expect([machine(duffy, 'fine-1.test').failures, machine(duffy, 'fine-1.test').quarantines]).toEqual([0, 0]);
    // The log's warning names the machine that failed and why, as the ledger does.
    expect(warned).toContainEqual(expect.stringMatching(/^provision b \[gone-1\.test\]: exit 4 in \d+ ms; failed gone-1\.test: playbook failed with exit code 4 \(a host unreachable\): task "reach the host that is gone" could not reach its host: Data could not be sent to remote host "192\.0\.2\.1"\. .*$/));
    // And that it was taken out of service, which /metrics shows only as a level.
    expect(warned).toContainEqual(expect.stringMatching(/^quarantined gone-1\.test \(pool b\): 1 failures in a row, last: provision: playbook failed/));
    const events = await ledgerEvents(duffy);
    const fine = events.filter((e) => e.stream === 'machine-fine-1.test').map((e) => e.type);
    expect(fine).toEqual(['MachineRegistered', 'PlaybookStarted', 'PlaybookFailedInBatch', 'PlaybookStarted', 'MachineProvisioned']);
    const gone = events.filter((e) => e.stream === 'machine-gone-1.test').map((e) => e.type);
    expect(gone.slice(-3)).toEqual(['PlaybookStarted', 'ProvisioningFailed', 'MachineQuarantined']);
  });
});

describe('fault: one pool\'s release fails on Duffy\'s side, every time', () => {
  it.each([
    // Ansible cannot parse it (exit 4, no play report): an operator's typo in the pool's override.
    ['a playbook file Ansible cannot parse', '- hosts: localhost\n  tasks: [\n', (file: string) => file],
    // Its controller is killed each time, as the OOM killer takes the run that grows (one machine's huge collect).
    ['a run whose ansible-playbook is killed', '- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.shell: kill -KILL -- -$(ps -o pgid= -p $$ | tr -d " ")\n      args: { executable: /bin/bash }\n', () => 'broken-1.test'],
  ])('%s holds back only that work: the other pools\' releases run at once, and it runs again once mended', async (_name, content, subject) => {
    // broken-1 has the lower id, so it comes first in every pass (it was every probe, and the good pool waited).
    const broken = join(mkdtempSync(join(tmpdir(), 'duffy-playbook-')), 'release.yml');
    writeFileSync(broken, content);
    const config = ansibleConfig(
      [
        { name: 'broken', contextualize: false, 'release-policy': 'rebuild', playbooks: { release: broken }, 'quarantine-after': 1 },
        { name: 'good', contextualize: false, 'release-policy': 'rebuild', 'quarantine-after': 1 },
      ],
      [
        { hostname: 'broken-1.test', pool: 'broken', state: 'ready' },
        { hostname: 'good-1.test', pool: 'good', state: 'ready' },
      ],
    );
    duffy = await startDuffy({ configFile: config });
    const alice = await newTenant(duffy, 'alice');
    const session = async (pool: string) => {
      const r = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool, quantity: 1 }] });
      expect(r.status).toBe(201);
      return r.body.session.id as number;
    };
    const [b, g] = [await session('broken'), await session('good')];
    expect((await alice.put(`${V1}/sessions/${b}`, { active: false })).status).toBe(200);
    await until(duffy, () => duffy!.app.get(Provisioner).scopedFaults.length > 0, 30_000);
    expect((await ledgerEvents(duffy)).filter((e) => e.type === 'EnvironmentFault').map((e) => e.stream)).toEqual(['machine-broken-1.test']);

    // The other pool's release is not the broken one's probe: it runs at once, not minutes later.
    expect((await alice.put(`${V1}/sessions/${g}`, { active: false })).status).toBe(200);
    // Seconds, not the minutes it waited behind the broken pool's probes (25 s: a real release on a loaded 2-core VM).
    await until(duffy, () => machine(duffy!, 'good-1.test').state === 'ready', 25_000);
    // /health names what fails, and stays up (one pool's file must not take Duffy out of a load balancer); the machine is not blamed.
    const health = await duffy.admin.get('/health');
    expect([health.status, health.body.details?.ansible?.broken]).toEqual([200, [expect.stringContaining(subject(broken))]]);
    expect([machine(duffy, 'broken-1.test').failures, machine(duffy, 'broken-1.test').state]).toEqual([0, 'deprovisioning']);

    // Mended: its next probe releases the machine, and /health is up again. The back-off doubles with each failed probe
    // (5, 10, 20, 40 s): on a slow VM more of them fail before the mend (CI timed out waiting 30 s).
    writeFileSync(broken, `- ansible.builtin.import_playbook: ${join(ANSIBLE_DIR, 'playbooks', 'release.yml')}\n`);
    await until(duffy, () => machine(duffy!, 'broken-1.test').state === 'ready', 120_000);
    const mended = await duffy.admin.get('/health');
    expect([mended.status, mended.body.details?.ansible?.broken]).toEqual([200, undefined]);
  });
});

describe('fault: a pool\'s contextualize playbook is broken, so every hand-over fails', () => {
  it('is named on /health after the failed hand-over\'s machine went back to the pool, which stays up (one pool\'s file must not take Duffy out of a load balancer), until the file is mended', async () => {
    const broken = join(mkdtempSync(join(tmpdir(), 'duffy-playbook-')), 'contextualize.yml');
    writeFileSync(broken, '- hosts: [unclosed\n');
    const config = ansibleConfig([{ name: 'ctx', contextualize: true, 'release-policy': 'reuse', playbooks: { contextualize: broken } }], [{ hostname: 'ctx-1.test', pool: 'ctx', state: 'ready' }]);
    duffy = await startDuffy({ configFile: config });
    const alice = await newTenant(duffy, 'alice');
    const r = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'ctx', quantity: 1 }] });
    expect([r.status, r.body.detail]).toEqual([503, expect.stringContaining('could not load the playbook')]);
    // The machine is back in the pool, no work is due: the broken file still is, and /health says so, naming it.
    await until(duffy, () => machine(duffy!, 'ctx-1.test').sessionId === null, 30_000);
    for (let i = 0; i < 3; i++) {
      const health = await duffy.admin.get('/health');
      expect([health.status, health.body.details?.ansible?.broken]).toEqual([200, [expect.stringContaining(broken)]]);
      await sleep(1_000);
    }
    writeFileSync(broken, `- ansible.builtin.import_playbook: ${join(ANSIBLE_DIR, 'playbooks', 'contextualize.yml')}\n`);
    let up = await duffy.admin.get('/health');
    for (let i = 0; i < 50 && up.body.details?.ansible?.broken; i++) up = await sleep(200).then(() => duffy!.admin.get('/health'));
    expect([up.status, up.body.details?.ansible?.broken]).toEqual([200, undefined]);
    // Back in the pool is not yet ready: its release may still be under way (it was, on a slower VM: 422, 0 available).
    await until(duffy, () => machine(duffy!, 'ctx-1.test').state === 'ready' && machine(duffy!, 'ctx-1.test').job === null, 30_000);
    expect((await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'ctx', quantity: 1 }] })).status).toBe(201);
  });
});

describe('fault: the health check of a quarantined machine is killed every time', () => {
  it('names the machine on /health, and holds nothing back once an admin takes the machine out of service', async () => {
    const garbage = fileURLToPath(new URL('../fixtures/playbooks/garbage.yml', import.meta.url));
    const killer = join(mkdtempSync(join(tmpdir(), 'duffy-playbook-')), 'health-check.yml');
    writeFileSync(killer, '- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.shell: kill -KILL -- -$(ps -o pgid= -p $$ | tr -d " ")\n      args: { executable: /bin/bash }\n');
    // A broken release quarantines the machine; its health check (every second) is then killed each time.
    const config = ansibleConfig(
      [{ name: 'q', contextualize: false, 'release-policy': 'rebuild', playbooks: { release: garbage, health_check: killer }, 'quarantine-after': 1, 'health-check-interval': 1 }],
      [{ hostname: 'sick-1.test', pool: 'q', state: 'ready' }],
    );
    duffy = await startDuffy({ configFile: config });
    const alice = await newTenant(duffy, 'alice');
    const s = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'q', quantity: 1 }] });
    expect((await alice.put(`${V1}/sessions/${s.body.session.id}`, { active: false })).status).toBe(200);
    await until(duffy, () => machine(duffy!, 'sick-1.test').quarantines === 1, 60_000);
    await until(duffy, () => duffy!.app.get(Provisioner).scopedFaults.length > 0, 30_000);
    const named = await duffy.admin.get('/health');
    expect([named.status, named.body.details?.ansible?.broken]).toEqual([200, [expect.stringMatching(/^sick-1\.test: ansible-playbook was killed by SIGKILL/)]]);

    // Out of service, it gets no health check: nothing is held back, and /health says so.
    const id = world(duffy).machineIdsByHostname.get('sick-1.test');
    expect((await duffy.admin.put(`${V1}/nodes/${id}`, { maintenance: true, reason: 'its health check dies' })).status).toBe(200);
    let up = await duffy.admin.get('/health');
    for (let i = 0; i < 50 && up.body.details?.ansible?.broken; i++) up = await sleep(200).then(() => duffy!.admin.get('/health'));
    expect([up.status, up.body.details?.ansible?.broken]).toEqual([200, undefined]);
  });
});

describe('fault: a quarantined machine that was never provisioned', () => {
  it('passes its health check (an empty disk is a healthy one) and returns to service', async () => {
    // A broken release playbook quarantines a machine registered `ready` whose directory was never created.
    const garbage = fileURLToPath(new URL('../fixtures/playbooks/garbage.yml', import.meta.url));
    const config = ansibleConfig(
      [{ name: 'q', contextualize: false, 'release-policy': 'rebuild', playbooks: { release: garbage }, 'quarantine-after': 1, 'health-check-interval': 1 }],
      [{ hostname: 'bare-1.test', pool: 'q', state: 'ready' }],
    );
    duffy = await startDuffy({ configFile: config });
    const alice = await newTenant(duffy, 'alice');
    const s = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'q', quantity: 1 }] });
    expect(s.status).toBe(201);
    expect((await alice.put(`${V1}/sessions/${s.body.session.id}`, { active: false })).status).toBe(200);
    await until(duffy, () => machine(duffy!, 'bare-1.test').quarantines === 1, 60_000);
    await until(duffy, () => machine(duffy!, 'bare-1.test').state === 'unused', 60_000);
    const types = (await ledgerEvents(duffy)).filter((e) => e.stream === 'machine-bare-1.test').map((e) => e.type);
    expect(types.slice(-2)).toEqual(['PlaybookStarted', 'MachineReturnedToService']);
  });
});

/**
 * A tmpfs we can fill; undefined (and the test skipped) where mounting is not allowed. Named for this process, so a
 * later run unmounts what a killed one left (a killed run cannot clean up), and never what a running one uses.
 */
function mountTmpfs(): string | undefined {
  unmountLeftovers();
  const dir = mkdtempSync(join(tmpdir(), `duffy-full-${process.pid}-`));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', dir]);
  if (r.status === 0) return dir;
  rmSync(dir, { recursive: true, force: true });
  return undefined;
}
/**
 * Unmounts and removes the tmpfs mounts of test processes that are gone, wherever their run's temporary directory was
 * (scripts/test.sh gives each run its own).
 */
function unmountLeftovers(): void {
  const mounts = existsSync('/proc/mounts') ? readFileSync('/proc/mounts', 'utf8').split('\n').map((line) => line.split(' ')[1] ?? '') : [];
  for (const dir of mounts) {
    const owner = /\/duffy-full-(\d+)-[^/]*$/.exec(dir)?.[1];
    if (!owner || isAlive(Number(owner))) continue;
    spawnSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  }
}
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
/** Fills the disk under `file` to the last byte. */
function fillUp(file: string): void {
  const fd = openSync(file, 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch {
    try {
      for (;;) writeSync(fd, Buffer.alloc(512, 1));
    } catch {
      /* full */
    }
  } finally {
    closeSync(fd);
  }
}
const fullDisk = mountTmpfs();
if (!fullDisk) console.log('SKIPPED: full-disk fault test: `mount -t tmpfs` is not allowed here (it needs root)');
// Its case unmounts it; this is for a run that filters that case out (`-t`).
afterAll(() => {
  if (!fullDisk || !existsSync(fullDisk)) return;
  spawnSync('umount', ['-l', fullDisk]);
  rmSync(fullDisk, { recursive: true, force: true });
});

describe('fault: the data directory\'s disk fills up', () => {
  (fullDisk ? it : it.skip)('answers 503 with Retry-After and a clear reason, /health says the ledger is down while the disk is full (before a write fails, and until it has room again), nothing acknowledged is lost', async () => {
    const dataDir = join(fullDisk!, 'data');
    const filler = join(fullDisk!, 'filler');
    try {
      duffy = await startDuffy({ dataDir });
      const acknowledged: string[] = [];
      for (let i = 0; i < 3; i++) if ((await duffy.admin.post(`${V1}/tenants`, { name: `before-${i}`, ssh_key: 'ssh-ed25519 AAAA x' })).status === 201) acknowledged.push(`before-${i}`);
      expect(acknowledged).toHaveLength(3);

      fillUp(filler);
      // Full while nothing was written: down before the next write fails.
      const idle = await duffy.admin.get('/health');
      expect([idle.status, idle.body.error?.ledger?.message]).toEqual([503, expect.stringMatching(/^the disk under .* is full \(\d+ bytes free\): the next write will fail$/)]);
      // The ledger may still have room in pages it already holds: write until it has none.
      let refused: { status: number; body: any; headers: Headers } | undefined;
      for (let i = 0; i < 400 && !refused; i++) {
        const r = await duffy.admin.post(`${V1}/tenants`, { name: `during-${i}`, ssh_key: `ssh-ed25519 ${'A'.repeat(2000)} x` });
        if (r.status === 201) acknowledged.push(`during-${i}`);
        else refused = r;
      }
      expect(refused && [refused.status, refused.body.detail]).toEqual([503, 'Duffy cannot write its data: the disk is full (SQLITE_FULL); try again later']);
      expect(refused!.headers.get('retry-after')).toBe('60');
      const down = await duffy.admin.get('/health');
      expect([down.status, down.body.error?.ledger?.status]).toEqual([503, 'down']);
      expect(down.body.error.ledger.message).toMatch(/last write failed at .*full/);

      // Room again: the ledger is up before any write (a load balancer that waits for /health sends none), and
      // the next write succeeds.
      unlinkSync(filler);
      const mended = await duffy.admin.get('/health');
      expect([mended.body.details?.ledger?.status ?? mended.body.info?.ledger?.status, mended.body.details?.ledger?.recovering]).toEqual(['up', expect.stringMatching(/^last write failed at .*full.*bytes free again$/)]);
      const after = await duffy.admin.post(`${V1}/tenants`, { name: 'after', ssh_key: 'ssh-ed25519 AAAA x' });
      expect(after.status).toBe(201);
      acknowledged.push('after');
      // The read models write their refused batches again (every second) and catch up.
      let up = await duffy.admin.get('/health');
      for (let i = 0; i < 50 && up.status !== 200; i++) up = await sleep(100).then(() => duffy!.admin.get('/health'));
      expect([up.status, up.body.details?.ledger?.status, up.body.details?.readModels?.status]).toEqual([200, 'up', 'up']);
      expect((await duffy.admin.get(`${V1}/tenants`)).body.tenants.map((t: { name: string }) => t.name)).toEqual(expect.arrayContaining(acknowledged));

      // Every acknowledged write is in the ledger after a restart.
      await duffy.close();
      duffy = await startDuffy({ dataDir });
      const names = world(duffy).tenantIdsByName;
      expect(acknowledged.filter((n) => !names.has(n))).toEqual([]);
    } finally {
      await duffy?.close();
      duffy = undefined;
    }
  });
});

describe('fault: a backup onto a disk that fills up', () => {
  (fullDisk ? it : it.skip)('says so in one line, leaves nothing of the copy, and the same command works once there is room', async () => {
    const disk = mountTmpfs()!;
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-e2e-'));
    const filler = join(disk, 'filler');
    const target = join(disk, 'monday');
    const backup = () => spawnSync(process.execPath, [CLI, 'backup', target, '--data-dir', dataDir], { encoding: 'utf8', timeout: 60_000 });
    try {
      duffy = await startDuffy({ dataDir });
      await duffy.close();
      duffy = undefined;
      fillUp(filler);
      const refused = backup();
      expect([refused.status, refused.stderr.trim()]).toEqual([1, expect.stringMatching(new RegExp(`^duffy: the backup could not be written in ${target}: the disk is full \\(\\w+\\); nothing of it is left there, free space on its file system and run it again$`))]);
      expect(readdirSync(target)).toEqual([]);
      unlinkSync(filler);
      const made = backup();
      expect([made.status, made.stdout]).toEqual([0, expect.stringContaining('OK: ')]);
    } finally {
      spawnSync('umount', ['-l', disk]);
      rmSync(disk, { recursive: true, force: true });
    }
  });
});

describe('fault: a start on a disk that is full or nearly so', () => {
  (fullDisk ? it : it.skip)('stops with one line saying the disk is full and to free space, exit 1, not a stack (SQLite failing to grow its -shm file)', async () => {
    const disk = mountTmpfs()!;
    const dataDir = join(disk, 'data');
    const filler = join(disk, 'filler');
    try {
      duffy = await startDuffy({ dataDir });
      await duffy.close();
      duffy = undefined;
      fillUp(filler);
      const full = statSync(filler).size;
      for (const left of [0, 16 * 1024, 32 * 1024]) {
        truncateSync(filler, full - left);
        const r = spawnSync(process.execPath, [MAIN], { env: { ...process.env, DUFFY_DATA_DIR: dataDir, DUFFY_PORT: '0' }, encoding: 'utf8', timeout: 60_000 });
        const said = r.stderr.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('{'));
        expect([left, r.status, said]).toEqual([left, 1, [expect.stringMatching(/^duffy: failed to start: .*(disk is full|ENOSPC).*free space on its file system/)]]);
      }
    } finally {
      await duffy?.close();
      duffy = undefined;
      spawnSync('umount', ['-l', disk]);
      rmSync(disk, { recursive: true, force: true });
    }
  });
});

describe('fault: the data directory\'s file system is read-only (ext4 remounts so after I/O errors: errors=remount-ro)', () => {
  (fullDisk ? it : it.skip)('stops start-up with one line naming the directory and the cause, exit 1, not SQLite\'s "unable to open database file" and a stack', async () => {
    const disk = mountTmpfs()!;
    const dataDir = join(disk, 'data');
    try {
      duffy = await startDuffy({ dataDir });
      expect((await duffy.admin.post(`${V1}/tenants`, { name: 'before', ssh_key: 'ssh-ed25519 AAAA x' })).status).toBe(201);
      await duffy.close();
      duffy = undefined;
      // Linux refuses a requested read-only remount while files are open for writing, so the switch happens
      // between two runs here (ext4's own remount on errors does not ask: that one is a 503, like a full disk).
      expect(spawnSync('mount', ['-o', 'remount,ro', disk]).status).toBe(0);
      for (const dir of [dataDir, join(dataDir, 'new')]) {
        const r = spawnSync(process.execPath, [MAIN], { env: { ...process.env, DUFFY_DATA_DIR: dir, DUFFY_PORT: '0' }, encoding: 'utf8', timeout: 60_000 });
        expect([r.status, r.stderr.trim()]).toEqual([1, expect.stringMatching(new RegExp(`^duffy: failed to start: the data directory ${dir} cannot be (written|created) \\(EROFS: a read-only file system\\); [^\\n]*DUFFY_DATA_DIR$`))]);
      }
      expect(spawnSync('mount', ['-o', 'remount,rw', disk]).status).toBe(0);
      duffy = await startDuffy({ dataDir });
      expect(world(duffy).tenantIdsByName.has('before')).toBe(true);
    } finally {
      await duffy?.close();
      duffy = undefined;
      spawnSync('mount', ['-o', 'remount,rw', disk]);
      spawnSync('umount', ['-l', disk]);
      rmSync(disk, { recursive: true, force: true });
    }
  });
});

describe('fault: a data directory that cannot be made (under /proc)', () => {
  // Node's recursive mkdir took /proc's ENOENT for a missing parent and made /proc again, for ever at 100 % CPU. The
  // spawn's timeout kills one that spins: its status is then null, and the test fails instead of hanging.
  it('stops a start, and a restore, with one line naming the directory, exit 1', () => {
    const dir = '/proc/duffy-data';
    const started = spawnSync(process.execPath, [MAIN], { env: { ...process.env, DUFFY_DATA_DIR: dir, DUFFY_PORT: '0', DUFFY_ADMIN_KEY: ADMIN_KEY }, encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' });
    const cannot = `the data directory ${dir} cannot be created (ENOENT: its file system takes no new directory there); make its parent writable for this user, or set DUFFY_DATA_DIR`;
    expect([started.status, started.stderr.trim()]).toEqual([1, `duffy: failed to start: ${cannot}`]);
    const backup = mkdtempSync(join(tmpdir(), 'duffy-backup-'));
    writeFileSync(join(backup, 'ledger.sqlite'), '');
    const restored = spawnSync(process.execPath, [CLI, 'restore', backup, '--data-dir', dir], { env: { PATH: process.env.PATH, HOME: '/nonexistent' }, encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' });
    expect([restored.status, restored.stderr]).toEqual([1, `duffy: ${cannot}\n`]);
  });
});

describe('fault: the data directory\'s disk is full while a playbook runs', () => {
  (fullDisk ? it : it.skip)('is put down to Duffy, not to the machines: Ansible could not write its temporary files there', async () => {
    const disk = mountTmpfs()!;
    try {
      const dataDir = join(disk, 'data');
      // The machine's own "disk" (the local driver's directory) is elsewhere, as a real machine's is.
      mkdirSync(dataDir);
      symlinkSync(mkdtempSync(join(tmpdir(), 'duffy-machines-')), join(dataDir, 'machines'));
      // Room for the run's input, not for the modules Ansible writes beside it.
      const reserve = join(disk, 'reserve');
      writeFileSync(reserve, Buffer.alloc(16 * 1024, 1));
      fillUp(join(disk, 'filler'));
      unlinkSync(reserve);
      const input: DuffyIn = {
        action: 'health_check',
        pool: { name: 'p', type: 'baremetal', driver: 'local', arch: 'x86_64', platform: 'intel', vars: {} },
        session: null,
        nodes: [{ id: 1, hostname: 'full-1.test', ipaddr: null, data: {} }],
        data_dir: dataDir,
      };
      const r = await new AnsibleRunner().run(input, { timeoutMs: 120_000 });
      expect(r.nodes.get('full-1.test')).toMatchObject({ ok: false });
      expect(r.fault).toMatchObject({ spawned: true, reason: expect.stringMatching(/^the disk under .*\/runs is full \(\d+ bytes free\)/) });
    } finally {
      spawnSync('umount', ['-l', disk]);
      rmSync(disk, { recursive: true, force: true });
    }
  });
});

/** The `sleep 3600` of the local driver's injected hang in a run under `dataDir` (its environment names the run's directory). */
function hangingSleep(dataDir: string): number | undefined {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8') === 'sleep\x003600\x00' && readFileSync(`/proc/${pid}/environ`, 'utf8').includes(dataDir)) return Number(pid);
    } catch {
      /* gone meanwhile */
    }
  }
  return undefined;
}

/**
 * A tenant's request in hand-over, its contextualize hanging, on a tmpfs data directory then filled until the ledger
 * refuses even a small write: `body` gets the caller's answer on its way and the hanging playbook's sleep (killed, the
 * run ends). The machine's own "disk" is elsewhere, as a real machine's is; so are the runs' files, whose removal at
 * the run's end would give the ledger room. The claim's deadline (playbook-timeout + 60 s) is past every wait here.
 */
async function handOverOnFullDisk(body: (hung: { disk: string; machines: string; answer: Promise<Reply>; sleeper: number }) => Promise<void>): Promise<void> {
  const disk = mountTmpfs()!;
  const machines = mkdtempSync(join(tmpdir(), 'duffy-machines-'));
  const runs = mkdtempSync(join(tmpdir(), 'duffy-runs-'));
  try {
    const dataDir = join(disk, 'data');
    mkdirSync(dataDir);
    symlinkSync(machines, join(dataDir, 'machines'));
    symlinkSync(runs, join(dataDir, 'runs'));
    const config = ansibleConfig([{ name: 'p', 'playbook-timeout': 900, 'handover-timeout': 900 }], [{ hostname: 'h-1.test', pool: 'p', state: 'ready' }]);
    inject(dataDir, 'h-1.test', 'hang', 'contextualize');
    duffy = await startDuffy({ configFile: config, dataDir });
    const ci = await newTenant(duffy, 'ci');
    const answer = ci.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'p', quantity: 1 }] });
    let sleeper: number | undefined;
    for (let i = 0; i < 600 && !(sleeper = hangingSleep(dataDir)); i++) await sleep(100);
    expect(sleeper).toBeDefined();

    fillUp(join(disk, 'filler'));
    // The ledger may still have room in pages it already holds: write until it has none, not even for a small write.
    for (const size of [2000, 1]) {
      let refused = false;
      for (let i = 0; i < 400 && !refused; i++) refused = (await duffy.admin.post(`${V1}/tenants`, { name: `t-${size}-${i}`, ssh_key: `ssh-ed25519 ${'A'.repeat(size)} x` })).status === 503;
      expect(refused).toBe(true);
    }
    await body({ disk, machines, answer, sleeper: sleeper! });
  } finally {
    await duffy?.close();
    duffy = undefined;
    spawnSync('umount', ['-l', disk]);
    rmSync(disk, { recursive: true, force: true });
    rmSync(machines, { recursive: true, force: true });
    rmSync(runs, { recursive: true, force: true });
  }
}

describe('fault: the disk fills up while a hand-over runs, so its outcome cannot be written', () => {
  (fullDisk ? it : it.skip)("answers the waiting caller once there is room again, not at the claim's deadline, and asks the full ledger about once a second meanwhile", async () => {
    await handOverOnFullDisk(async ({ disk, machines, answer, sleeper }) => {
      // The playbook ends; the ledger refuses its outcome, so the claim stays.
      rmSync(join(machines, 'h-1.test', 'inject'), { recursive: true });
      const commits = jest.spyOn(duffy!.app.get(Ledger), 'commit');
      process.kill(sleeper, 'SIGKILL');
      await sleep(5_000);
      expect([machine(duffy!, 'h-1.test').state, machine(duffy!, 'h-1.test').job?.action]).toEqual(['contextualizing', 'contextualize']);
      // Tried again now and then, not in a loop (it was hundreds of refused claims a second).
      expect(commits.mock.calls.length).toBeLessThan(10);

      // Room again: the hand-over is done again and the caller gets its machine.
      unlinkSync(join(disk, 'filler'));
      const timer = new AbortController();
      const served = await Promise.race([answer, sleep(60_000, undefined, { signal: timer.signal }).then(() => undefined)]).finally(() => timer.abort());
      expect([served?.status, served?.body.session?.nodes?.map((n: { hostname: string }) => n.hostname)]).toEqual([201, ['h-1.test']]);
      expect(machine(duffy!, 'h-1.test').state).toBe('deployed');
    });
  });
});

describe('fault: a stop (SIGTERM) while the disk is full and a hand-over runs', () => {
  (fullDisk ? it : it.skip)('answers the hand-over\'s caller 503 at once and ends, though the ledger cannot record the session\'s end (it waited for the handover-timeout, 15 min by default)', async () => {
    await handOverOnFullDisk(async ({ answer }) => {
      const closed = duffy!.close();
      duffy = undefined;
      const timer = new AbortController();
      const said = await Promise.race([answer, sleep(30_000, undefined, { signal: timer.signal }).then(() => undefined)]).finally(() => timer.abort());
      expect([said?.status, said?.body.detail]).toEqual([503, expect.stringMatching(/Duffy is stopping; ask again/)]);
      await closed;
    });
  });
});

describe("fault: the embedded ledger's writer thread dies", () => {
  it('answers writes 503 with Retry-After, never 500, and /health says the ledger is down and why', async () => {
    duffy = await startDuffy();
    expect((await duffy.admin.post(`${V1}/tenants`, { name: 'before', ssh_key: 'ssh-ed25519 AAAA x' })).status).toBe(201);
    // What an uncaught error or the worker's own memory limit does to it; nothing outside the process can.
    await (duffy.app.get(Ledger).store as unknown as { writer: { terminate(): Promise<number> } }).writer.terminate();
    const r = await duffy.admin.post(`${V1}/tenants`, { name: 'after', ssh_key: 'ssh-ed25519 AAAA x' });
    expect([r.status, r.body.detail, r.headers.get('retry-after')]).toEqual([503, expect.stringMatching(/^Duffy cannot write its data: the ledger writer stopped/), '60']);
    const health = await duffy.admin.get('/health');
    expect([health.status, health.body.error?.ledger?.message]).toEqual([503, expect.stringMatching(/the ledger writer stopped/)]);
    // Reads still work.
    expect((await duffy.admin.get(`${V1}/tenants`)).body.tenants.map((t: { name: string }) => t.name)).toContain('before');
  });
});

describe('fault: a second server on the same data directory', () => {
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) {
      c.kill('SIGKILL');
      c.stdout?.destroy();
      c.stderr?.destroy();
    }
  });

  function server(dataDir: string, port: number, logLevel = 'warn', configFile?: string): { child: ChildProcess; output: () => string; exit: Promise<number | null> } {
    const config = configFile ? { DUFFY_CONFIG: configFile } : {};
    const child = spawn(process.execPath, [MAIN], {
      env: { ...process.env, ...config, DUFFY_DATA_DIR: dataDir, DUFFY_PORT: String(port), DUFFY_ADMIN_KEY: ADMIN_KEY, DUFFY_LOG_LEVEL: logLevel, NODE_OPTIONS: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    return { child, output: () => out, exit };
  }

  async function serving(port: number): Promise<void> {
    const admin = new Client(`http://127.0.0.1:${port}`, basic('admin', ADMIN_KEY));
    for (let i = 0; i < 300; i++) {
      if ((await admin.get(`${V1}/pools`).catch(() => undefined))?.status === 200) return;
      await sleep(200);
    }
    throw new Error(`no server on :${port}`);
  }

  it('refuses to start, naming the pid holding the directory and the directory; a dead holder\'s lock is taken over', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-twice-'));
    const port = 20000 + Math.floor(Math.random() * 20000);
    const first = server(dataDir, port);
    await serving(port);

    const second = server(dataDir, port + 1);
    const code = await Promise.race([second.exit, new Promise((r) => setTimeout(r, 30_000).unref()).then(() => 'still running')]);
    expect(code).not.toBe('still running');
    expect(code).not.toBe(0);
    expect(second.output()).toContain(`pid ${first.child.pid}`);
    expect(second.output()).toContain(dataDir);
    // One line, no stack trace.
    expect(second.output().trim().split('\n')).toEqual([expect.stringMatching(/^duffy: failed to start: the data directory .* is in use by another Duffy/)]);
    // The first one never noticed.
    expect((await new Client(`http://127.0.0.1:${port}`, basic('admin', ADMIN_KEY)).get(`${V1}/pools`)).status).toBe(200);

    // A key no API key could be, on a fresh data directory: exit 2 before anything is written there.
    const fresh = mkdtempSync(join(tmpdir(), 'duffy-badkey-'));
    const badKey = spawn(process.execPath, [MAIN], { env: { ...process.env, DUFFY_DATA_DIR: fresh, DUFFY_PORT: '0', DUFFY_ADMIN_KEY: 'abc', NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(badKey);
    let said = '';
    badKey.stderr!.on('data', (d) => (said += d));
    expect(await new Promise((r) => badKey.once('exit', r))).toBe(2);
    expect(said.trim()).toBe('duffy: bad configuration: DUFFY_ADMIN_KEY: must be a UUID (the form every Duffy API key has), e.g. from uuidgen');
    expect(readdirSync(fresh)).toEqual([]);

    // kill -9 leaves its lock behind; the next server sees its holder is gone and starts.
    first.child.kill('SIGKILL');
    await first.exit;
    server(dataDir, port + 2);
    await serving(port + 2);
  });

  it("makes its data directory private (tenants' artifacts, secrets, the signing key), and warns on start about one other users can read", async () => {
    const parent = mkdtempSync(join(tmpdir(), 'duffy-private-'));
    const made = join(parent, 'data');
    const port = 20000 + Math.floor(Math.random() * 20000);
    const first = server(made, port);
    await serving(port);
    expect(statSync(made).mode & 0o777).toBe(0o700);
    first.child.kill('SIGTERM');
    await first.exit;
    expect(first.output()).not.toContain('readable by other users');

    chmodSync(made, 0o755);
    const second = server(made, port + 1);
    await serving(port + 1);
    expect(second.output()).toContain(`the data directory ${made} is readable by other users (mode 755)`);
  });

  it('says in its log that it is stopping, as soon as it is told to', async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const duffy = server(mkdtempSync(join(tmpdir(), 'duffy-stop-')), port, 'info');
    await serving(port);
    duffy.child.kill('SIGTERM');
    await duffy.exit;
    expect(duffy.output()).toMatch(/"msg":"SIGTERM: stopping/);
  });

  it('says so too when told to stop during a long start-up (a 20,000-machine inventory being registered)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-stop-'));
    const inventory = writeScaleInventory(join(dir, 'scale.yaml'), 20_000, (i) => `n${i + 1}.stop.test`);
    const duffy = server(join(dir, 'data'), 20000 + Math.floor(Math.random() * 20000), 'info', inventory);
    // Its first log lines come while the inventory is registered, seconds before it listens.
    for (let i = 0; i < 600 && duffy.output() === ''; i++) await sleep(50);
    duffy.child.kill('SIGTERM');
    await duffy.exit;
    expect(duffy.output()).not.toMatch(/"msg":"listening on/);
    expect(duffy.output()).toMatch(/"msg":"SIGTERM: stopping/);
  }, 60_000);
});

describe('fault: Duffy stopped or killed while a playbook runs', () => {
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
  });
  const host = 'stop-1.test';
  const start = (dataDir: string, config: string, port: number) => {
    const child = spawn(process.execPath, [MAIN], { env: { ...process.env, DUFFY_DATA_DIR: dataDir, DUFFY_CONFIG: config, DUFFY_PORT: String(port), DUFFY_ADMIN_KEY: ADMIN_KEY, DUFFY_LOG_LEVEL: 'warn', NODE_OPTIONS: '' }, stdio: 'ignore' });
    children.push(child);
    return { child, exit: new Promise<number | string | null>((r) => child.once('exit', (code, signal) => r(code ?? signal))) };
  };
  const up = async (port: number) => {
    for (let i = 0; i < 300; i++) {
      if ((await fetch(`http://127.0.0.1:${port}/health`).catch(() => undefined))?.status === 200) return new Client(`http://127.0.0.1:${port}`, basic('admin', ADMIN_KEY));
      await sleep(200);
    }
    throw new Error(`no server on :${port}`);
  };
  /** The process group of the run under way, from its file beside the input. */
  const runningGroup = async (dataDir: string) => {
    for (let i = 0; i < 150; i++) {
      const runs = existsSync(join(dataDir, 'runs')) ? readdirSync(join(dataDir, 'runs')) : [];
      const file = runs.map((r) => join(dataDir, 'runs', r, 'pgid')).find((f) => existsSync(f));
      if (file) return Number(readFileSync(file, 'utf8'));
      await sleep(200);
    }
    throw new Error('no playbook run started');
  };
  /** Whether the run's group leader still runs (a killed one may stay a zombie a moment: that is gone). */
  const alive = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').at(-1)?.[0] !== 'Z';
    } catch {
      return false;
    }
  };
  const gone = async (pid: number) => {
    for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
    return !alive(pid);
  };

  /** A server whose one machine's contextualize hangs, and a tenant's request in hand-over on it, its playbook running. */
  const handOverHanging = async (tenant: string) => {
    const dataDir = mkdtempSync(join(tmpdir(), `duffy-${tenant}-`));
    const config = ansibleConfig([{ name: 'ctx', 'playbook-timeout': 600 }], [{ hostname: host, pool: 'ctx', state: 'ready' }]);
    const port = 20000 + Math.floor(Math.random() * 20000);
    const server = start(dataDir, config, port);
    const admin = await up(port);
    inject(dataDir, host, 'hang', 'contextualize');
    const key = (await admin.post(`${V1}/tenants`, { name: tenant, ssh_key: 'x' })).body.tenant.api_key;
    const asked = new Client(`http://127.0.0.1:${port}`, basic(tenant, key)).post(`${V1}/sessions`, { nodes_specs: [{ pool: 'ctx', quantity: 1 }] });
    return { dataDir, config, port, server, asked, group: await runningGroup(dataDir) };
  };

  it('SIGTERM during a hand-over whose playbook hangs: answers the caller 503 and exits at once, the run killed', async () => {
    const { server, asked, group } = await handOverHanging('stopped');

    const stoppedAt = Date.now();
    server.child.kill('SIGTERM');
    const answer = await asked;
    expect(answer.status).toBe(503);
    expect(answer.body.detail).toMatch(/Duffy is stopping; ask again/);
    // Nest re-raises the signal once it has closed everything.
    expect(await server.exit).toBe('SIGTERM');
    expect(Date.now() - stoppedAt).toBeLessThan(20_000);
    expect(await gone(group)).toBe(true);
  });

  it('kill -9 while a playbook runs: the next process kills the run left behind before it works, and removes its input', async () => {
    const { dataDir, config, port, server: first, asked, group } = await handOverHanging('killed');
    void asked.catch(() => undefined);
    first.child.kill('SIGKILL');
    await first.exit;
    expect(alive(group)).toBe(true);

    rmSync(join(dataDir, 'machines', host, 'inject'), { recursive: true, force: true });
    start(dataDir, config, port + 1);
    await up(port + 1);
    expect(await gone(group)).toBe(true);
    expect(readdirSync(join(dataDir, 'runs')).filter((r) => existsSync(join(dataDir, 'runs', r, 'pgid')) && Number(readFileSync(join(dataDir, 'runs', r, 'pgid'), 'utf8')) === group)).toEqual([]);
  });
});
