import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { fileURLToPath } from 'node:url';
import { replay } from '../../src/audit/audit.js';
import { checkInvariants } from '../../src/audit/invariants.js';
import { type Client, type Running, ledgerFile, newTenant, startDuffy } from '../support/server.js';

const TWENTY = fileURLToPath(new URL('../fixtures/twenty.yaml', import.meta.url));
const V1 = '/api/v1';


describe('64 concurrent requests from 8 tenants over 20 ready machines', () => {
  let duffy: Running;
  let tenants: Client[];

  beforeAll(async () => {
    duffy = await startDuffy({ configFile: TWENTY });
    tenants = await Promise.all(Array.from({ length: 8 }, (_, i) => newTenant(duffy, `t${i}`)));
  });
  afterAll(() => duffy.close());

  it('hands out each machine once, answers the rest 422, and the ledger replay agrees', async () => {
    const replies = await Promise.all(
      Array.from({ length: 64 }, (_, i) =>
        // Mixed shapes: by pool, by type, two at once.
        tenants[i % 8].post(`${V1}/sessions`, {
          nodes_specs: [i % 3 === 0 ? { type: 'baremetal', quantity: 1 } : { pool: i % 2 ? 'metal-a' : 'metal-b', quantity: 1 + (i % 4 === 1 ? 1 : 0) }],
        }),
      ),
    );
    const statuses = replies.map((r) => r.status);
    expect(statuses.filter((s) => s >= 500)).toEqual([]);
    expect(statuses.every((s) => s === 201 || s === 422)).toBe(true);

    const won = replies.filter((r) => r.status === 201).map((r) => r.body.session);
    const handed = won.flatMap((s) => s.nodes.map((n: { hostname: string }) => n.hostname));
    expect(new Set(handed).size).toBe(handed.length);
    expect(handed.length).toBe(20);
    for (const r of replies.filter((x) => x.status === 422)) expect(r.body.detail).toMatch(/^can't reserve nodes: /);

    const ledger = await ledgerFile(`${duffy.dataDir}/ledger.sqlite`);
    expect(replay(ledger, { nodeQuota: 10, sessionLifetime: 3600, sessionLifetimeMax: 7200 })).toEqual([]);
    const reserved = ledger.filter((e) => e.type === 'MachineReserved').map((e) => e.data.hostname);
    expect(reserved.sort()).toEqual([...handed].sort());

    // Everyone gives back; then every machine is ready again.
    await Promise.all(won.map((s) => tenants.find((_, i) => `t${i}` === s.tenant.name)!.put(`${V1}/sessions/${s.id}`, { active: false })));
    const pools = await Promise.all(['metal-a', 'metal-b'].map((p) => duffy.admin.get(`${V1}/pools/${p}`)));
    expect(pools.map((p) => p.body.pool.levels.ready)).toEqual([10, 10]);
    expect(checkInvariants(await ledgerFile(`${duffy.dataDir}/ledger.sqlite`), { nodeQuota: 10, sessionLifetime: 3600, sessionLifetimeMax: 7200 })).toEqual([]);
  });

  it('extends one session from 8 clients at once: every extension lands, none is refused as a conflict', async () => {
    const asked = await tenants[0].post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-a', quantity: 1 }] });
    expect(asked.status).toBe(201);
    const { id, expires_at: before } = asked.body.session;
    const replies = await Promise.all(Array.from({ length: 8 }, () => tenants[0].put(`${V1}/sessions/${id}`, { expires_at: '+1m' })));
    expect(replies.map((r) => r.status)).toEqual(Array(8).fill(200));
    const after = (await tenants[0].get(`${V1}/sessions/${id}`)).body.session.expires_at;
    expect(Date.parse(after) - Date.parse(before)).toBe(8 * 60_000);
    await tenants[0].put(`${V1}/sessions/${id}`, { active: false });
  });
});
