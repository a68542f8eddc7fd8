import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { Ledger } from '../../src/application/ledger.service.js';
import { history } from '../../src/audit/audit.js';
import { type Client, type Running, basic, newTenant, startDuffy } from '../support/server.js';

const V1 = '/api/v1';

/** Three machines, no playbook on the hand-over path; m3 starts quarantined (`failed`), its health check far off. */
function threeMachines(): string {
  const file = join(mkdtempSync(join(tmpdir(), 'duffy-cfg-')), 'operating.yaml');
  writeFileSync(
    file,
    stringify({
      pools: [
        { name: 'm', type: 'baremetal', arch: 'x86_64', platform: 'intel', driver: 'local', contextualize: false, 'release-policy': 'reuse', 'fill-level': 0, 'health-check-interval': 3600 },
      ],
      machines: [
        { hostname: 'm1.test', pool: 'm', state: 'ready' },
        { hostname: 'm2.test', pool: 'm', state: 'ready' },
        { hostname: 'm3.test', pool: 'm', state: 'failed' },
      ],
    }),
  );
  return file;
}

describe('operating the farm: machines in and out of service', () => {
  let duffy: Running;
  let alice: Client;
  const ids: Record<string, number> = {};

  beforeAll(async () => {
    duffy = await startDuffy({ configFile: threeMachines() });
    alice = await newTenant(duffy, 'alice', { node_quota: 5 });
    for (const n of (await duffy.admin.get(`${V1}/nodes`)).body.nodes) ids[n.hostname] = n.id;
  });
  afterAll(() => duffy.close());

  const node = async (host: string) => (await duffy.admin.get(`${V1}/nodes/${ids[host]}`)).body.node;
  const levels = async () => (await alice.get(`${V1}/pools/m`)).body.pool.levels;
  const request = (quantity: number) => alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'm', quantity }] });
  const done = (id: number) => alice.put(`${V1}/sessions/${id}`, { active: false });
  const hosts = (r: { body: { session: { nodes: Array<{ hostname: string }> } } }) => r.body.session.nodes.map((n) => n.hostname).sort();

  it('gives a tenant 403 on PUT /nodes, and an admin 404 for an unknown node and 422 for a muddled body', async () => {
    const r = await alice.put(`${V1}/nodes/${ids['m1.test']}`, { maintenance: true, reason: 'mine now' });
    expect(r.status).toBe(403);
    expect(r.body.detail).toBe('only admins may change the service or hardware of nodes');
    expect((await node('m1.test')).service).toBe('in-service');
    expect((await duffy.admin.put(`${V1}/nodes/99999`, { maintenance: true })).status).toBe(404);
    const both = await duffy.admin.put(`${V1}/nodes/${ids['m1.test']}`, { maintenance: true, retired: true });
    expect(both.status).toBe(422);
    expect(both.body.detail).toMatch(/exactly one of/);
    expect((await duffy.admin.put(`${V1}/nodes/${ids['m1.test']}`, { maintenance: 'yes' })).status).toBe(422);
  });

  it('shows every node\'s service, and counts quarantined machines in the pool levels', async () => {
    expect(await node('m1.test')).toMatchObject({ state: 'ready', service: 'in-service', service_reason: null });
    expect(await node('m3.test')).toMatchObject({ state: 'failed', service: 'quarantined' });
    expect(await levels()).toEqual({ provisioning: 0, ready: 2, contextualizing: 0, deployed: 0, deprovisioning: 0, unused: 0, maintenance: 0, quarantined: 1, failed: 0, retired: 0 });
  });

  it('never hands out a node in maintenance, counts it, and hands it out again once it is back', async () => {
    const put = await duffy.admin.put(`${V1}/nodes/${ids['m1.test']}`, { maintenance: true, reason: 'disk swap' });
    expect(put.status).toBe(200);
    expect(put.body.node).toMatchObject({ hostname: 'm1.test', state: 'ready', service: 'maintenance', service_reason: 'disk swap' });
    expect(await levels()).toMatchObject({ ready: 1, maintenance: 1, quarantined: 1 });

    const two = await request(2);
    expect(two.status).toBe(422);
    expect(two.body.detail).toBe("can't reserve nodes: pool m: 2 requested, 1 available");
    for (let i = 0; i < 3; i++) {
      const one = await request(1);
      expect(one.status).toBe(201);
      expect(hosts(one)).toEqual(['m2.test']);
      await done(one.body.session.id);
    }

    const back = await duffy.admin.put(`${V1}/nodes/${ids['m1.test']}`, { maintenance: false });
    expect(back.body.node).toMatchObject({ service: 'in-service', service_reason: null });
    const again = await request(2);
    expect(again.status).toBe(201);
    expect(hosts(again)).toEqual(['m1.test', 'm2.test']);
    await done(again.body.session.id);
  });

  it('lets a held node drain: it stays with its session, then stays out', async () => {
    const held = await request(2);
    expect(held.status).toBe(201);
    const put = await duffy.admin.put(`${V1}/nodes/${ids['m2.test']}`, { maintenance: true, reason: 'fan noise' });
    expect(put.body.node).toMatchObject({ state: 'deployed', service: 'draining', service_reason: 'fan noise' });
    // Still the tenant's, and counted as in use.
    expect((await alice.get(`${V1}/sessions/${held.body.session.id}`)).body.session.nodes).toHaveLength(2);
    expect(await levels()).toMatchObject({ deployed: 2, maintenance: 0 });

    await done(held.body.session.id);
    expect(await node('m2.test')).toMatchObject({ state: 'ready', service: 'maintenance', service_reason: 'fan noise' });
    expect(await levels()).toMatchObject({ ready: 1, maintenance: 1 });
    const next = await request(1);
    expect(hosts(next)).toEqual(['m1.test']);
    await done(next.body.session.id);
    await duffy.admin.put(`${V1}/nodes/${ids['m2.test']}`, { maintenance: false });
  });

  it('returns a quarantined node to service on an admin\'s word', async () => {
    const put = await duffy.admin.put(`${V1}/nodes/${ids['m3.test']}`, { maintenance: false, reason: 'reseated the disk' });
    expect(put.status).toBe(200);
    // Out of quarantine; provisioned before its next use.
    expect(put.body.node).toMatchObject({ state: 'unused', service: 'in-service' });
    expect(await levels()).toMatchObject({ unused: 1, quarantined: 0 });
  });

  it('retires a node for good, with its history kept', async () => {
    const put = await duffy.admin.put(`${V1}/nodes/${ids['m3.test']}`, { retired: true, reason: 'end of life' });
    expect(put.body.node).toMatchObject({ service: 'retired', service_reason: 'end of life', active: false });
    expect(put.body.node.retired_at).toEqual(expect.any(String));
    const undo = await duffy.admin.put(`${V1}/nodes/${ids['m3.test']}`, { maintenance: false });
    expect(undo.status).toBe(409);
    expect(undo.body.detail).toBe('node m3.test is retired');
    expect(await levels()).toMatchObject({ ready: 2, unused: 0, retired: 1 });
    expect((await request(3)).status).toBe(422);
  });

  it('records each change as an event with actor and reason, apart from the machine stream', async () => {
    const events = (await duffy.app.get(Ledger).store.readAll(0n, 100_000)).filter((e) => e.type === 'MachineServiceChanged');
    expect(events.map((e) => [e.stream, e.data.service, e.data.reason, e.data.actor, e.metadata.actor])).toEqual([
      ['service-m1.test', 'maintenance', 'disk swap', 'admin', 'admin'],
      ['service-m1.test', 'in-service', null, 'admin', 'admin'],
      ['service-m2.test', 'maintenance', 'fan noise', 'admin', 'admin'],
      ['service-m2.test', 'in-service', null, 'admin', 'admin'],
      ['service-m3.test', 'in-service', 'reseated the disk', 'admin', 'admin'],
      ['service-m3.test', 'retired', 'end of life', 'admin', 'admin'],
    ]);
    // The auditor's history of the machine has them, asked by either stream's name.
    const all = await duffy.app.get(Ledger).store.readAll(0n, 100_000);
    const told = (subject: string) => history(all, subject).filter((e) => e.type === 'MachineServiceChanged').map((e) => e.data.service);
    expect(told('machine-m3.test')).toEqual(['in-service', 'retired']);
    expect(told('service-m3.test')).toEqual(['in-service', 'retired']);
    // Repeating a PUT writes nothing.
    await duffy.admin.put(`${V1}/nodes/${ids['m3.test']}`, { retired: true, reason: 'end of life' });
    expect((await duffy.app.get(Ledger).store.readAll(0n, 100_000)).filter((e) => e.type === 'MachineServiceChanged')).toHaveLength(6);
  });

  it('lists a held node retired under its session while it drains, to its tenant and the admins, and no more once released', async () => {
    const held = await request(1);
    const host = hosts(held)[0];
    const put = await duffy.admin.put(`${V1}/nodes/${ids[host]}`, { retired: true, reason: 'going away' });
    expect(put.body.node).toMatchObject({ state: 'deployed', service: 'draining', active: true, retired_at: null });
    const listed = async (c: Client) => (await c.get(`${V1}/nodes`)).body.nodes.map((n: { hostname: string }) => n.hostname);
    expect([await listed(alice), (await listed(duffy.admin)).includes(host)]).toEqual([[host], true]);
    await done(held.body.session.id);
    expect((await listed(duffy.admin)).includes(host)).toBe(false);
    expect(await node(host)).toMatchObject({ service: 'retired', active: false });
  });
});

describe('artifacts a tenant can fetch', () => {
  let duffy: Running;
  let alice: Client;
  let bob: Client;
  let mine: number;
  let theirs: number;
  let aliceAuth: string;

  beforeAll(async () => {
    duffy = await startDuffy({ configFile: threeMachines() });
    const key = (await duffy.admin.post(`${V1}/tenants`, { name: 'alice', ssh_key: 'ssh-ed25519 AAAA alice' })).body.tenant.api_key;
    aliceAuth = basic('alice', key);
    [alice, bob] = [duffy.client('alice', key), await newTenant(duffy, 'bob')];
    const ended = async (c: Client) => {
      const s = (await c.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'm', quantity: 1 }] })).body.session;
      await c.put(`${V1}/sessions/${s.id}`, { active: false });
      return s.id as number;
    };
    [mine, theirs] = [await ended(alice), await ended(bob)];
    // What the collect-artifacts playbook leaves: <data>/artifacts/session-<id>/<host>/... (see the provisioning suite).
    const dir = (id: number) => join(duffy.dataDir, 'artifacts', `session-${id}`);
    mkdirSync(join(dir(mine), 'm1.test', 'logs'), { recursive: true });
    writeFileSync(join(dir(mine), 'm1.test', 'results.xml'), '<testsuite tests="1"/>');
    writeFileSync(join(dir(mine), 'm1.test', 'logs', 'run 1.log'), 'all good\n');
    symlinkSync(join(dir(mine), 'm1.test', 'results.xml'), join(dir(mine), 'm1.test', 'latest.xml'));
    // Links that lead out of the session's directory: to another tenant's artifacts, and to the ledger.
    mkdirSync(join(dir(theirs), 'm2.test'), { recursive: true });
    writeFileSync(join(dir(theirs), 'm2.test', 'secret.txt'), 'bob only');
    symlinkSync(join(dir(theirs), 'm2.test', 'secret.txt'), join(dir(mine), 'm1.test', 'peek.txt'));
    symlinkSync(join(dir(theirs), 'm2.test'), join(dir(mine), 'bobs-dir'));
    symlinkSync(join(duffy.dataDir, 'ledger.sqlite'), join(dir(mine), 'ledger'));
  });
  afterAll(() => duffy.close());

  /** Raw HTTP, so `..` reaches the server as written (fetch would normalise the path first). */
  const raw = (path: string, auth: string) =>
    new Promise<number>((resolve, reject) => {
      const url = new URL(duffy.url);
      const req = httpRequest({ host: url.hostname, port: url.port, path, headers: { authorization: auth } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });

  it('lists and downloads its own session\'s artifacts, and nothing a link leads to outside them', async () => {
    const list = await alice.get(`${V1}/sessions/${mine}/artifacts`);
    expect(list.status).toBe(200);
    expect(list.body.artifacts).toEqual([
      { path: 'm1.test/latest.xml', size: 22 },
      { path: 'm1.test/logs/run 1.log', size: 9 },
      { path: 'm1.test/results.xml', size: 22 },
    ]);
    const file = await fetch(`${duffy.url}${V1}/sessions/${mine}/artifacts/m1.test/logs/run%201.log`, { headers: { authorization: aliceAuth } });
    expect(file.status).toBe(200);
    expect(file.headers.get('content-type')).toBe('application/octet-stream');
    expect(file.headers.get('content-disposition')).toBe('attachment; filename="run_1.log"');
    expect(await file.text()).toBe('all good\n');
    expect((await alice.get(`${V1}/sessions/${mine}/artifacts/m1.test/latest.xml`)).body).toBe('<testsuite tests="1"/>');
    // Admins may read them too.
    expect((await duffy.admin.get(`${V1}/sessions/${mine}/artifacts`)).body.artifacts).toHaveLength(3);
  });

  it("gives 404 for another tenant's artifacts, and for every path out of the session's directory", async () => {
    expect((await alice.get(`${V1}/sessions/${theirs}/artifacts`)).status).toBe(404);
    expect((await alice.get(`${V1}/sessions/${theirs}/artifacts/m2.test/secret.txt`)).status).toBe(404);
    expect((await bob.get(`${V1}/sessions/${mine}/artifacts/m1.test/results.xml`)).status).toBe(404);
    for (const path of ['m1.test/peek.txt', 'bobs-dir/secret.txt', 'ledger', 'm1.test%2F..%2F..%2Fsession-' + theirs + '%2Fm2.test%2Fsecret.txt', '%2Fetc%2Fpasswd', 'm1.test', 'nothing-here']) {
      const r = await alice.get(`${V1}/sessions/${mine}/artifacts/${path}`);
      expect([path, r.status]).toEqual([path, 404]);
    }
    expect(await raw(`${V1}/sessions/${mine}/artifacts/../session-${theirs}/m2.test/secret.txt`, aliceAuth)).toBe(404);
    expect(await raw(`${V1}/sessions/${mine}/artifacts/m1.test/../../../ledger.sqlite`, aliceAuth)).toBe(404);
  });
});

describe('soft affinity: a request by type falls back to another family of the same type and arch', () => {
  let duffy: Running;
  let ivy: Client;

  beforeAll(async () => {
    duffy = await startDuffy();
    ivy = await newTenant(duffy, 'ivy', { node_quota: 10 });
  });
  afterAll(() => duffy.close());

  it('serves an intel tenant from amd when no intel machine is free, says so, and stays strict when it names a platform or pool', async () => {
    // ivy's first machine establishes its family: intel.
    const first = await ivy.post(`${V1}/sessions`, { nodes_specs: [{ type: 'baremetal', arch: 'x86_64', platform: 'intel', quantity: 1 }] });
    expect(first.body.session.nodes[0].pool).toBe('metal-intel-x86_64');
    expect(first.body.session.data.affinity).toBeUndefined();
    // Somebody else takes every other intel machine.
    const hog = await newTenant(duffy, 'hog', { node_quota: 10 });
    expect((await hog.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 5 }] })).status).toBe(201);

    const byType = await ivy.post(`${V1}/sessions`, { nodes_specs: [{ type: 'baremetal', arch: 'x86_64', quantity: 1 }] });
    expect(byType.status).toBe(201);
    expect(byType.body.session.nodes[0].pool).toBe('metal-amd-x86_64');
    expect(byType.body.session.data.affinity).toEqual({ platform: 'intel', served_from: ['amd'], reason: 'too few intel machines of the kind asked for were free: served from amd' });
    expect((await ivy.get(`${V1}/sessions/${byType.body.session.id}`)).body.session.data.affinity.served_from).toEqual(['amd']);
    const reserved = (await duffy.app.get(Ledger).store.readAll(0n, 100_000)).filter((e) => e.type === 'MachineReserved' && e.data.sessionId === byType.body.session.id);
    expect(reserved.map((e) => e.data.affinity)).toEqual(['overflow']);

    const named = await ivy.post(`${V1}/sessions`, { nodes_specs: [{ type: 'baremetal', arch: 'x86_64', platform: 'intel', quantity: 1 }] });
    expect(named.status).toBe(422);
    expect(named.body.detail).toBe("can't reserve nodes: baremetal x86_64 intel: 1 requested, 0 available");
    expect((await ivy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 1 }] })).status).toBe(422);

    // A request that may wait gives intel the first 95 % of its wait (OVERFLOW_AFTER_SHARE_OF_WAIT), then takes amd.
    const started = Date.now();
    const waiting = ivy.post(`${V1}/sessions`, { nodes_specs: [{ type: 'baremetal', arch: 'x86_64', quantity: 1 }], wait: 4 });
    await new Promise((r) => setTimeout(r, 500));
    const queued = (await duffy.admin.get(`${V1}/queue`)).body.queue;
    expect(queued.map((q: { tenant: string; reason: string }) => [q.tenant, q.reason])).toEqual([['ivy', 'baremetal x86_64: 1 requested, 0 available on platform intel']]);
    const served = await waiting;
    expect(served.status).toBe(201);
    expect(Date.now() - started).toBeGreaterThanOrEqual(0.95 * 4000);
    expect(served.body.session.nodes[0].pool).toBe('metal-amd-x86_64');
    expect(served.body.session.data.affinity.served_from).toEqual(['amd']);
  });
});

describe('hardware requirements', () => {
  let duffy: Running;
  let hana: Client;

  function withHardware(): string {
    const file = join(mkdtempSync(join(tmpdir(), 'duffy-cfg-')), 'hardware.yaml');
    writeFileSync(
      file,
      stringify({
        pools: [
          { name: 'intel', type: 'baremetal', arch: 'x86_64', platform: 'intel', driver: 'local', contextualize: false, 'release-policy': 'reuse', 'fill-level': 0 },
          { name: 'amd', type: 'baremetal', arch: 'x86_64', platform: 'amd', driver: 'local', contextualize: false, 'release-policy': 'reuse', 'fill-level': 0 },
        ],
        machines: [
          { hostname: 'small.test', pool: 'intel', state: 'ready', hardware: { cpus: 8, ram_gb: 32, disk_gb: 240, cpu_model: 'Intel Xeon E-2236' } },
          { hostname: 'big.test', pool: 'amd', state: 'ready', hardware: { cpus: 64, ram_gb: 512, disk_gb: 3840, cpu_model: 'AMD EPYC 7513', gpu: 'none' } },
        ],
      }),
    );
    return file;
  }

  beforeAll(async () => {
    duffy = await startDuffy({ configFile: withHardware() });
    hana = await newTenant(duffy, 'hana', { node_quota: 5 });
  });
  afterAll(() => duffy.close());

  const ask = (spec: Record<string, unknown>) => hana.post(`${V1}/sessions`, { nodes_specs: [{ type: 'baremetal', arch: 'x86_64', quantity: 1, ...spec }] });

  it('shows each node\'s hardware, from the configuration and from POST /nodes', async () => {
    const nodes = (await duffy.admin.get(`${V1}/nodes`)).body.nodes;
    expect(nodes.find((n: { hostname: string }) => n.hostname === 'big.test').hardware).toEqual({ cpus: 64, ram_gb: 512, disk_gb: 3840, cpu_model: 'AMD EPYC 7513', gpu: 'none' });
    const posted = await duffy.admin.post(`${V1}/nodes`, { hostname: 'mid.test', pool: 'intel', comment: 'rack 4, bought 2024', hardware: { cpus: 16, ram_gb: 128, disk_gb: 480, cpu_model: 'Intel Xeon Gold 6230' } });
    expect(posted.status).toBe(201);
    // Duffy v3's comment, kept and shown.
    expect(posted.body.node.comment).toBe('rack 4, bought 2024');
    expect((await duffy.admin.get(`${V1}/nodes/${posted.body.node.id}`)).body.node.comment).toBe('rack 4, bought 2024');
    expect(posted.body.node.hardware).toEqual({ cpus: 16, ram_gb: 128, disk_gb: 480, cpu_model: 'Intel Xeon Gold 6230' });
    const bad = await duffy.admin.post(`${V1}/nodes`, { hostname: 'odd.test', pool: 'intel', hardware: { cpus: [1, 2] } });
    expect(bad.status).toBe(422);
    expect(bad.body.detail).toBe('hardware.cpus must be a string, a number or a boolean');
    // A measure that no min_* could ever match, and a model that is not a name.
    for (const [hardware, detail] of [[{ cpus: 'many' }, 'hardware.cpus must be a number, at least 0'], [{ ram_gb: -4 }, 'hardware.ram_gb must be a number, at least 0'], [{ cpu_model: 7 }, 'hardware.cpu_model must be a string']] as const) {
      expect((await duffy.admin.post(`${V1}/nodes`, { hostname: 'odd.test', pool: 'intel', hardware })).body).toEqual({ detail });
    }
  });

  it('hands out only machines that meet every requirement, across families, and names the one that cannot be met', async () => {
    const epyc = await ask({ hardware: { min_ram_gb: 256, cpu_model: 'epyc' } });
    expect(epyc.status).toBe(201);
    expect(epyc.body.session.nodes.map((n: { hostname: string }) => n.hostname)).toEqual(['big.test']);
    const mid = await ask({ hardware: { min_cpus: 12, min_disk_gb: 400 } });
    expect(mid.body.session.nodes.map((n: { hostname: string }) => n.hostname)).toEqual(['mid.test']);
    // The admins' note on the node stays out of the session's view, as Duffy v3's session nodes have none.
    expect(mid.body.session.nodes[0].comment).toBe(null);
    // Nor on the node itself, which its tenant may read while it holds it (it showed there).
    const asTenant = (await hana.get(`${V1}/nodes/${mid.body.session.nodes[0].id}`)).body.node;
    expect([asTenant.hostname, asTenant.comment]).toEqual(['mid.test', null]);
    expect((await duffy.admin.get(`${V1}/nodes/${mid.body.session.nodes[0].id}`)).body.node.comment).toBe('rack 4, bought 2024');

    const huge = await ask({ hardware: { min_ram_gb: 1024 } });
    expect(huge.status).toBe(422);
    // No machine has it: no wait could serve it (an invalid request for this farm, exit 8 for the CLI).
    expect([huge.headers.get('duffy-refusal'), huge.body.detail]).toEqual(['invalid', "can't reserve nodes: baremetal x86_64 with min_ram_gb 1024: 1 requested, 0 available on platform amd; hardware min_ram_gb 1024 rules out 1 free machine"]);
    const model = await ask({ pool: 'intel', type: undefined, arch: undefined, hardware: { cpu_model: 'EPYC' } });
    expect(model.status).toBe(422);
    expect(model.body.detail).toBe('can\'t reserve nodes: pool intel with cpu_model "EPYC": 1 requested, 0 available; hardware cpu_model "EPYC" rules out 1 free machine');
    const neg = await ask({ hardware: { min_cpus: 0 } });
    expect(neg.status).toBe(422);
    expect(neg.body.detail).toMatch(/min_cpus must be at least 1/);
    for (const s of [epyc, mid]) await hana.put(`${V1}/sessions/${s.body.session.id}`, { active: false });
  });

  it('takes a node\'s hardware from an admin afterwards (a machine registered before hardware existed): requests go by it, the ledger keeps who said it', async () => {
    const posted = await duffy.admin.post(`${V1}/nodes`, { hostname: 'old.test', pool: 'intel' });
    expect(posted.status).toBe(201);
    const id = posted.body.node.id as number;
    expect((await ask({ pool: 'intel', type: undefined, arch: undefined, hardware: { min_ram_gb: 1024 } })).status).toBe(422);
    const set = await duffy.admin.put(`${V1}/nodes/${id}`, { hardware: { cpus: 96, ram_gb: 1536 }, reason: 'inventory after the upgrade' });
    expect([set.status, set.body.node.hardware]).toEqual([200, { cpus: 96, ram_gb: 1536 }]);
    const got = await ask({ pool: 'intel', type: undefined, arch: undefined, hardware: { min_ram_gb: 1024 } });
    expect([got.status, got.body.session?.nodes.map((n: { hostname: string }) => n.hostname)]).toEqual([201, ['old.test']]);
    await hana.put(`${V1}/sessions/${got.body.session.id}`, { active: false });
    const events = (await duffy.app.get(Ledger).store.readStream('service-old.test')).map((e) => [e.type, e.data.actor, e.data.reason]);
    expect(events).toEqual([['MachineHardwareSet', 'admin', 'inventory after the upgrade']]);
    // Refused as on POST /nodes; a tenant may not.
    expect((await duffy.admin.put(`${V1}/nodes/${id}`, { hardware: { ram_gb: 'lots' } })).body).toEqual({ detail: 'hardware.ram_gb must be a number, at least 0' });
    expect((await hana.put(`${V1}/nodes/${id}`, { hardware: { cpus: 1 } })).status).toBe(403);
  });
});
