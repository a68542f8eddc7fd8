import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ledger } from '../../src/application/ledger.service.js';
import { MAX_BODY_BYTES } from '../../src/http/input.js';
import { ADMIN_KEY, Client, type Running, basic, instantDemoConfig, ledgerEvents, newTenant, startDuffy } from '../support/server.js';

/** Issue 10 (input and secrets) and issue 14's strict bodies, item by item, through HTTP. */
const V1 = '/api/v1';
const HOUR = 3600_000;
jest.setTimeout(60_000);


/** Bytes over a socket, for what fetch cannot send (CONNECT, no Host): all that comes back until the server closes. */
const overSocket = (duffy: Running, text: string) =>
  new Promise<string>((resolve) => {
    const socket = connect(Number(new URL(duffy.url).port), '127.0.0.1', () => socket.write(text));
    let got = '';
    socket.on('data', (d) => (got += d));
    socket.on('close', () => resolve(got));
    socket.on('error', () => undefined);
  });

/** A raw request: exact bytes, any headers. */
const raw = (duffy: Running, method: string, path: string, body: string | undefined, headers: Record<string, string> = {}) =>
  new Client(duffy.url).call(method, path, undefined, body, headers);

describe('hardened API input (issue 10 items 1-9, 11; issue 14 strict bodies)', () => {
  let duffy: Running;
  let alice: Client;
  let aliceAuth: string;
  let quota2: Client;
  let aliceId: number;

  beforeAll(async () => {
    duffy = await startDuffy();
    const a = await duffy.admin.post(`${V1}/tenants`, { name: 'alice', ssh_key: 'ssh-ed25519 AAAA alice@ci' });
    aliceAuth = basic('alice', a.body.tenant.api_key);
    aliceId = a.body.tenant.id;
    alice = duffy.client('alice', a.body.tenant.api_key);
    quota2 = await newTenant(duffy, 'small', { node_quota: 2 });
  });
  afterAll(() => duffy.close());

  const end = (c: Client, id: number) => c.put(`${V1}/sessions/${id}`, { active: false });

  describe('item 1: every element of nodes_specs is a validated object', () => {
    it.each([
      ['[[]]', [[]]],
      ['[[{pool, quantity}]]', [[{ pool: 'metal-intel-x86_64', quantity: 1 }]]],
      ['[null]', [null]],
      ['["x"]', ['x']],
      ['[1]', [1]],
      ['[{}, []]', [{ pool: 'metal-intel-x86_64', quantity: 1 }, []]],
    ])('%s is a 422 naming nodes_specs, and takes nothing', async (_, specs) => {
      const before = duffy.app.get(Ledger).world.position;
      for (const wait of [undefined, 600]) {
        const r = await quota2.post(`${V1}/sessions`, { nodes_specs: specs, ...(wait ? { wait } : {}) });
        expect(r.status).toBe(422);
        expect(r.body.detail).toMatch(/nodes_specs/);
      }
      expect(duffy.app.get(Ledger).world.position).toBe(before);
    });

    it('a tenant with quota 2 holding one node gets one more, not the family', async () => {
      const one = await quota2.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 1 }] });
      expect(one.status).toBe(201);
      const over = await quota2.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 2 }] });
      expect(over.status).toBe(403);
      const held = [...duffy.app.get(Ledger).world.machines.values()].filter((m) => m.tenantId === one.body.session.tenant.id && m.sessionId !== null);
      expect(held).toHaveLength(1);
      await end(quota2, one.body.session.id);
    });
  });

  describe('item 2: a JSON null means "not given" (duffy 3.3.9 client bodies, byte for byte)', () => {
    it('POST /sessions {"tenant_id": null, ...} and PUT {"active": false, "expires_at": null} work', async () => {
      // duffy 3.3.9: SessionCreateModel(nodes_specs=...).dict() sent by httpx, fields in declaration order.
      const created = await raw(duffy, 'POST', `${V1}/sessions`, '{"tenant_id": null, "nodes_specs": [{"quantity": 1, "pool": "vm-intel-x86_64"}]}', { authorization: aliceAuth });
      expect(created.status).toBe(201);
      const id = created.body.session.id;
      // duffy 3.3.9 retire_session: SessionUpdateModel(active=False).dict().
      const retired = await raw(duffy, 'PUT', `${V1}/sessions/${id}`, '{"active": false, "expires_at": null}', { authorization: aliceAuth });
      expect(retired.status).toBe(200);
      expect(retired.body.session.active).toBe(false);
      // httpx 0.28+ sends the same bodies without spaces.
      const compact = await raw(duffy, 'POST', `${V1}/sessions`, '{"tenant_id":null,"nodes_specs":[{"quantity":1,"pool":"vm-intel-x86_64"}]}', { authorization: aliceAuth });
      expect(compact.status).toBe(201);
      const done = await raw(duffy, 'PUT', `${V1}/sessions/${compact.body.session.id}`, '{"active":false,"expires_at":null}', { authorization: aliceAuth });
      expect(done.status).toBe(200);
    });

    it('null in optional fields of other bodies is "not given" too', async () => {
      const t = await duffy.admin.post(`${V1}/tenants`, { name: 'nulls', ssh_key: 'ssh-rsa AAAA n', is_admin: null, node_quota: null, session_lifetime: null, session_lifetime_max: null });
      expect(t.status).toBe(201);
      expect(t.body.tenant).toMatchObject({ is_admin: false, node_quota: null });
      const u = await duffy.admin.put(`${V1}/tenants/${t.body.tenant.id}`, { ssh_key: null, node_quota: 3, active: null, api_key: null });
      expect(u.status).toBe(200);
      expect(u.body.tenant).toMatchObject({ node_quota: 3, active: true });
      // Duffy v3 shows the key masked after a change that issued none.
      expect(u.body.tenant.api_key).toBe('**********');
      const s = await alice.post(`${V1}/sessions`, { tenant_id: null, wait: null, nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1, type: null, arch: null, platform: null }] });
      expect(s.status).toBe(201);
      // Nothing given, nothing changed: the session as it is (Duffy v3's answer).
      const same = await alice.put(`${V1}/sessions/${s.body.session.id}`, { expires_at: null });
      expect([same.status, same.body.session.expires_at]).toEqual([200, s.body.session.expires_at]);
      await end(alice, s.body.session.id);
      // A required field that is null is still missing.
      const missing = await duffy.admin.post(`${V1}/tenants`, { name: null, ssh_key: 'x' });
      expect(missing.status).toBe(422);
      expect(missing.body.detail).toMatch(/^name:/);
    });
  });

  describe('item 3: Duffy v3 extend semantics', () => {
    it('"+1h" adds to the current expiry (never shortens), then clamps to created_at + lifetime max', async () => {
      const s = (await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-amd-x86_64', quantity: 1 }] })).body.session;
      const created = Date.parse(s.created_at);
      expect(Date.parse(s.expires_at) - created).toBe(6 * HOUR);
      // Our CLI's `duffy extend ID +1h` body, exact bytes.
      const plus1h = await raw(duffy, 'PUT', `${V1}/sessions/${s.id}`, '{"expires_at":"+1h"}', { authorization: aliceAuth });
      expect(plus1h.status).toBe(200);
      expect(Date.parse(plus1h.body.session.expires_at) - created).toBe(7 * HOUR);
      const plus2m = await alice.put(`${V1}/sessions/${s.id}`, { expires_at: '+2m' });
      expect(Date.parse(plus2m.body.session.expires_at) - created).toBe(7 * HOUR + 2 * 60_000);
      const compound = await alice.put(`${V1}/sessions/${s.id}`, { expires_at: '+1h30m' });
      expect(Date.parse(compound.body.session.expires_at) - created).toBe(8 * HOUR + 32 * 60_000);
      const clamped = await alice.put(`${V1}/sessions/${s.id}`, { expires_at: '+10h' });
      expect(Date.parse(clamped.body.session.expires_at) - created).toBe(12 * HOUR);
      // An ISO time sets the expiry (clamped too).
      const at = new Date(created + 9 * HOUR).toISOString();
      expect((await alice.put(`${V1}/sessions/${s.id}`, { expires_at: at })).body.session.expires_at).toBe(at);
      await end(alice, s.id);
    });

    it('cico /Node/fail extends the current expiry by 6 h (clamped)', async () => {
      const t = await duffy.admin.post(`${V1}/tenants`, { name: 'cico-ext', ssh_key: 'ssh-rsa AAAA c', session_lifetime: 3600, session_lifetime_max: 86400 });
      const key = t.body.tenant.api_key;
      const got = await raw(duffy, 'GET', `/Node/get?key=${key}&arch=x86_64&ver=7&count=1`, undefined);
      expect(got.status).toBe(200);
      const before = (await duffy.admin.get(`${V1}/sessions/${got.body.ssid}`)).body.session;
      expect(Date.parse(before.expires_at) - Date.parse(before.created_at)).toBe(HOUR);
      expect((await raw(duffy, 'GET', `/Node/fail?key=${key}&ssid=${got.body.ssid}`, undefined)).body).toBe('Done');
      const after = (await duffy.admin.get(`${V1}/sessions/${got.body.ssid}`)).body.session;
      expect(Date.parse(after.expires_at) - Date.parse(after.created_at)).toBe(7 * HOUR);
      await raw(duffy, 'GET', `/Node/done?key=${key}&ssid=${got.body.ssid}`, undefined);
    });
  });

  describe('item 4: every number is bounded', () => {
    it.each([
      ['session_lifetime', 1e308],
      ['session_lifetime', 1e21],
      ['session_lifetime', 9007199254740993],
      ['session_lifetime', 31 * 86400],
      ['session_lifetime_max', 1e21],
      ['session_lifetime', 90.5],
      ['session_lifetime', 'soon'],
      ['session_lifetime', '-1h'],
      ['session_lifetime', '31d'],
      ['node_quota', 1e9],
      ['node_quota', -1],
      ['node_quota', true],
    ])('tenant %s = %p is a 422 naming the field, on create and update', async (field, value) => {
      const c = await duffy.admin.post(`${V1}/tenants`, { name: `n-${String(field).length}-${String(value).length}`, ssh_key: 'x', [field]: value });
      expect(c.status).toBe(422);
      expect(c.body.detail).toMatch(new RegExp(`^${field}: `));
      const u = await duffy.admin.put(`${V1}/tenants/1`, { [field]: value });
      expect(u.status).toBe(422);
    });

    it('lifetimes may be durations, as Duffy v3 takes them', async () => {
      const c = await duffy.admin.post(`${V1}/tenants`, { name: 'durations', ssh_key: 'x', session_lifetime: '2h', session_lifetime_max: '1d 12H' });
      expect(c.body.tenant).toMatchObject({ session_lifetime: 7200, session_lifetime_max: 129600 });
      const u = await duffy.admin.put(`${V1}/tenants/${c.body.tenant.id}`, { session_lifetime: '3600' });
      expect(u.body.tenant.session_lifetime).toBe(3600);
      expect((await duffy.admin.put(`${V1}/tenants/${c.body.tenant.id}`, { session_lifetime: 'soon' })).body.detail).toBe('session_lifetime: session_lifetime must be whole seconds or a duration like "6h" or "1d 12h"');
    });

    it('30 days is accepted; requests of that tenant then work', async () => {
      const c = await duffy.admin.post(`${V1}/tenants`, { name: 'long', ssh_key: 'x', session_lifetime: 30 * 86400, session_lifetime_max: 30 * 86400 });
      expect(c.status).toBe(201);
      const long = duffy.client('long', c.body.tenant.api_key);
      const s = await long.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 1 }] });
      expect(s.status).toBe(201);
      await end(long, s.body.session.id);
    });

    it.each([
      { wait: 3601 },
      { wait: -1 },
      { wait: 1e21 },
      { tenant_id: 1e21 },
      { tenant_id: 0 },
    ])('session body %p is a 422', async (extra) => {
      const r = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }], ...extra });
      expect(r.status).toBe(422);
    });

    // A string of digits is a number, as pydantic reads it (see compat.e2e); other strings are not.
    it.each([0, 1001, 1.5, 1e21, '1.5', '0x2', '1e1', 'one', '', '2000'])('quantity %p is a 422', async (quantity) => {
      const r = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity }] });
      expect(r.status).toBe(422);
      expect(r.body.detail).toMatch(/^nodes_specs\[0\]\.quantity: /);
    });

    it('legacy count takes decimal digits only', async () => {
      const t = await duffy.admin.post(`${V1}/tenants`, { name: 'cico-count', ssh_key: 'x' });
      for (const count of ['0x2', '1e0', '%202', '2.0', '-1', '999999999999']) {
        const r = await raw(duffy, 'GET', `/Node/get?key=${t.body.tenant.api_key}&count=${count}`, undefined);
        expect(r).toMatchObject({ status: 200, body: 'Failed to allocate nodes' });
      }
      expect((await raw(duffy, 'GET', `/Inventory?key=${t.body.tenant.api_key}`, undefined)).body).toEqual([]);
    });
  });

  describe('a body with many members (each unknown field cost class-validator microseconds, one object\'s grow with their square)', () => {
    const admin = { authorization: basic('admin', '00000000-0000-4000-8000-000000000001') };
    const fields = (n: number) => Array.from({ length: n }, (_, i) => `"k${i}": 1`).join(', ');

    it('80,000 unknown fields (under 1 MB) are a 422 at once, before parsing', async () => {
      const r = await raw(duffy, 'POST', `${V1}/sessions`, `{"nodes_specs": [{"pool": "vm-intel-x86_64", "quantity": 1}], ${fields(80_000)}}`, admin);
      expect([r.status, r.body.detail]).toEqual([422, 'request body has more than 2000 members (fields and array elements, in all)']);
      const nested = await raw(duffy, 'PUT', `${V1}/sessions/1`, `{"expires": {${fields(70_000)}}}`, admin);
      expect([nested.status, nested.body.detail]).toEqual([422, 'request body has more than 2000 members (fields and array elements, in all)']);
    });

    it('under the bound, a refusal names 10 unknown fields and counts the rest', async () => {
      const r = await raw(duffy, 'POST', `${V1}/sessions`, `{"nodes_specs": [{"pool": "vm-intel-x86_64", "quantity": 1}], ${fields(1500)}}`, admin);
      expect(r.status).toBe(422);
      expect(r.body.detail).toMatch(/^k0: unknown field \(not part of this request body\); (k\d+: unknown field \(not part of this request body\); ){9}and 1490 more$/);
    });
  });

  describe('item 5: deep nesting', () => {
    const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
    it.each([
      ['in an unknown field', `{"nodes_specs": [{"pool": "vm-intel-x86_64", "quantity": 1}], "x": ${deep(1300)}}`],
      ['as the body', deep(1300)],
      ['in node data', `{"hostname": "deep.test", "pool": "vm-intel-x86_64", "data": {"a": ${deep(200)}}}`],
      ['very deep', deep(200_000)],
    ])('a body nested ~1,300 levels %s is a 422 before it is transformed', async (_, body) => {
      for (const path of [`${V1}/sessions`, `${V1}/nodes`]) {
        const r = await raw(duffy, 'POST', path, body, { authorization: basic('admin', '00000000-0000-4000-8000-000000000001') });
        expect(r.status).toBe(422);
        expect(r.body.detail).toMatch(/nested deeper than 32 levels/);
      }
    });

    it('a body in another charset than UTF-8 is a 415, however it is nested (the scan reads UTF-8 only)', async () => {
      const body = Buffer.from(`{"nodes_specs": [{"pool": "vm-intel-x86_64", "quantity": 1}], "x\u4122": ${deep(2000)}, "y": "z"}`, 'utf16le');
      // One that body-parser cannot decode at all said `unsupported charset "LATIN1"`: the same refusal, in other words.
      for (const charset of ['utf-16le', 'UTF-16', 'latin1', 'x-unknown']) {
        const res = await fetch(`${duffy.url}${V1}/sessions`, { method: 'POST', body, headers: { 'content-type': `application/json; charset=${charset}`, authorization: basic('admin', '00000000-0000-4000-8000-000000000001') } });
        expect(res.status).toBe(415);
        expect(((await res.json()) as { detail: string }).detail).toBe(`JSON bodies must be UTF-8, not ${charset.toLowerCase()}`);
      }
      const utf8 = await raw(duffy, 'POST', `${V1}/tenants`, JSON.stringify({ name: 'charset-utf8', ssh_key: 'x' }), { 'content-type': 'application/json; charset=UTF-8', authorization: basic('admin', '00000000-0000-4000-8000-000000000001') });
      expect(utf8.status).toBe(201);
      // Other names of UTF-8, and of ASCII, which it contains, as FastAPI reads them (body-parser alone refuses them).
      for (const [i, charset] of ['UTF8', 'utf8', '"utf8"', 'us-ascii', 'ASCII'].entries()) {
        const res = await raw(duffy, 'POST', `${V1}/tenants`, JSON.stringify({ name: `charset-alias-${i}`, ssh_key: 'x' }), { 'content-type': `application/json; charset=${charset}`, authorization: basic('admin', '00000000-0000-4000-8000-000000000001') });
        expect([charset, res.status]).toEqual([charset, 201]);
      }
    });

    it('brackets inside strings do not count', async () => {
      const r = await raw(duffy, 'POST', `${V1}/tenants`, JSON.stringify({ name: 'brackets', ssh_key: '['.repeat(5000) }), { authorization: basic('admin', '00000000-0000-4000-8000-000000000001') });
      expect(r.status).toBe(201);
    });
  });

  describe('a tenant\'s ssh_key is public keys only', () => {
    const privateKey = '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n';
    it.each([
      ['an OpenSSH private key', privateKey, /private key: give the public one/],
      ['a PEM RSA private key after a public one', 'ssh-ed25519 AAAA ok\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n', /private key/],
      ['a control character', 'ssh-ed25519 AAAA a\u001b[2Jb', /control characters/],
      // PuTTYgen's "Export ssh.com key" (four dashes and spaces) and a PGP key block: no five-dash PEM line.
      ['an ssh.com private key', '---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----\nComment: "rsa-key"\nP2/56wAAA\n---- END SSH2 ENCRYPTED PRIVATE KEY ----\n', /private key/],
      ['a PGP private key block', '-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----\n', /private key/],
      ['an OpenSSH private key body pasted without its armour lines', 'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDg\n', /private key/],
    ])('%s is a 422 on create and on update, and nothing reaches the ledger', async (_, key, detail) => {
      const before = duffy.app.get(Ledger).world.position;
      const created = await duffy.admin.post(`${V1}/tenants`, { name: 'keyed', ssh_key: key });
      expect(created.status).toBe(422);
      expect(created.body.detail).toMatch(detail);
      const updated = await duffy.admin.put(`${V1}/tenants/${aliceId}`, { ssh_key: key });
      expect(updated.status).toBe(422);
      expect(updated.body.detail).toMatch(detail);
      expect(duffy.app.get(Ledger).world.position).toBe(before);
    });

    it('several public keys, one per line (CRLF too), are taken', async () => {
      const r = await duffy.admin.put(`${V1}/tenants/${aliceId}`, { ssh_key: 'ssh-ed25519 AAAA alice@ci\r\n\tssh-rsa AAAA alice@laptop\n' });
      expect(r.status).toBe(200);
      const rfc4716 = await duffy.admin.put(`${V1}/tenants/${aliceId}`, { ssh_key: '---- BEGIN SSH2 PUBLIC KEY ----\nAAAAB3NzaC1yc2E\n---- END SSH2 PUBLIC KEY ----\n' });
      expect(rfc4716.status).toBe(200);
    });
  });

  describe('item 6: path ids are integers, read as Duffy v3 (pydantic) reads them', () => {
    it.each(['0x1', '1e0', '0b1', '-1', '99999999999999999999', '1abc', '1.5', '1__0'])('%s is a 422 on every controller, never tenant 1', async (id) => {
      for (const path of [`${V1}/tenants/${id}`, `${V1}/sessions/${id}`, `${V1}/nodes/${id}`]) {
        const r = await duffy.admin.get(path);
        expect([404, 422]).toContain(r.status);
        expect(r.body.detail).toMatch(/integer from 0 to|not found/);
      }
      expect((await duffy.admin.put(`${V1}/tenants/${id}`, { node_quota: 5 })).status).toBe(422);
      expect((await duffy.admin.put(`${V1}/sessions/${id}`, { active: false })).status).toBe(422);
    });

    it.each(['01', '+1', '1.0', '%201', '1%20'])('%s is 1, as pydantic reads an int (Duffy v3 answered with tenant 1)', async (id) => {
      const r = await duffy.admin.get(`${V1}/tenants/${id}`);
      expect([r.status, r.body.tenant?.id]).toEqual([200, 1]);
    });

    it('canonical ids still resolve', async () => {
      expect((await duffy.admin.get(`${V1}/tenants/1`)).status).toBe(200);
      expect((await duffy.admin.get(`${V1}/nodes/1`)).status).toBe(200);
    });
  });

  describe('item 7: X-Request-Id is bounded', () => {
    it('a 12 KB id is neither echoed nor stored; a sane one is both', async () => {
      const huge = 'A'.repeat(12 * 1024);
      const r = await raw(duffy, 'POST', `${V1}/sessions`, JSON.stringify({ nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] }), { authorization: aliceAuth, 'x-request-id': huge });
      expect(r.status).toBe(201);
      expect(r.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
      const sane = await raw(duffy, 'PUT', `${V1}/sessions/${r.body.session.id}`, '{"active": false}', { authorization: aliceAuth, 'x-request-id': 'jenkins-job-42' });
      expect(sane.headers.get('x-request-id')).toBe('jenkins-job-42');
      for (const bad of ['has space', 'tab\there', 'é'.repeat(3), 'x'.repeat(129)]) {
        // fetch sends every one of these (tab and Latin-1 are legal in a header value): each must be answered.
        const b = await fetch(duffy.url + `${V1}/pools`, { headers: { authorization: aliceAuth, 'x-request-id': bad } });
        expect({ bad, status: b.status, id: b.headers.get('x-request-id') }).toEqual({ bad, status: 200, id: expect.stringMatching(/^[0-9a-f-]{36}$/) });
      }
      // The legacy calls (no Basic auth) record the same bounded id.
      const t = await duffy.admin.post(`${V1}/tenants`, { name: 'cico-rid', ssh_key: 'x' });
      const got = await raw(duffy, 'GET', `/Node/get?key=${t.body.tenant.api_key}`, undefined, { 'x-request-id': 'cico-run-7' });
      await raw(duffy, 'GET', `/Node/done?key=${t.body.tenant.api_key}&ssid=${got.body.ssid}`, undefined, { 'x-request-id': huge });
      const meta = (await ledgerEvents(duffy)).map((e) => JSON.stringify(e.metadata));
      expect(meta.some((m) => m.includes('AAAAAAAAAA'))).toBe(false);
      expect(meta.some((m) => m.includes('jenkins-job-42'))).toBe(true);
      expect(meta.some((m) => m.includes('cico-run-7'))).toBe(true);
      expect(Math.max(...meta.map((m) => m.length))).toBeLessThan(1024);
    });
  });

  describe('item 11: node data and node lists', () => {
    it('tenants see only the nodes they hold, and never credentials; admins see all', async () => {
      const data = { ipmi_host: 'bmc.test', ipmi_user: 'root', ipmi_password: 'hunter2', secrets: { root_pw: 'x' }, nested: { api_token: 'tok', rack: 'r1' }, rack: 'r9' };
      const n = await duffy.admin.post(`${V1}/nodes`, { hostname: 'secret-1.test', pool: 'metal-arm-aarch64', data });
      expect(n.status).toBe(201);
      const id = n.body.node.id;
      expect((await duffy.admin.get(`${V1}/nodes/${id}`)).body.node.data).toEqual(data);
      // Not held: invisible.
      expect((await alice.get(`${V1}/nodes/${id}`)).status).toBe(404);
      expect((await alice.get(`${V1}/nodes`)).body.nodes).toEqual([]);
      // Held: visible, without credentials anywhere the tenant looks.
      const pool = (await duffy.admin.get(`${V1}/nodes`)).body.nodes.filter((x: { pool: string; state: string }) => x.pool === 'metal-arm-aarch64' && x.state === 'ready');
      const s = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-arm-aarch64', quantity: pool.length }] });
      expect(s.status).toBe(201);
      const mine = (await alice.get(`${V1}/nodes`)).body.nodes;
      expect(mine.map((x: { id: number }) => x.id).sort()).toEqual(s.body.session.nodes.map((x: { id: number }) => x.id).sort());
      const shown = [JSON.stringify(s.body), JSON.stringify(mine), JSON.stringify((await alice.get(`${V1}/nodes/${id}`)).body), JSON.stringify((await alice.get(`${V1}/sessions/${s.body.session.id}`)).body)].join();
      expect(shown).toContain('secret-1.test');
      expect(shown).toContain('r9');
      for (const secret of ['hunter2', 'root_pw', 'tok', 'ipmi_password', 'api_token']) expect(shown).not.toContain(secret);
      expect((await alice.get(`${V1}/nodes/${id}`)).body.node.data).toEqual({ ipmi_host: 'bmc.test', ipmi_user: 'root', nested: { rack: 'r1' }, rack: 'r9' });
      expect((await duffy.admin.get(`${V1}/nodes`)).body.nodes.length).toBeGreaterThan(mine.length);
      await end(alice, s.body.session.id);
    });
  });

  describe('unknown paths', () => {
    it.each(['/nonexistent', '/ops/nonexistent', '/Node/nonexistent', `${V1}/nonexistent`])('%s is a JSON 404 with a detail, like every other answer', async (path) => {
      const r = await raw(duffy, 'GET', path, undefined, { authorization: aliceAuth });
      expect(r.status).toBe(404);
      expect(r.headers.get('content-type')).toMatch(/^application\/json/);
      expect(r.body).toEqual({ detail: `Cannot GET ${path}` });
    });

    it('a query string stays out of the 404 detail', async () => {
      const r = await raw(duffy, 'GET', '/Node/nonexistent?key=secret-key', undefined);
      expect(r.status).toBe(404);
      expect(r.body).toEqual({ detail: 'Cannot GET /Node/nonexistent' });
    });

    // FastAPI (Duffy v3) answers a known path asked with another method 405, with the methods it serves in Allow.
    it.each([
      ['DELETE', `${V1}/sessions`, 'GET, HEAD, POST'],
      ['DELETE', `${V1}/sessions/1`, 'GET, HEAD, PUT'],
      ['PATCH', `${V1}/tenants/1`, 'GET, HEAD, PUT'],
      ['POST', '/health', 'GET, HEAD'],
      ['DELETE', '/Node/get?key=secret-key', 'GET'],
    ])('%s %s is a 405 that names the methods served', async (method, path, allow) => {
      const r = await raw(duffy, method, path, undefined, { authorization: aliceAuth });
      expect(r.status).toBe(405);
      expect(r.headers.get('allow')).toBe(allow);
      expect(r.body).toEqual({ detail: 'Method Not Allowed' });
    });

    // Node, with no 'connect' listener, closed the connection unanswered.
    it.each([
      [`CONNECT ${V1}/sessions`, /^HTTP\/1\.1 405 [^]*\r\nAllow: GET, HEAD, POST\r\n[^]*\r\n\r\n\{"detail":"Method Not Allowed"\}$/],
      ['CONNECT localhost:22', /^HTTP\/1\.1 404 [^]*\r\n\r\n\{"detail":"Cannot CONNECT localhost:22"\}$/],
    ])('%s (a proxy\'s method) is answered as any other method, and the connection closed', async (line, answer) => {
      expect(await overSocket(duffy, `${line} HTTP/1.1\r\nHost: duffy\r\nAuthorization: ${aliceAuth}\r\n\r\n`)).toMatch(answer);
    });

    // Node's own answer to it was a 417 without a body.
    it('an Expect other than 100-continue is a 417 in JSON, and the connection closed', async () => {
      expect(await overSocket(duffy, `POST ${V1}/sessions HTTP/1.1\r\nHost: duffy\r\nAuthorization: ${aliceAuth}\r\nExpect: 200-ok\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`)).toMatch(
        /^HTTP\/1\.1 417 [^]*\r\nContent-Type: application\/json[^]*\r\n\r\n\{"detail":"Expect: 200-ok is not served: only 100-continue"\}$/,
      );
    });

    // The answer came only once the whole declared body had arrived (or the request timed out, 408): a client could
    // stream on for as long as it liked. The body is never sent whole here, so any answer comes while it is unfinished;
    // overSocket resolves once the server has closed the connection.
    it('a body declared over 1 MB is a 413 as soon as its headers are read, and the connection closed', async () => {
      const head = `POST ${V1}/sessions HTTP/1.1\r\nHost: duffy\r\nAuthorization: ${aliceAuth}\r\nContent-Type: application/json\r\n`;
      expect(await overSocket(duffy, `${head}Content-Length: ${10 * MAX_BODY_BYTES}\r\n\r\n{"nodes_specs": [`)).toMatch(
        /^HTTP\/1\.1 413 [^]*\r\nConnection: close\r\n[^]*\r\n\r\n\{"detail":"request body too large"\}$/,
      );
      // Asked first with Expect: 100-continue: no 100 (which would have the client send it all), the 413 at once.
      expect(await overSocket(duffy, `${head}Expect: 100-continue\r\nContent-Length: ${10 * MAX_BODY_BYTES}\r\n\r\n`)).toMatch(
        /^HTTP\/1\.1 413 [^]*\r\nConnection: close\r\n[^]*\r\n\r\n\{"detail":"request body too large"\}$/,
      );
      // Within the limit, the 100 comes first and the body is read as ever.
      const small = '{"nodes_specs": []}';
      expect(await overSocket(duffy, `${head}Connection: close\r\nExpect: 100-continue\r\nContent-Length: ${small.length}\r\n\r\n${small}`)).toMatch(
        /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 422 [^]*\r\n\r\n\{"detail":"nodes_specs: nodes_specs must not be empty"\}$/,
      );
      // A chunked body declares no length: it is refused once it is past the limit, though it has not ended.
      const past = MAX_BODY_BYTES + 1;
      expect(await overSocket(duffy, `${head}Transfer-Encoding: chunked\r\n\r\n${past.toString(16)}\r\n${' '.repeat(past)}\r\n`)).toMatch(
        /^HTTP\/1\.1 413 [^]*\r\nConnection: close\r\n[^]*\r\n\r\n\{"detail":"request body too large"\}$/,
      );
      // One at the limit is read whole and parsed, as before.
      const json = '{"nodes_specs": []}'.padEnd(MAX_BODY_BYTES);
      expect(await overSocket(duffy, `${head}Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n${MAX_BODY_BYTES.toString(16)}\r\n${json}\r\n0\r\n\r\n`)).toMatch(/^HTTP\/1\.1 422 [^]*\r\n\r\n\{"detail":"nodes_specs: nodes_specs must not be empty"\}$/);
    });

    // Node's own answer to it was a 400 without a body; HTTP/1.0 has no Host to require.
    it('an HTTP/1.1 request without Host is a 400 in JSON, as every refusal', async () => {
      expect(await overSocket(duffy, `GET ${V1}/pools HTTP/1.1\r\nConnection: close\r\n\r\n`)).toMatch(/^HTTP\/1\.1 400 [^]*\r\nContent-Type: application\/json[^]*\r\n\r\n\{"detail":"an HTTP\/1\.1 request must name its Host \(RFC 9112\)"\}$/);
      expect(await overSocket(duffy, `GET ${V1}/pools HTTP/1.0\r\n\r\n`)).toMatch(/^HTTP\/1\.1 200 [^]*"pools":/);
    });
  });

  describe('issue 14: strict bodies', () => {
    it.each([
      ['a top-level field', { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }], priority: 10 }, /^priority: unknown field/],
      ['a field inside a spec', { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1, data: { a: 1 } }] }, /^nodes_specs\[0\]\.data: unknown field/],
      ['a field of the second spec', { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }, { pool: 'vm-intel-x86_64', quantity: 1, prio: 1 }] }, /^nodes_specs\[1\]\.prio: unknown field/],
    ])('%s is a 422 naming it', async (_, body, detail) => {
      const r = await alice.post(`${V1}/sessions`, body);
      expect(r.status).toBe(422);
      expect(r.body.detail).toMatch(detail);
    });

    it.each([
      ['hardware that is a list', { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1, hardware: Array.from({ length: 1000 }, () => ({})) }], wait: 5 }, 'nodes_specs[0].hardware: hardware must be an object like {"min_cpus": 8}'],
      ['an arch with control characters', { nodes_specs: [{ type: 'baremetal', arch: 'x\n\u001b[31mFORGED', quantity: 1 }], wait: 1 }, 'nodes_specs[0].arch: arch must be letters, digits, dot, dash or underscore'],
      ['a platform with a space', { nodes_specs: [{ type: 'vm', platform: 'in tel', quantity: 1 }] }, 'nodes_specs[0].platform: platform must be letters, digits, dot, dash or underscore'],
    ])('%s is a 422 naming it', async (_, body, detail) => {
      const r = await alice.post(`${V1}/sessions`, body);
      expect(r.status).toBe(422);
      expect(r.body.detail).toBe(detail);
    });

    it('every body refuses unknown fields', async () => {
      expect((await alice.put(`${V1}/sessions/1`, { active: false, reason: 'x' })).body.detail).toMatch(/^reason: unknown field/);
      expect((await duffy.admin.post(`${V1}/tenants`, { name: 'strict', ssh_key: 'x', quota: 3 })).body.detail).toMatch(/^quota: unknown field/);
      expect((await duffy.admin.put(`${V1}/tenants/1`, { is_admin: false })).body.detail).toMatch(/^is_admin: unknown field/);
      // `hardware` is a field of POST /nodes (issue 14); a hardware key at the top level is not.
      expect((await duffy.admin.post(`${V1}/nodes`, { hostname: 'strict.test', pool: 'vm-intel-x86_64', cpus: 4 })).body.detail).toMatch(/^cpus: unknown field/);
      // A node registered in a session's state was never handed out nor released, for good.
      expect(await duffy.admin.post(`${V1}/nodes`, { hostname: 'stuck.test', pool: 'vm-intel-x86_64', state: 'deployed' })).toMatchObject({
        status: 422,
        body: { detail: 'state: state must be one of unused, provisioning, ready, deprovisioning, done, failed' },
      });
    });

    // JSON.parse makes these plain members, and the body's transformation dropped them without a word.
    it.each([
      ['__proto__ at the top', '{"nodes_specs":[{"pool":"vm-intel-x86_64","quantity":1}],"__proto__":{"x":1}}', '__proto__'],
      ['constructor in a spec', '{"nodes_specs":[{"pool":"vm-intel-x86_64","quantity":1,"constructor":{"prototype":{"x":1}}}]}', 'nodes_specs[0].constructor'],
      ['toString in node-like data', '{"nodes_specs":[{"pool":"vm-intel-x86_64","quantity":1}],"x":{"toString":"y"}}', 'x.toString'],
      ['prototype deep down, beside a member named ""', '{"nodes_specs":[{"pool":"vm-intel-x86_64","quantity":1}],"":{"a":[{"b":{"prototype":1}}]}}', '"".a[0].b.prototype'],
    ])('a member named like prototype machinery (%s) is a 422 naming it by its path, and takes nothing', async (_, body, name) => {
      const before = duffy.app.get(Ledger).world.position;
      const r = await raw(duffy, 'POST', `${V1}/sessions`, body, { authorization: aliceAuth });
      expect(r.status).toBe(422);
      expect(r.body.detail).toBe(`${name}: unknown field (not part of this request body)`);
      expect(duffy.app.get(Ledger).world.position).toBe(before);
    });

    it('a body that is not an object is a 422 saying so, on every write (a null or missing "done" body answered 200 and left the machines held)', async () => {
      const s = await duffy.admin.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] });
      expect(s.status).toBe(201);
      const what = { null: 'null or nothing', '': 'null or nothing', '[]': 'a list', '"x"': 'a string', '1': 'a number', true: 'a boolean' };
      for (const [method, path] of [['POST', `${V1}/sessions`], ['PUT', `${V1}/sessions/${s.body.session.id}`], ['POST', `${V1}/tenants`], ['PUT', `${V1}/tenants/1`], ['POST', `${V1}/nodes`]]) {
        for (const [body, got] of Object.entries(what)) {
          const r = await raw(duffy, method, path, body, { authorization: basic('admin', ADMIN_KEY) });
          expect([method, path, body, r.status, r.body.detail]).toEqual([method, path, body, 422, `the body must be a JSON object, got ${got}`]);
        }
      }
      expect((await duffy.admin.get(`${V1}/sessions/${s.body.session.id}`)).body.session.active).toBe(true);
      await duffy.admin.put(`${V1}/sessions/${s.body.session.id}`, { active: false });
      // Not sent as JSON: no body for the validator, so a 422 too, never a 500.
      for (const type of ['text/plain', 'application/x-www-form-urlencoded', '']) {
        const r = await raw(duffy, 'POST', `${V1}/sessions`, 'nodes_specs=1', { authorization: aliceAuth, 'content-type': type });
        expect(r.status).toBe(422);
      }
      // curl -X PUT -d '{"active": false}' without a JSON type: refused, not a 200 that left the session running.
      const r = await raw(duffy, 'PUT', `${V1}/sessions/1`, '{"active": false}', { authorization: aliceAuth, 'content-type': 'application/x-www-form-urlencoded' });
      expect([r.status, r.body]).toEqual([422, { detail: 'the body was not read: send it as JSON with Content-Type: application/json (got Content-Type application/x-www-form-urlencoded)' }]);
    });
  });
});

describe('item 8: the last active admin stays', () => {
  let duffy: Running;
  beforeAll(async () => {
    duffy = await startDuffy();
  });
  afterAll(() => duffy.close());

  it('refuses to retire the last active admin (409), allows it once another admin exists', async () => {
    const r = await duffy.admin.put(`${V1}/tenants/1`, { active: false });
    expect(r.status).toBe(409);
    expect(r.body.detail).toMatch(/last active admin/);
    expect((await duffy.admin.get(`${V1}/tenants`)).status).toBe(200);
    // Another admin: now the first may go, and the second is then the last.
    const second = await duffy.admin.post(`${V1}/tenants`, { name: 'admin2', ssh_key: 'x', is_admin: true });
    const admin2 = duffy.client('admin2', second.body.tenant.api_key);
    // A retired admin does not count.
    expect((await duffy.admin.put(`${V1}/tenants/${second.body.tenant.id}`, { active: false })).status).toBe(200);
    expect((await duffy.admin.put(`${V1}/tenants/1`, { active: false })).status).toBe(409);
    expect((await duffy.admin.put(`${V1}/tenants/${second.body.tenant.id}`, { active: true })).status).toBe(200);
    expect((await duffy.admin.put(`${V1}/tenants/1`, { active: false })).status).toBe(200);
    expect((await admin2.put(`${V1}/tenants/${second.body.tenant.id}`, { active: false })).status).toBe(409);
    expect((await admin2.put(`${V1}/tenants/1`, { active: true })).status).toBe(200);
  });
});

describe('item 9: the legacy key never reaches the logs (built server, DUFFY_LOG_LEVEL=info)', () => {
  const MAIN = fileURLToPath(new URL('../../dist/src/main.js', import.meta.url));
  const freePort = () =>
    new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const { port } = srv.address() as { port: number };
        srv.close(() => resolve(port));
      });
    });

  it('logs requests with [Redacted] in place of the key, for good and bad keys', async () => {
    const port = await freePort();
    const env = { ...process.env, DUFFY_PORT: String(port), DUFFY_LOG_LEVEL: 'info', DUFFY_DATA_DIR: mkdtempSync(join(tmpdir(), 'duffy-log-')), DUFFY_CONFIG: instantDemoConfig(), DUFFY_ADMIN_KEY: ADMIN_KEY };
    const child = spawn(process.execPath, [MAIN], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    try {
      const url = `http://127.0.0.1:${port}`;
      for (let i = 0; i < 100 && !out.includes('listening on'); i++) await new Promise((r) => setTimeout(r, 100));
      const t = await fetch(`${url}/api/v1/tenants`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: basic('admin', ADMIN_KEY) }, body: JSON.stringify({ name: 'logged', ssh_key: 'x' }) }).then((r) => r.json() as Promise<any>);
      const key = t.tenant.api_key as string;
      const got = await fetch(`${url}/Node/get?key=${key}&ver=7&count=1`).then((r) => r.json() as Promise<any>);
      await fetch(`${url}/Node/done?key=${key}&ssid=${got.ssid}`);
      await fetch(`${url}/Node/done?key=${key}&ssid=0x1`);
      await fetch(`${url}/Inventory?key=ffffffff-0000-4000-8000-00000000dead`);
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      // A server that never started (no dist/: run `npm run build`) has exited already: no 'exit' event would come.
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    }
    expect(out).toContain('/Node/get?key=[Redacted]&ver=7&count=1');
    expect(out).not.toMatch(/key=[0-9a-f]{8}-/);
    expect(out).not.toContain('ffffffff-0000-4000-8000-00000000dead');
    expect(out).not.toContain(ADMIN_KEY);
    // Nest's wiring (a line per module and route) and its "successfully started", said before Duffy's own start-up
    // ran, are debug, not info: Duffy's "listening on" says it is up.
    expect(out).not.toContain('"context":"RouterExplorer"');
    expect(out).not.toContain('"context":"NestApplication"');
    expect(out).toMatch(/"context":"Duffy","msg":"listening on :/);
  });
});
