import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { type Client, type Running, newTenant, startDuffy } from '../support/server.js';

const V1 = '/api/v1';
const DECIDE = fileURLToPath(new URL('../../dist/src/domain/decide.js', import.meta.url));

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

  it('node_quota must be at least 1, as Duffy v3 has it (its TenantModel cannot parse 0)', async () => {
    const created = await duffy.admin.post(`${V1}/tenants`, { name: 'zero', ssh_key: 'ssh-ed25519 AAAA z', node_quota: 0 });
    expect([created.status, created.body.detail]).toEqual([422, 'node_quota: node_quota must be at least 1']);
    const t = (await duffy.admin.get(`${V1}/tenants`)).body.tenants.find((x: { name: string }) => x.name === 'alice');
    const changed = await duffy.admin.put(`${V1}/tenants/${t.id}`, { node_quota: 0 });
    expect([changed.status, changed.body.detail]).toEqual([422, 'node_quota: node_quota must be at least 1']);
    expect((await duffy.admin.get(`${V1}/tenants/${t.id}`)).body.tenant.node_quota).toBe(null);
  });
});
