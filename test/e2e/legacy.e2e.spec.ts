import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Catalog } from '../../src/application/catalog.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { ADMIN_KEY, type Client, type Running, instantDemoConfig, newTenant, startDuffy } from '../support/server.js';

/** cico 0.4.7's calls, byte for byte where it matters. */
describe('legacy cico API', () => {
  let duffy: Running;
  let key: string;
  let plain: Client;

  beforeAll(async () => {
    duffy = await startDuffy();
    const r = await duffy.admin.post('/api/v1/tenants', { name: 'cico-user', ssh_key: 'ssh-rsa AAAA cico', node_quota: 3 });
    key = r.body.tenant.api_key;
    plain = duffy.client('x', 'y');
    await newTenant(duffy, 'other');
  });
  afterAll(() => duffy.close());

  const get = (path: string) => fetch(duffy.url + path).then(async (r) => ({ status: r.status, type: r.headers.get('content-type'), body: JSON.parse(await r.text()) }));

  it('Node/get -> {ssid, hosts}; Inventory with a key (the tenant\'s), and without one (every active session\'s nodes, 14 columns); Node/done -> "Done"', async () => {
    const got = await get(`/Node/get?key=${key}&ver=9-stream&arch=x86_64&count=2`);
    expect(got.status).toBe(200);
    expect(Object.keys(got.body).sort()).toEqual(['hosts', 'ssid']);
    expect(Number.isInteger(got.body.ssid)).toBe(true);
    expect(got.body.hosts).toHaveLength(2);

    const mine = await get(`/Inventory?key=${key}`);
    expect(mine.body).toEqual(got.body.hosts.map((h: string) => [h, got.body.ssid]));
    // Without a key, python-cicoclient's "full inventory" (its node get, inventory and node done read it): Duffy v3's
    // 14 columns for every active session's nodes, another tenant's included; an empty key is no key, as in v3.
    const theirs = (await duffy.admin.post('/api/v1/sessions', { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session;
    const nodes = (await duffy.admin.get('/api/v1/nodes')).body.nodes as Array<{ id: number; hostname: string; ipaddr: string | null; pool: string }>;
    const row = (host: string, ssid: number) => {
      const n = nodes.find((x) => x.hostname === host)!;
      return [n.id, host, n.ipaddr, null, 0, 'deployed', String(ssid), null, null, null, null, n.pool, null, null];
    };
    const everyone = [...got.body.hosts.map((h: string) => row(h, got.body.ssid)), row(theirs.nodes[0].hostname, theirs.id)];
    for (const path of ['/Inventory', '/Inventory?key=']) {
      const all = await get(path);
      expect(all).toMatchObject({ status: 200, type: 'application/json; charset=utf-8' });
      expect(all.body).toEqual(expect.arrayContaining(everyone));
      expect(all.body).toHaveLength(everyone.length);
    }
    // An admin's key lists every tenant's active sessions, as v3's GET /sessions does for an admin.
    expect((await get(`/Inventory?key=${ADMIN_KEY}`)).body).toEqual(expect.arrayContaining([[theirs.nodes[0].hostname, theirs.id], ...mine.body]));
    // An operator may turn the keyless list off: then its failure string, as for any failure.
    const config = duffy.app.get(Catalog).settings.config;
    config['legacy-public-inventory'] = false;
    try {
      expect(await get('/Inventory')).toMatchObject({ status: 200, body: 'Failed to retrieve inventory of nodes' });
    } finally {
      config['legacy-public-inventory'] = true;
    }
    await duffy.admin.put(`/api/v1/sessions/${theirs.id}`, { active: false });

    const done = await get(`/Node/done?key=${key}&ssid=${got.body.ssid}`);
    expect(done).toMatchObject({ status: 200, body: 'Done' });
    expect((await get(`/Inventory?key=${key}`)).body).toEqual([]);
  });

  it('a parameter given twice counts by its last value, as FastAPI (Duffy v3) reads a query string', async () => {
    const got = await get(`/Node/get?key=wrong&key=${key}&count=5&count=1`);
    expect(got.status).toBe(200);
    expect(got.body.hosts).toHaveLength(1);
    expect(await get(`/Inventory?key=${key}&key=${key}`)).toMatchObject({ status: 200, body: [[got.body.hosts[0], got.body.ssid]] });
    expect(await get(`/Node/done?key=${key}&key=${key}&ssid=0&ssid=${got.body.ssid}`)).toMatchObject({ status: 200, body: 'Done' });
  });

  it('a HEAD of a call that changes things changes nothing (405)', async () => {
    const before = (await duffy.admin.get('/api/v1/sessions')).body.sessions.length;
    for (const call of [`/Node/get?key=${key}`, `/Node/done?key=${key}&ssid=1`, `/Node/fail?key=${key}&ssid=1`]) {
      const head = await fetch(duffy.url + call, { method: 'HEAD' });
      expect([head.status, head.headers.get('allow')]).toEqual([405, 'GET']);
    }
    expect((await duffy.admin.get('/api/v1/sessions')).body.sessions.length).toBe(before);
  });

  it('uses cico defaults (ver 7, x86_64, count 1) and maps aarch64', async () => {
    const def = await get(`/Node/get?key=${key}`);
    expect(def.body.hosts).toHaveLength(1);
    expect(def.body.hosts[0]).toMatch(/^metal-intel-/);
    const arm = await get(`/Node/get?key=${key}&ver=8-stream&arch=aarch64`);
    expect(arm.body.hosts[0]).toMatch(/^metal-arm-/);
    await get(`/Node/done?key=${key}&ssid=${def.body.ssid}`);
    await get(`/Node/done?key=${key}&ssid=${arm.body.ssid}`);
  });

  it('answers 200 "Failed to allocate nodes" when nothing can be had, as cico expects', async () => {
    for (const q of ['count=5', 'ver=6', 'arch=ppc64le', 'count=0', 'count=lots']) {
      const r = await get(`/Node/get?key=${key}&${q}`);
      expect(r).toMatchObject({ status: 200, body: 'Failed to allocate nodes' });
    }
  });

  it('Node/fail keeps the machines 6 more hours', async () => {
    const got = await get(`/Node/get?key=${key}`);
    const before = (await duffy.admin.get(`/api/v1/sessions/${got.body.ssid}`)).body.session;
    expect((await get(`/Node/fail?key=${key}&ssid=${got.body.ssid}`)).body).toBe('Done');
    const after = (await duffy.admin.get(`/api/v1/sessions/${got.body.ssid}`)).body.session;
    expect(Date.parse(after.expires_at)).toBeGreaterThan(Date.parse(before.expires_at));
    await get(`/Node/done?key=${key}&ssid=${got.body.ssid}`);
  });

  it('rejects an unknown key with 403 {"msg": "Invalid duffy key"}; another tenant\'s or an unknown ssid fails as Duffy v3\'s legacy calls say it', async () => {
    expect(await get('/Node/get?key=nope')).toMatchObject({ status: 403, body: { msg: 'Invalid duffy key' } });
    expect(await get('/Inventory?key=nope')).toMatchObject({ status: 403, body: { msg: 'Invalid duffy key' } });
    const other = (await duffy.admin.post('/api/v1/sessions', { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session;
    for (const ssid of [other.id, 99999]) {
      expect(await get(`/Node/done?key=${key}&ssid=${ssid}`)).toMatchObject({ status: 200, body: 'Failed to return nodes on completion' });
      expect(await get(`/Node/fail?key=${key}&ssid=${ssid}`)).toMatchObject({ status: 200, body: 'Failed to change expiration time' });
    }
    expect((await duffy.admin.get(`/api/v1/sessions/${other.id}`)).body.session.active).toBe(true);
    for (const call of ['done', 'fail']) expect(await get(`/Node/${call}?key=${key}`)).toMatchObject({ status: 200, body: 'Some parameters are absent' });
    // A malformed ssid is no session (v3 forwards it to its API, which refuses it).
    expect(await get(`/Node/done?key=${key}&ssid=0x1`)).toMatchObject({ status: 200, body: 'Failed to return nodes on completion' });
    expect(await get(`/Node/fail?key=${key}&ssid=abc`)).toMatchObject({ status: 200, body: 'Failed to change expiration time' });
    // No key, or an empty one: Duffy v3's FastAPI answer.
    for (const path of ['/Node/get', '/Node/get?key=', '/Node/done?ssid=1', '/Node/fail?key=&ssid=1']) {
      expect(await get(path)).toMatchObject({ status: 403, body: { detail: 'Not authenticated' } });
    }
    // An empty ver is "" (no pool map takes it), not the default 7.
    expect(await get(`/Node/get?key=${key}&ver=`)).toMatchObject({ status: 200, body: 'Failed to allocate nodes' });
    void plain;
  });

  it("a retired tenant's key: Node/get answers 200 \"Failed to allocate nodes\" as Duffy v3's does (its API refuses the tenant), the other calls 403 {\"msg\"} as v3's", async () => {
    const r = (await duffy.admin.post('/api/v1/tenants', { name: 'cico-gone', ssh_key: 'ssh-rsa AAAA gone', node_quota: 1 })).body.tenant;
    expect((await duffy.admin.put(`/api/v1/tenants/${r.id}`, { active: false })).status).toBe(200);
    // cico's node get reads a string answer as a failure and reports it; a {"msg"} object crashes it on body['hosts'].
    expect(await get(`/Node/get?key=${r.api_key}`)).toMatchObject({ status: 200, body: 'Failed to allocate nodes' });
    expect(await get(`/Node/done?key=${r.api_key}&ssid=1`)).toMatchObject({ status: 403, body: { msg: 'Invalid duffy key' } });
    expect(await get(`/Inventory?key=${r.api_key}`)).toMatchObject({ status: 403, body: { msg: 'Invalid duffy key' } });
  });
});

/** Duffy on the demo configuration with `legacy` settings of its own, and a cico tenant's key. */
async function withLegacyConfig(settings: Record<string, unknown>): Promise<{ duffy: Running; key: string }> {
  const file = instantDemoConfig();
  writeFileSync(file, stringify({ ...parse(readFileSync(file, 'utf8')), ...settings }));
  const duffy = await startDuffy({ configFile: file });
  const key = (await duffy.admin.post('/api/v1/tenants', { name: 'cico-legacy', ssh_key: 'ssh-rsa AAAA cico', node_quota: 3 })).body.tenant.api_key;
  return { duffy, key };
}

describe("legacy cico API on a Duffy v3 metaclient's poolmap (Jinja pool names) and mangle_hostname", () => {
  let duffy: Running;
  let key: string;

  beforeAll(async () => {
    ({ duffy, key } = await withLegacyConfig({
      legacy: [{ arch: 'x86_64|aarch64', pool: "metal-{{ flavor | default('intel') }}-{{ arch }}" }],
      'legacy-mangle-hostname': "{{ hostname | replace('.demo.duffy', '') }}",
    }));
  });
  afterAll(() => duffy.close());

  const get = (path: string) => fetch(duffy.url + path).then(async (r) => ({ status: r.status, body: JSON.parse(await r.text()) }));

  it('serves the pool the template renders, and answers host names as the template mangles them, in Node/get and Inventory', async () => {
    const got = await get(`/Node/get?key=${key}&arch=aarch64&flavor=arm`);
    expect(got.status).toBe(200);
    const session = (await duffy.admin.get(`/api/v1/sessions/${got.body.ssid}`)).body.session;
    expect(session.nodes.map((n: { pool: string }) => n.pool)).toEqual(['metal-arm-aarch64']);
    const registered = session.nodes[0].hostname as string;
    expect(registered).toMatch(/\.demo\.duffy$/);
    expect(got.body.hosts).toEqual([registered.replace('.demo.duffy', '')]);
    expect((await get(`/Inventory?key=${key}`)).body).toEqual([[got.body.hosts[0], got.body.ssid]]);
    expect((await get('/Inventory')).body.map((row: unknown[]) => row[1])).toEqual(got.body.hosts);
    // A rendered pool that does not exist is cico's failure string, as Duffy v3 answers its API's refusal.
    expect(await get(`/Node/get?key=${key}&arch=x86_64&flavor=nosuch`)).toEqual({ status: 200, body: 'Failed to allocate nodes' });
    expect((await get(`/Node/done?key=${key}&ssid=${got.body.ssid}`)).body).toBe('Done');
  });
});

describe('legacy cico API with a mangle_hostname that fails on some host names (a branch the start-up trial never took)', () => {
  let duffy: Running;
  let key: string;

  beforeAll(async () => {
    ({ duffy, key } = await withLegacyConfig({
      'legacy-mangle-hostname': "{% if 'arm' in hostname %}{{ hostname | nosuchfilter }}{% else %}{{ hostname | replace('.demo.duffy', '') }}{% endif %}",
    }));
  });
  afterAll(() => duffy.close());

  it('answers the host names as registered, never a 500 that would leave the machines held by nobody who knows', async () => {
    const got = await fetch(`${duffy.url}/Node/get?key=${key}&arch=aarch64`).then(async (r) => ({ status: r.status, body: JSON.parse(await r.text()) }));
    expect(got.status).toBe(200);
    expect(got.body.hosts).toEqual([expect.stringMatching(/^metal-arm-\d+\.demo\.duffy$/)]);
    const inventory = await fetch(`${duffy.url}/Inventory?key=${key}`).then(async (r) => ({ status: r.status, body: JSON.parse(await r.text()) }));
    expect(inventory).toEqual({ status: 200, body: [[got.body.hosts[0], got.body.ssid]] });
  });
});
