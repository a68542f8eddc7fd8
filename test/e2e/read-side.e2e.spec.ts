import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { PROJECTIONS } from '../../projections/index.js';
import { Ledger } from '../../src/application/ledger.service.js';
import { recentMachineTimeMs } from '../../src/domain/world.js';
import { ReadSide } from '../../src/application/read-side.service.js';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { type Client, type Running, instantDemoConfig, newTenant, startDuffy } from '../support/server.js';

const V1 = '/api/v1';

async function snapshot(readSide: ReadSide) {
  const out: Record<string, unknown[]> = {};
  for (const p of PROJECTIONS) for (const c of p.collections) out[c] = await readSide.store.find(c);
  return out;
}

describe('read side: projections over a mixed workload', () => {
  let duffy: Running;
  let tenants: Client[];

  beforeAll(async () => {
    duffy = await startDuffy();
    tenants = [await newTenant(duffy, 'alice'), await newTenant(duffy, 'bob'), await newTenant(duffy, 'carol', { node_quota: 1 })];
    const ids: Array<[Client, number]> = [];
    for (let round = 0; round < 3; round++) {
      for (const [i, t] of tenants.entries()) {
        const r = await t.post(`${V1}/sessions`, { nodes_specs: [i === 1 ? { type: 'vm', quantity: 1 } : { type: 'baremetal', arch: 'x86_64', quantity: 1 }] });
        if (r.status === 201) ids.push([t, r.body.session.id]);
      }
      // Release every other session; the rest stay active.
      for (const [t, id] of ids.splice(0, 2)) await t.put(`${V1}/sessions/${id}`, { active: false });
    }
    await tenants[2].post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 5 }] }); // over quota: 403
    const bob = (await duffy.admin.get(`${V1}/tenants`)).body.tenants.find((t: { name: string }) => t.name === 'bob');
    await duffy.admin.put(`${V1}/tenants/${bob.id}`, { active: false });
  });
  afterAll(() => duffy.close());

  it('serves stress and fairness figures from the projections', async () => {
    const stress = await duffy.admin.get(`${V1}/stats/stress`);
    expect(stress.status).toBe(200);
    const allocations = stress.body.machines.reduce((n: number, m: { allocations: number }) => n + m.allocations, 0);
    const world = duffy.app.get(Ledger).world;
    expect(allocations).toBe([...world.machines.values()].reduce((n, m) => n + m.allocations, 0));
    for (const p of stress.body.pools) expect(p.busy_gini).toBeGreaterThanOrEqual(0);
    // Every machine names its platform, one never handed out too (its pool's).
    const never = stress.body.machines.find((m: { allocations: number }) => m.allocations === 0);
    expect(never).toBeDefined();
    const pools = (await duffy.admin.get(`${V1}/pool-profiles`)).body.pool_profiles as Array<{ name: string; platform: string }>;
    for (const m of stress.body.machines as Array<{ pool: string; platform: string | null }>) expect([m.pool, m.platform]).toEqual([m.pool, pools.find((p) => p.name === m.pool)!.platform]);
    const fair = await duffy.admin.get(`${V1}/stats/fairness`);
    expect(fair.status).toBe(200);
    expect(fair.body.tenants.map((t: { tenant: string }) => t.tenant).sort()).toEqual(['admin', 'alice', 'bob', 'carol']);
    const alice = fair.body.tenants.find((t: { tenant: string }) => t.tenant === 'alice');
    expect(alice.active_machines).toBe([...world.machines.values()].filter((m) => m.tenantId === 2).length);
    expect(alice.wait_ms.p50).toBeGreaterThanOrEqual(0);
    // The hour's machine time as the fair queue weighs it (to the minute, held machines included).
    expect(alice.machine_hours['1h']).toBeCloseTo(recentMachineTimeMs(world.tenants.get(2)!, Date.now()) / 3_600_000, 2);
    expect(alice.machine_hours['24h']).toBeGreaterThanOrEqual(alice.machine_hours['1h']);
    // Three tenants held machines in the last 24 h: there is an index (null only when nobody did).
    expect(fair.body.jain_index_24h).toBeGreaterThan(0);
    expect(fair.body.jain_index_24h).toBeLessThanOrEqual(1);
    expect((await tenants[0].get(`${V1}/stats/stress`)).status).toBe(403);
  });

  it("lists /stats/stress's machines by id as a number (1, 2, ... 10, not 1, 10, 2)", async () => {
    // The store's pages go by document key, as text; before them, machines came in the order their figures were written.
    const listed = (await duffy.admin.get(`${V1}/stats/stress`)).body.machines.map((m: { machine_id: number }) => m.machine_id);
    expect(listed.length).toBeGreaterThanOrEqual(10);
    expect(listed).toEqual([...listed].sort((a: number, b: number) => a - b));
  });

  it('lists tenants by id as a number, in GET /tenants and the fairness figures (1, 2, ... 10, not 1, 10, 2)', async () => {
    for (let i = 0; i < 8; i++) await newTenant(duffy, `sorted-${i}`);
    const listed = (await duffy.admin.get(`${V1}/tenants`)).body.tenants.map((t: { id: number }) => t.id);
    expect(listed.length).toBeGreaterThanOrEqual(12);
    expect(listed).toEqual([...listed].sort((a: number, b: number) => a - b));
    const names = (await duffy.admin.get(`${V1}/stats/fairness`)).body.tenants.map((t: { tenant: string }) => t.tenant);
    const byId = new Map<string, number>((await duffy.admin.get(`${V1}/tenants`)).body.tenants.map((t: { name: string; id: number }) => [t.name, t.id]));
    expect(names.map((n: string) => byId.get(n))).toEqual(listed);
  });

  it('rebuilds from position 0 to documents identical to the live ones', async () => {
    const readSide = duffy.app.get(ReadSide);
    await readSide.caughtUp(duffy.app.get(Ledger).world.position);
    const live = await snapshot(readSide);
    expect(Object.values(live).flat().length).toBeGreaterThan(20);
    expect((await duffy.admin.post(`${V1}/stats/rebuild`, {})).status).toBe(202);
    await readSide.caughtUp(duffy.app.get(Ledger).world.position);
    expect(await snapshot(readSide)).toEqual(live);
  });

  it('takes rebuilds asked at once in turn: each leaves one subscription to the ledger, and the same documents', async () => {
    const readSide = duffy.app.get(ReadSide);
    const ledger = duffy.app.get(Ledger);
    await readSide.caughtUp(ledger.world.position);
    const live = await snapshot(readSide);
    // Count the subscriptions the read side opens and closes from here on.
    const store = ledger.store;
    const subscribeAllLean = store.subscribeAllLean.bind(store);
    let open = 0;
    store.subscribeAllLean = (...args) => {
      const sub = subscribeAllLean(...args);
      open++;
      return { close: () => (open--, sub.close()) };
    };
    try {
      const answers = await Promise.all([1, 2, 3].map(() => duffy.admin.post(`${V1}/stats/rebuild`, {})));
      expect(answers.map((a) => a.status)).toEqual([202, 202, 202]);
      // The first rebuild closed the subscription opened before the spy; every later one closed its predecessor's.
      expect(open).toBe(1);
      await readSide.caughtUp(ledger.world.position);
      expect(await snapshot(readSide)).toEqual(live);
    } finally {
      store.subscribeAllLean = subscribeAllLean;
    }
  });

  it('reads again when a rebuild drops the documents in the middle of a read: no 500, no 404, nothing missing', async () => {
    const readSide = duffy.app.get(ReadSide);
    const store = readSide.store;
    const { find, get, reset } = store;
    /**
     * GET `path` with its first read of the store (`method`) answered from before a rebuild, and the read's next steps
     * run after the rebuild has dropped projection `dropped`'s documents.
     */
    const straddled = async (path: string, method: 'find' | 'get', dropped: string) => {
      let gone!: () => void;
      const wasDropped = new Promise<void>((r) => (gone = r));
      store.reset = async (projection, collections) => {
        await reset.call(store, projection, collections);
        if (projection === dropped) gone();
      };
      let first = true;
      const original = method === 'find' ? find : get;
      store[method] = (async (...args: [string, never]) => {
        const result = await (original as (...a: [string, never]) => Promise<unknown>).apply(store, args);
        if (first) {
          first = false;
          void readSide.rebuild();
          await wasDropped;
        }
        return result;
      }) as never;
      try {
        return await duffy.admin.get(path);
      } finally {
        Object.assign(store, { find, get, reset });
        expect(first).toBe(false);
      }
    };
    const sessions = await duffy.admin.get(`${V1}/sessions`);
    expect(sessions.body.sessions.length).toBeGreaterThan(0);
    expect(await straddled(`${V1}/sessions`, 'find', 'entities')).toMatchObject({ status: 200, body: sessions.body });

    const alice = (await duffy.admin.get(`${V1}/tenants`)).body.tenants.find((t: { name: string }) => t.name === 'alice');
    expect(await straddled(`${V1}/tenants/${alice.id}`, 'get', 'entities')).toMatchObject({ status: 200, body: { tenant: alice } });

    // Stats read several collections: all from before the rebuild or all from after it.
    const stress = await duffy.admin.get(`${V1}/stats/stress`);
    expect(await straddled(`${V1}/stats/stress`, 'find', 'machine-stress')).toMatchObject({ status: 200, body: stress.body });
  });

  it('changes nothing when the same event is delivered twice', async () => {
    const readSide = duffy.app.get(ReadSide);
    const ledger = duffy.app.get(Ledger);
    await readSide.caughtUp(ledger.world.position);
    const before = await snapshot(readSide);
    const events = await ledger.store.readAll(0n, 100_000);
    for (const runner of readSide.runners) {
      for (const e of events.filter((x) => x.type === 'MachineReserved' || x.type === 'MachineReleased')) await runner.push(e);
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(await snapshot(readSide)).toEqual(before);
    // Nothing hidden went wrong either: later events still project to what a rebuild gives.
    const s = (await tenants[0].post(`${V1}/sessions`, { nodes_specs: [{ type: 'baremetal', arch: 'x86_64', quantity: 1 }] })).body.session;
    await tenants[0].put(`${V1}/sessions/${s.id}`, { active: false });
    await readSide.caughtUp(ledger.world.position);
    const live = await snapshot(readSide);
    await readSide.rebuild();
    await readSide.caughtUp(ledger.world.position);
    expect(await snapshot(readSide)).toEqual(live);
  });
});

describe("read side: /stats/stress after a pool's platform changed in the configuration", () => {
  it("rolls a pool's machines up under the family they serve as now, used before the change or not", async () => {
    const first = instantDemoConfig();
    let duffy = await startDuffy({ configFile: first });
    try {
      const alice = await newTenant(duffy, 'alice');
      const s = (await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 1 }] })).body.session;
      await alice.put(`${V1}/sessions/${s.id}`, { active: false });
      const dataDir = duffy.dataDir;
      await duffy.close();
      // vm-arm-aarch64 becomes family `ampere` (its machines now serve as such, start-up says).
      const demo = parse(readFileSync(first, 'utf8'));
      demo.pools.find((p: { name: string }) => p.name === 'vm-arm-aarch64').platform = 'ampere';
      const changed = join(mkdtempSync(join(tmpdir(), 'duffy-cfg-')), 'ampere.yaml');
      writeFileSync(changed, stringify(demo));
      duffy = await startDuffy({ dataDir, configFile: changed });
      const stress = (await duffy.admin.get(`${V1}/stats/stress`)).body;
      const arm = stress.machines.filter((m: { pool: string }) => m.pool === 'vm-arm-aarch64');
      // Before: the machine handed out before the change stayed under `arm` (its last reservation's), the other went to `ampere`.
      expect(arm.map((m: { platform: string }) => m.platform)).toEqual(arm.map(() => 'ampere'));
      expect(stress.platforms.find((p: { platform: string }) => p.platform === 'ampere')).toMatchObject({ machines: arm.length, allocations: 1 });
    } finally {
      await duffy.close();
    }
  });
});
