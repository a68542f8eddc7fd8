import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Running, newTenant, startDuffy } from '../support/server.js';

/** Admin changes met by tenants' requests at that moment: each a defect the chaos run (chaos.e2e.spec.ts) found. */
const V1 = '/api/v1';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('an admin changing a tenant while its request waits', () => {
  let duffy: Running;
  beforeAll(async () => {
    duffy = await startDuffy();
  });
  afterAll(() => duffy.close());

  it('given a waiting request and the quota lowered under held + asked, when the wait ends with machines free, then the 422 names the quota, not "0 available"', async () => {
    const pool = 'vm-intel-x86_64';
    const ready = (await duffy.admin.get(`${V1}/pools/${pool}`)).body.pool.levels.ready;
    const alice = await newTenant(duffy, 'alice', { node_quota: 3 });
    const hog = await newTenant(duffy, 'hog');
    const held = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool, quantity: 1 }] });
    const rest = await hog.post(`${V1}/sessions`, { nodes_specs: [{ pool, quantity: ready - 1 }] });
    expect([held.status, rest.status]).toEqual([201, 201]);
    const waiting = alice.post(`${V1}/sessions`, { nodes_specs: [{ pool, quantity: 2 }], wait: 2 });
    await sleep(300);
    expect((await duffy.admin.put(`${V1}/tenants/${held.body.session.tenant.id}`, { node_quota: 2 })).status).toBe(200);
    // Two machines free from here on: only the quota keeps the request from them (it may still wait: alice may give one back).
    expect((await hog.put(`${V1}/sessions/${rest.body.session.id}`, { active: false })).status).toBe(200);
    const answer = await waiting;
    expect(answer.status).toBe(422);
    // Before: `can't reserve nodes: waited until ...: pool vm-intel-x86_64: 2 requested, 0 available`, the reason it joined the queue.
    expect(answer.body.detail).toMatch(/^can't reserve nodes: waited until [^ ]+: quota exceeded: tenant alice has 1 of 2 nodes and asked for 2 more$/);
  });
});
