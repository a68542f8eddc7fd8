import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ADMIN_KEY, type Client, type Running, basic, newTenant, startDuffy } from '../support/server.js';

const V1 = '/api/v1';

describe('Duffy v3 API over HTTP (embedded ledger, demo inventory)', () => {
  let duffy: Running;
  let alice: Client;
  let bob: Client;

  beforeAll(async () => {
    duffy = await startDuffy();
    alice = await newTenant(duffy, 'alice');
    bob = await newTenant(duffy, 'bob');
  });
  afterAll(() => duffy.close());

  it('answers pools with exactly name and fill-level, and levels per pool', async () => {
    const list = await alice.get(`${V1}/pools`);
    expect(list.status).toBe(200);
    expect(list.body.action).toBe('get');
    for (const p of list.body.pools) expect(Object.keys(p).sort()).toEqual(['fill-level', 'name']);
    const one = await alice.get(`${V1}/pools/metal-intel-x86_64`);
    expect(Object.keys(one.body.pool).sort()).toEqual(['fill-level', 'levels', 'name']);
    // Duffy v3's five levels, then Duffy's own (v3 clients ignore extra keys): every machine counts in one.
    expect(Object.keys(one.body.pool.levels)).toEqual(['provisioning', 'ready', 'contextualizing', 'deployed', 'deprovisioning', 'unused', 'maintenance', 'quarantined', 'failed', 'retired']);
    expect((await alice.get(`${V1}/pools/nope`)).status).toBe(404);
    // As in Duffy v3, pools need no credentials.
    const anonymous = await fetch(`${duffy.url}${V1}/pools/metal-intel-x86_64`);
    expect(anonymous.status).toBe(200);
    expect(await anonymous.json()).toEqual(one.body);
  });

  it('changes a tenant\'s API key as Duffy v3 does: "reset" (or true) issues one, a UUID sets it, another tenant\'s is refused', async () => {
    const carol = await duffy.admin.post(`${V1}/tenants`, { name: 'carol', ssh_key: 'ssh-ed25519 AAAA carol' });
    expect(carol.body.tenant).toMatchObject({ ssh_key: 'ssh-ed25519 AAAA carol', api_key: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    const id = carol.body.tenant.id;
    const works = async (key: string) => (await duffy.client('carol', key).get(`${V1}/sessions`)).status;

    const reset = await duffy.admin.put(`${V1}/tenants/${id}`, { api_key: 'reset' });
    expect(reset.status).toBe(200);
    expect(reset.body.tenant.api_key).toMatch(/^[0-9a-f-]{36}$/);
    expect([await works(reset.body.tenant.api_key), await works(carol.body.tenant.api_key)]).toEqual([200, 401]);

    const chosen = '0a1b2c3d-0000-4000-8000-00000000c0de';
    const set = await duffy.admin.put(`${V1}/tenants/${id}`, { api_key: chosen.toUpperCase() });
    expect(set.body.tenant.api_key).toBe('**********');
    expect([await works(chosen), await works(chosen.toUpperCase()), await works(reset.body.tenant.api_key)]).toEqual([200, 200, 401]);

    const again = await duffy.admin.put(`${V1}/tenants/${id}`, { api_key: true });
    expect(await works(again.body.tenant.api_key)).toBe(200);
    const taken = await duffy.admin.put(`${V1}/tenants/${id}`, { api_key: ADMIN_KEY });
    expect(taken).toMatchObject({ status: 409, body: { detail: 'that API key is already in use' } });
    expect((await duffy.admin.put(`${V1}/tenants/${id}`, { api_key: 'new' })).status).toBe(422);
    // After retiring only, Duffy v3 answers api_key null.
    expect((await duffy.admin.put(`${V1}/tenants/${id}`, { active: false })).body.tenant).toMatchObject({ active: false, api_key: null });
  });

  it('puts a tenant setting given as null back to the default, as Duffy v3 does', async () => {
    const t = (await duffy.admin.post(`${V1}/tenants`, { name: 'dora', ssh_key: 'ssh-ed25519 AAAA dora', node_quota: 3, session_lifetime: '2h' })).body.tenant;
    expect(t).toMatchObject({ node_quota: 3, effective_node_quota: 3, session_lifetime: 7200 });
    const reset = await duffy.admin.put(`${V1}/tenants/${t.id}`, { node_quota: null, session_lifetime: null, ssh_key: null });
    expect(reset.status).toBe(200);
    expect(reset.body.tenant).toMatchObject({ node_quota: null, effective_node_quota: 10, session_lifetime: null, effective_session_lifetime: 21600 });
  });

  it('runs request -> list -> done with Duffy v3 shapes', async () => {
    const created = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 2 }] });
    expect(created.status).toBe(201);
    const s = created.body.session;
    expect(Object.keys(s).sort()).toEqual(['active', 'created_at', 'data', 'expires_at', 'id', 'nodes', 'retired_at', 'tenant']);
    expect(Object.keys(s.tenant).sort()).toEqual(
      ['active', 'created_at', 'effective_node_quota', 'effective_session_lifetime', 'effective_session_lifetime_max', 'id', 'is_admin', 'name', 'node_quota', 'retired_at', 'session_lifetime', 'session_lifetime_max', 'ssh_key'].sort(),
    );
    expect(s.tenant.ssh_key).toBe('**********');
    expect(s.nodes).toHaveLength(2);
    for (const n of s.nodes) {
      expect(Object.keys(n).sort()).toEqual(['comment', 'data', 'hostname', 'id', 'ipaddr', 'pool', 'reusable', 'state']);
      expect(n.state).toBe('deployed');
    }
    expect(Number.isInteger(s.id)).toBe(true);
    expect(Date.parse(s.expires_at) - Date.parse(s.created_at)).toBe(6 * 3600 * 1000);

    const mine = await alice.get(`${V1}/sessions`);
    expect(mine.body.sessions.map((x: { id: number }) => x.id)).toContain(s.id);
    expect((await bob.get(`${V1}/sessions`)).body.sessions.map((x: { id: number }) => x.id)).not.toContain(s.id);

    const done = await alice.put(`${V1}/sessions/${s.id}`, { active: false });
    expect(done.status).toBe(200);
    expect(done.body.action).toBe('put');
    expect(done.body.session.active).toBe(false);
    expect(done.body.session.retired_at).not.toBeNull();
    const pool = await alice.get(`${V1}/pools/vm-intel-x86_64`);
    expect(pool.body.pool.levels.ready).toBe(4);
    expect((await alice.get(`${V1}/sessions`)).body.sessions.map((x: { id: number }) => x.id)).not.toContain(s.id);
  });

  it('keeps tenants apart: bob can neither see nor end nor extend alice\'s session', async () => {
    const s = (await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-amd-x86_64', quantity: 1 }] })).body.session;
    expect((await bob.get(`${V1}/sessions/${s.id}`)).status).toBe(404);
    const put = await bob.put(`${V1}/sessions/${s.id}`, { active: false });
    expect(put.status).toBe(404);
    expect(JSON.stringify(put.body)).not.toContain('metal-amd');
    expect((await bob.put(`${V1}/sessions/${s.id}`, { expires_at: '+1h' })).status).toBe(404);
    const still = await alice.get(`${V1}/sessions/${s.id}`);
    expect(still.body.session.active).toBe(true);
    expect(still.body.session.expires_at).toBe(s.expires_at);
    // The admin sees every session.
    expect((await duffy.admin.get(`${V1}/sessions/${s.id}`)).status).toBe(200);
    await alice.put(`${V1}/sessions/${s.id}`, { active: false });
  });

  it('extends a session, clamped to the maximum lifetime', async () => {
    const s = (await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-amd-x86_64', quantity: 1 }] })).body.session;
    const r = await alice.put(`${V1}/sessions/${s.id}`, { expires_at: '+48h' });
    expect(r.status).toBe(200);
    expect(Date.parse(r.body.session.expires_at) - Date.parse(s.created_at)).toBe(12 * 3600 * 1000);
    await alice.put(`${V1}/sessions/${s.id}`, { active: false });
  });

  it('keeps a tenant on its platform family across requests, and spreads wear inside it', async () => {
    const dave = await newTenant(duffy, 'dave');
    const got: Array<{ pool: string; hostname: string }> = [];
    for (let i = 0; i < 3; i++) {
      const r = await dave.post(`${V1}/sessions`, { nodes_specs: [{ type: 'baremetal', arch: 'x86_64', quantity: 1 }] });
      expect(r.status).toBe(201);
      got.push(r.body.session.nodes[0]);
      await dave.put(`${V1}/sessions/${r.body.session.id}`, { active: false });
    }
    // Same family every time, and never the machine it just wore.
    expect(new Set(got.map((n) => n.pool)).size).toBe(1);
    expect(new Set(got.map((n) => n.hostname)).size).toBe(3);
  });

  it('asks by type/arch/platform instead of a pool', async () => {
    const r = await bob.post(`${V1}/sessions`, { nodes_specs: [{ type: 'baremetal', arch: 'aarch64', quantity: 1 }] });
    expect(r.status).toBe(201);
    expect(r.body.session.nodes[0].pool).toBe('metal-arm-aarch64');
    const none = await bob.post(`${V1}/sessions`, { nodes_specs: [{ type: 'vm', arch: 'sparc', quantity: 1 }] });
    expect(none.status).toBe(422);
    expect(none.body.detail).toMatch(/^can't reserve nodes: /);
    await bob.put(`${V1}/sessions/${r.body.session.id}`, { active: false });
  });

  it('refuses over quota with 403 and the numbers, and over capacity with 422 naming what is missing', async () => {
    const small = await newTenant(duffy, 'small', { node_quota: 1 });
    const q = await small.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 2 }] });
    expect(q.status).toBe(403);
    expect(q.body.detail).toBe('quota exceeded: tenant small has 0 of 1 nodes and asked for 2 more');
    // More than the pool has: no wait, nor asking again, can serve it (an invalid request for this farm).
    const never = await duffy.admin.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 3 }] });
    expect([never.status, never.headers.get('duffy-refusal'), never.body.detail]).toEqual([422, 'invalid', "can't reserve nodes: pool vm-arm-aarch64: 3 requested, 2 available"]);
    // Busy: both held, one more asked for.
    const held = await duffy.admin.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 2 }] });
    const c = await duffy.admin.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 1 }] });
    expect([c.status, c.headers.get('duffy-refusal'), c.body.detail]).toEqual([422, 'capacity', "can't reserve nodes: pool vm-arm-aarch64: 1 requested, 0 available"]);
    await duffy.admin.put(`${V1}/sessions/${held.body.session.id}`, { active: false });
  });

  describe('bad input: always 4xx with a clear detail, never 5xx', () => {
    const cases: Array<[string, () => Promise<{ status: number; body: any; headers: Headers }>, number, RegExp]> = [
      ['malformed JSON', () => alice.call('POST', `${V1}/sessions`, undefined, '{"nodes_specs": ['), 400, /^malformed JSON body: /],
      ['wrong type for quantity', () => alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 'two' }] }), 422, /quantity/],
      ['wrong type for nodes_specs', () => alice.post(`${V1}/sessions`, { nodes_specs: 'all' }), 422, /nodes_specs/],
      ['quantity 0', () => alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 0 }] }), 422, /at least 1/],
      ['negative quantity', () => alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: -3 }] }), 422, /at least 1/],
      ['quantity 10^9', () => alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1e9 }] }), 422, /at most/],
      ['unknown pool', () => alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'no-such-pool', quantity: 1 }] }), 422, /^can't reserve nodes: unknown pool no-such-pool$/],
      ['another tenant\'s id from a tenant', () => alice.post(`${V1}/sessions`, { tenant_id: 1, nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] }), 403, /^can't create session for other tenant$/],
      ['an unknown tenant id from an admin', () => duffy.admin.post(`${V1}/sessions`, { tenant_id: 999, nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] }), 422, /^can't find tenant with id 999$/],
      ['empty nodes_specs', () => alice.post(`${V1}/sessions`, { nodes_specs: [] }), 422, /empty/],
      ['a JSON array body', () => alice.call('POST', `${V1}/sessions`, undefined, '[1,2]'), 422, /^the body must be a JSON object, got a list$/],
      ['a 10 MB body', () => alice.call('POST', `${V1}/sessions`, undefined, JSON.stringify({ nodes_specs: [], pad: 'x'.repeat(10 * 1024 * 1024) })), 413, /^request body too large$/],
      ['missing auth', () => new (alice.constructor as any)(duffy.url).get(`${V1}/sessions`), 401, /Not authenticated/],
      ['garbled auth', () => new (alice.constructor as any)(duffy.url, 'Basic %%%garbage').get(`${V1}/sessions`), 401, /Malformed/],
      ['wrong key', () => new (alice.constructor as any)(duffy.url, basic('alice', 'not-the-key')).get(`${V1}/sessions`), 401, /Invalid/],
      ['non-integer id', () => alice.get(`${V1}/sessions/abc`), 422, /integer/],
      ['unknown session', () => alice.get(`${V1}/sessions/999999`), 404, /not found/],
      ['a query flag that is no boolean', () => alice.get(`${V1}/nodes?retired=maybe`), 422, /^retired must be true or false \(or 1\/0, yes\/no\), got "maybe"$/],
      ['an id of 20 digits', () => alice.get(`${V1}/sessions/99999999999999999999`), 422, /integer from 0 to 999999999999999/],
      [
        'bad expires_at',
        async () => {
          const s = (await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 1 }] })).body.session;
          const r = await alice.put(`${V1}/sessions/${s.id}`, { expires_at: 'soon' });
          await alice.put(`${V1}/sessions/${s.id}`, { active: false });
          return r;
        },
        422,
        /expires_at must be like/,
      ],
      [
        'a negative JSON number as expires_at (refused as "-60" is: no moment of 1969 is meant)',
        async () => {
          const s = (await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 1 }] })).body.session;
          const r = await alice.put(`${V1}/sessions/${s.id}`, { expires_at: -60 });
          await alice.put(`${V1}/sessions/${s.id}`, { active: false });
          return r;
        },
        422,
        /expires_at must be like/,
      ],
      ['non-admin creating a tenant', () => alice.post(`${V1}/tenants`, { name: 'mallory', ssh_key: 'x' }), 403, /admin/],
    ];
    it('takes the Basic scheme in any case (RFC 9110), with the right key only', async () => {
      const admin = (scheme: string, key = ADMIN_KEY) => new (alice.constructor as any)(duffy.url, basic('admin', key).replace(/^Basic/, scheme)).get(`${V1}/tenants`);
      for (const scheme of ['basic', 'BASIC', 'bAsIc']) expect((await admin(scheme)).status).toBe(200);
      expect((await admin('basic', 'not-the-key')).status).toBe(401);
    });

    it.each(cases)('%s', async (_name, send, status, detail) => {
      const r = await send();
      expect(r.status).toBe(status);
      expect(typeof r.body.detail).toBe('string');
      expect(r.body.detail).toMatch(detail);
      // Every refusal says its kind, for scripts (a 401 as much as a 422 of Duffy's own rules).
      expect(r.headers.get('duffy-refusal')).toMatch(status === 401 ? /^unauthorized$/ : /^[a-z_]+$/);
    });
  });
});
