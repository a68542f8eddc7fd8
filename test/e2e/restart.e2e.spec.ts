import { describe, expect, it } from '@jest/globals';
import { type Running, startDuffy } from '../support/server.js';

const V1 = '/api/v1';

describe('restart', () => {
  it('comes back with every tenant, session and machine state as before', async () => {
    let duffy: Running = await startDuffy();
    const key = (await duffy.admin.post(`${V1}/tenants`, { name: 'alice', ssh_key: 'ssh-ed25519 AAAA alice', node_quota: 4 })).body.tenant.api_key;
    let alice = duffy.client('alice', key);
    const kept = (await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 2 }] })).body.session;
    const ended = (await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session;
    await alice.put(`${V1}/sessions/${ended.id}`, { active: false });
    await alice.put(`${V1}/sessions/${kept.id}`, { expires_at: '+8h' });
    const snapshot = async () => ({
      tenants: (await duffy.admin.get(`${V1}/tenants`)).body,
      sessions: (await duffy.admin.get(`${V1}/sessions`)).body,
      nodes: (await duffy.admin.get(`${V1}/nodes`)).body,
      kept: (await alice.get(`${V1}/sessions/${kept.id}`)).body,
      ended: (await alice.get(`${V1}/sessions/${ended.id}`)).body,
    });
    const before = await snapshot();
    const dataDir = duffy.dataDir;
    await duffy.close();

    duffy = await startDuffy({ dataDir });
    try {
      // The same API key still works.
      alice = duffy.client('alice', key);
      expect(await snapshot()).toEqual(before);
      // Ids keep counting up; nothing is handed out twice.
      const next = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 1 }] });
      expect(next.status).toBe(201);
      expect(next.body.session.id).toBe(ended.id + 1);
      expect(kept.nodes.map((n: { hostname: string }) => n.hostname)).not.toContain(next.body.session.nodes[0].hostname);
    } finally {
      await duffy.close();
    }
  });
});
