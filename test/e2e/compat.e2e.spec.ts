import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ADMIN_KEY, type Client, type Running, basic, newTenant, startDuffy } from '../support/server.js';

const V1 = '/api/v1';
const DECIDE = fileURLToPath(new URL('../../dist/src/domain/decide.js', import.meta.url));
const V3_CLIENT = fileURLToPath(new URL('../compat/duffy_v3_client.py', import.meta.url));
/** The script needs python3 with pydantic 2 (Duffy v3's models are pydantic 2 models). */
const hasPydantic2 = spawnSync('python3', ['-c', 'import pydantic, sys; sys.exit(0 if pydantic.VERSION >= "2" else 1)']).status === 0;

/** Where Duffy v3's own sources say what a body means, and Duffy had read it otherwise. */
describe('Duffy v3 compatibility', () => {
  let duffy: Running;
  let alice: Client;

  beforeAll(async () => {
    duffy = await startDuffy();
    alice = await newTenant(duffy, 'alice');
  });
  afterAll(() => duffy.close());

  describe('expires_at as an ISO time (duffy/app/controllers/session.py: a time without an offset is UTC)', () => {
    it('on a host whose TZ is not UTC, "2030-01-01T10:00:00" is still 10:00 UTC (the built server, TZ=Asia/Tokyo)', () => {
      const script = `import { parseExpiry } from ${JSON.stringify(DECIDE)}; console.log(new Date(parseExpiry('2030-01-01T10:00:00', 0)).toISOString());`;
      const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, TZ: 'Asia/Tokyo' } });
      expect(out.toString().trim()).toBe('2030-01-01T10:00:00.000Z');
    });

    it('takes the forms pydantic takes ("YYYY-MM-DD HH:MM:SS", no offset) and sets that UTC time', async () => {
      const s = (await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session;
      // Within the lease's maximum, so nothing is clamped: created_at + 1 h, written as a pydantic client may write it.
      const target = new Date(Date.parse(s.created_at) + 3600_000);
      target.setUTCMilliseconds(0);
      const naive = target.toISOString().slice(0, 19).replace('T', ' ');
      const r = await alice.put(`${V1}/sessions/${s.id}`, { active: null, expires_at: naive });
      expect([r.status, r.body.session?.expires_at]).toEqual([200, target.toISOString()]);
      await alice.put(`${V1}/sessions/${s.id}`, { active: false, expires_at: null });
    });
  });

  it('takes a JSON body sent without a Content-Type, or as application/*+json, as FastAPI does (requests.post(data=...), Jenkins httpRequest)', async () => {
    const key = (await duffy.admin.post(`${V1}/tenants`, { name: 'untyped', ssh_key: 'ssh-ed25519 AAAA u', node_quota: 2 })).body.tenant.api_key;
    const authorization = basic('untyped', key);
    const body = JSON.stringify({ nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] });
    for (const type of [undefined, 'application/vnd.duffy+json; charset=utf-8']) {
      // A Buffer body: fetch adds no Content-Type of its own (a string would go as text/plain).
      const res = await fetch(`${duffy.url}${V1}/sessions`, { method: 'POST', headers: { authorization, ...(type ? { 'content-type': type } : {}) }, body: Buffer.from(body) });
      const answer = (await res.json()) as { session: { id: number } };
      expect([type, res.status]).toEqual([type, 201]);
      await duffy.client('untyped', key).put(`${V1}/sessions/${answer.session.id}`, { active: false });
    }
    // Not JSON by its type: left unparsed, as FastAPI leaves it (422).
    const form = await fetch(`${duffy.url}${V1}/sessions`, { method: 'POST', headers: { authorization, 'content-type': 'application/x-www-form-urlencoded' }, body });
    expect(form.status).toBe(422);
  });

  it('node_quota must be at least 1, as Duffy v3 has it (its TenantModel cannot parse 0)', async () => {
    const created = await duffy.admin.post(`${V1}/tenants`, { name: 'zero', ssh_key: 'ssh-ed25519 AAAA z', node_quota: 0 });
    expect([created.status, created.body.detail]).toEqual([422, 'node_quota: node_quota must be at least 1']);
    const t = (await duffy.admin.get(`${V1}/tenants`)).body.tenants.find((x: { name: string }) => x.name === 'alice');
    const changed = await duffy.admin.put(`${V1}/tenants/${t.id}`, { node_quota: 0 });
    expect([changed.status, changed.body.detail]).toEqual([422, 'node_quota: node_quota must be at least 1']);
    expect((await duffy.admin.get(`${V1}/tenants/${t.id}`)).body.tenant.node_quota).toBe(null);
  });

  // Every endpoint a Duffy v3 client or cico calls, sent as they send it, each answer parsed with Duffy v3's models.
  (hasPydantic2 ? it : it.skip)('every answer parses with Duffy v3\'s pydantic models (test/compat/duffy_v3_client.py)', async () => {
    const { stdout } = await promisify(execFile)('python3', [V3_CLIENT, duffy.url, 'admin', ADMIN_KEY]).catch((e: { stdout: string; stderr: string }) => {
      throw new Error(`${e.stdout}\n${e.stderr}`);
    });
    expect(stdout).toContain("all answers parse with Duffy v3's models");
  });
});
