import { afterEach, describe, expect, it, jest } from '@jest/globals';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ledger } from '../../src/application/ledger.service.js';
import { AnsibleRunner, type DuffyIn } from '../../src/adapters/ansible-runner.js';
import { ansibleConfig, inject } from '../support/ansible.js';
import { type Running, basic, machine, newTenant, startDuffy, until } from '../support/server.js';

/** Issue 10 items 10 and 11, with real ansible-playbook runs (local driver; baremetal up to its IPMI check). */
const V1 = '/api/v1';
jest.setTimeout(300_000);

const idle = (duffy: Running, hostname: string) => () => machine(duffy, hostname).state === 'ready' && machine(duffy, hostname).releasingSession === null;

describe('item 10: artifacts never cross tenants on a reuse pool', () => {
  let duffy: Running | undefined;
  afterEach(async () => {
    await duffy?.close();
    duffy = undefined;
  });

  it("collects alice's files into alice's session only; bob starts from an empty directory and collects nothing of hers", async () => {
    const config = ansibleConfig([{ name: 'reuse', 'release-policy': 'reuse', 'collect-artifacts': true }], [{ hostname: 'art-1.test', pool: 'reuse' }]);
    duffy = await startDuffy({ configFile: config });
    const alice = await newTenant(duffy, 'alice');
    const bob = await newTenant(duffy, 'bob');
    const disk = join(duffy.dataDir, 'machines', 'art-1.test', 'root', 'artifacts');

    const a = (await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'reuse', quantity: 1 }] })).body.session;
    mkdirSync(join(disk, 'logs'), { recursive: true });
    writeFileSync(join(disk, 'logs', 'alice.txt'), 'alice was here');
    writeFileSync(join(disk, '.hidden'), 'alice too');
    expect((await alice.put(`${V1}/sessions/${a.id}`, { active: false })).status).toBe(200);
    await until(duffy, idle(duffy, 'art-1.test'));
    expect((await alice.get(`${V1}/sessions/${a.id}`)).body.session.data.artifacts.sort()).toEqual(
      [`artifacts/session-${a.id}/art-1.test/.hidden`, `artifacts/session-${a.id}/art-1.test/logs/alice.txt`].sort(),
    );

    const b = (await bob.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'reuse', quantity: 1 }] })).body.session;
    expect(b.nodes[0].hostname).toBe('art-1.test');
    // Handed over with nothing of alice's left in the artifacts directory.
    expect(existsSync(disk) ? readdirSync(disk) : []).toEqual([]);
    expect((await bob.put(`${V1}/sessions/${b.id}`, { active: false })).status).toBe(200);
    await until(duffy, idle(duffy, 'art-1.test'));
    expect((await bob.get(`${V1}/sessions/${b.id}`)).body.session.data.artifacts).toBeUndefined();
    expect(existsSync(join(duffy.dataDir, 'artifacts', `session-${b.id}`, 'art-1.test', 'logs', 'alice.txt'))).toBe(false);
  });
});

describe('a fully qualified host name (a trailing dot), which Duffy accepts, is one the playbooks take too', () => {
  let duffy: Running | undefined;
  afterEach(async () => {
    await duffy?.close();
    duffy = undefined;
  });

  it('is handed over, released and collected from like any other', async () => {
    const config = ansibleConfig([{ name: 'fqdn', 'collect-artifacts': true }], [{ hostname: 'dot-1.test.', pool: 'fqdn' }]);
    duffy = await startDuffy({ configFile: config });
    const alice = await newTenant(duffy, 'alice');
    const served = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'fqdn', quantity: 1 }] });
    expect(served.status).toBe(201);
    const disk = join(duffy.dataDir, 'machines', 'dot-1.test.', 'root', 'artifacts');
    mkdirSync(disk, { recursive: true });
    writeFileSync(join(disk, 'log.txt'), 'ran');
    expect((await alice.put(`${V1}/sessions/${served.body.session.id}`, { active: false })).status).toBe(200);
    await until(duffy, idle(duffy, 'dot-1.test.'));
    expect(machine(duffy, 'dot-1.test.').service).toBe('in-service');
    expect((await alice.get(`${V1}/sessions/${served.body.session.id}`)).body.session.data.artifacts).toEqual([`artifacts/session-${served.body.session.id}/dot-1.test./log.txt`]);
  });
});

describe('item 11: the baremetal role takes ipmi_password from the secret files, never from node data', () => {
  const input = (dataDir: string, data: Record<string, unknown>): DuffyIn => ({
    action: 'health_check',
    pool: { name: 'metal', type: 'baremetal', driver: 'baremetal', arch: 'x86_64', platform: 'intel', vars: { ipmi_user: 'admin' } },
    session: null,
    nodes: [{ id: 1, hostname: 'bm-1.test', ipaddr: '127.0.0.1', data: { ipmi_host: '127.0.0.1', ipmi_port: 1, ...data } }],
    data_dir: dataDir,
  });

  it('a password in node data is not enough; one in <data>/secrets/<host>.yml passes the IPMI settings check', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-secrets-'));
    const runner = new AnsibleRunner();
    const inData = (await runner.run(input(dataDir, { ipmi_password: 'from-node-data' }), { timeoutMs: 120_000 })).nodes.get('bm-1.test')!;
    expect(inData.ok).toBe(false);
    expect(inData.error).toMatch(/ipmi_password in .*\/secrets\/bm-1\.test\.yml/);

    mkdirSync(join(dataDir, 'secrets'), { mode: 0o700 });
    writeFileSync(join(dataDir, 'secrets', 'bm-1.test.yml'), 'ipmi_password: from-the-secret-file\n', { mode: 0o600 });
    const inFile = (await runner.run(input(dataDir, {}), { timeoutMs: 120_000 })).nodes.get('bm-1.test')!;
    // Past the settings check: what fails now is talking to a BMC that is not there (or the missing IPMI library).
    expect(inFile.ok).toBe(false);
    expect(inFile.error).not.toMatch(/ipmi_password in/);
    expect(inFile.error).toMatch(/pyghmi|ipmi|timed out|connect/i);
  });
});

describe('what tenants and admins write reaches playbooks as data, never as a template', () => {
  let duffy: Running | undefined;
  afterEach(async () => {
    await duffy?.close();
    duffy = undefined;
  });

  it('hands over an SSH key holding a Jinja expression as it is, and runs nothing on the Duffy host', async () => {
    const config = ansibleConfig([{ name: 'ctx' }], [{ hostname: 'jinja-1.test', pool: 'ctx' }]);
    duffy = await startDuffy({ configFile: config });
    const marker = join(mkdtempSync(join(tmpdir(), 'duffy-jinja-')), 'ran');
    const key = `ssh-ed25519 AAAA {{ lookup('pipe', 'touch ${marker}; echo x') }}`;
    const jinja = await newTenant(duffy, 'jinja', { ssh_key: key });

    const s = await jinja.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'ctx', quantity: 1 }] });
    expect(s.status).toBe(201);
    expect(existsSync(marker)).toBe(false);
    expect(readFileSync(join(duffy.dataDir, 'machines', 'jinja-1.test', 'root', '.ssh', 'authorized_keys'), 'utf8')).toContain(key);
    expect((await jinja.put(`${V1}/sessions/${s.body.session.id}`, { active: false })).status).toBe(200);
  });
});


describe('a caller that hangs up during its hand-over', () => {
  let duffy: Running | undefined;
  afterEach(async () => {
    await duffy?.close();
    duffy = undefined;
  });

  // The same for Duffy v3's POST and cico's GET /Node/get: both wait for the hand-over.
  const asks: Array<[string, (url: string, key: string, signal: AbortSignal) => Promise<Response>]> = [
    ['POST /sessions', (url, key, signal) => fetch(`${url}${V1}/sessions`, {
      method: 'POST',
      signal,
      headers: { 'content-type': 'application/json', authorization: basic('gone', key) },
      body: JSON.stringify({ nodes_specs: [{ pool: 'ctx', quantity: 1 }] }),
    })],
    ['cico GET /Node/get', (url, key, signal) => fetch(`${url}/Node/get?key=${key}&ver=9&arch=x86_64`, { signal })],
  ];
  it.each(asks)('through %s: ends the session it will never learn of, instead of holding the machine for a whole lease', async (_, ask) => {
    const config = ansibleConfig([{ name: 'ctx', 'playbook-timeout': 600 }], [{ hostname: 'gone-1.test', pool: 'ctx', state: 'ready' }], {}, { legacy: [{ ver: '9', arch: 'x86_64', pool: 'ctx' }] });
    duffy = await startDuffy({ configFile: config });
    inject(duffy.dataDir, 'gone-1.test', 'hang', 'contextualize');
    const key = (await duffy.admin.post(`${V1}/tenants`, { name: 'gone', ssh_key: 'x' })).body.tenant.api_key;
    const hangUp = new AbortController();
    const asked = ask(duffy.url, key, hangUp.signal).catch(() => 'hung up');
    await until(duffy, () => machine(duffy!, 'gone-1.test').job?.action === 'contextualize');
    const sessionId = machine(duffy, 'gone-1.test').sessionId!;
    hangUp.abort();
    expect(await asked).toBe('hung up');

    const ledger = duffy.app.get(Ledger);
    await ledger.until(() => ledger.world.sessions.get(sessionId)!.status !== 'active', 10_000);
    const s = ledger.world.sessions.get(sessionId)!;
    expect([s.status, s.releaseReason, s.failure]).toEqual(['released', 'failed', 'the caller went away before the machines were handed over']);
  });
});
