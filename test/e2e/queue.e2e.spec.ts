import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { CommandBus } from '@nestjs/cqrs';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CancelWaitingCommand } from '../../src/application/commands.js';
import { Ledger } from '../../src/application/ledger.service.js';
import { type Client, type Running, newTenant, startDuffy } from '../support/server.js';
import { setTimeout as sleep } from 'node:timers/promises';

const V1 = '/api/v1';

function twoMachines(): string {
  const file = join(mkdtempSync(join(tmpdir(), 'duffy-cfg-')), 'queue.yaml');
  writeFileSync(
    file,
    stringify({
      pools: [{ name: 'small', type: 'baremetal', arch: 'x86_64', platform: 'intel', driver: 'local' }],
      machines: [{ hostname: 'q1.test', pool: 'small' }, { hostname: 'q2.test', pool: 'small' }],
    }),
  );
  return file;
}

describe('waiting for capacity in a fair-share queue', () => {
  let duffy: Running;
  let heavy: Client;
  let light: Client;
  let other: Client;

  beforeAll(async () => {
    duffy = await startDuffy({ configFile: twoMachines() });
    [heavy, light, other] = [await newTenant(duffy, 'heavy'), await newTenant(duffy, 'light'), await newTenant(duffy, 'other')];
  });
  afterAll(() => duffy.close());

  const waitingIds = async (c: Client) => (await c.get(`${V1}/sessions`)).body.sessions.filter((s: { active: boolean }) => !s.active).map((s: { id: number }) => s.id);

  it('serves a waiting request when capacity frees up, tenants with less recent machine time first', async () => {
    // heavy holds both machines; then heavy asks again, and later light asks: light must go first.
    const held = (await heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }] })).body.session;
    const heavyWaits = heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 30 });
    await sleep(200);
    const lightWaits = light.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 30 });
    await sleep(200);

    const [lightId] = await waitingIds(light);
    const waiting = (await light.get(`${V1}/sessions/${lightId}`)).body.session;
    expect(waiting.active).toBe(false);
    expect(waiting.nodes).toEqual([]);
    // No lease yet: it starts when the request is served.
    expect(waiting.expires_at).toBeNull();
    expect(waiting.data.queue).toMatchObject({ position: 1, reason: 'pool small: 1 requested, 0 available' });
    const [heavyId] = await waitingIds(heavy);
    expect((await heavy.get(`${V1}/sessions/${heavyId}`)).body.session.data.queue.position).toBe(2);
    const queue = (await duffy.admin.get(`${V1}/queue`)).body.queue;
    expect(queue.map((q: { tenant: string; position: number }) => [q.position, q.tenant])).toEqual([[1, 'light'], [2, 'heavy']]);
    // What ops watch: the queue's length, in requests and machines.
    const metrics = (await duffy.admin.get('/metrics')).body as string;
    expect(metrics).toContain('duffy_queue_waiting{count="requests"} 2');
    expect(metrics).toContain('duffy_queue_waiting{count="machines"} 2');

    // One machine frees: light (no recent machine time) gets it although heavy asked first.
    await heavy.put(`${V1}/sessions/${held.id}`, { active: false });
    const lightGot = await lightWaits;
    expect(lightGot.status).toBe(201);
    expect(lightGot.body.session.nodes).toHaveLength(1);
    const heavyGot = await heavyWaits;
    expect(heavyGot.status).toBe(201);

    const events = await duffy.app.get(Ledger).store.readAll(0n, 100_000);
    const started = events.filter((e) => e.type === 'SessionStarted').map((e) => e.data.sessionId);
    expect(started.indexOf(lightGot.body.session.id)).toBeLessThan(started.indexOf(heavyGot.body.session.id));
    for (const s of [lightGot.body.session, heavyGot.body.session]) await duffy.admin.put(`${V1}/sessions/${s.id}`, { active: false });
  });

  it('serves a request that has waited half its wait before the fair-share order would', async () => {
    // heavy (more recent machine time) asks with a 60 s wait; once half of it is gone (and at least 30 s) its request
    // is urgent and goes before light's, which fair share alone would put first (as in the test above).
    const held = (await heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }] })).body.session;
    const heavyWaits = heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 60 });
    await sleep(32_000);
    const lightWaits = light.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 300 });
    await sleep(200);
    const queue = (await duffy.admin.get(`${V1}/queue`)).body.queue;
    expect(queue.map((q: { tenant: string; position: number }) => [q.position, q.tenant])).toEqual([[1, 'heavy'], [2, 'light']]);

    await heavy.put(`${V1}/sessions/${held.id}`, { active: false });
    const [heavyGot, lightGot] = [await heavyWaits, await lightWaits];
    expect([heavyGot.status, lightGot.status]).toEqual([201, 201]);
    const events = await duffy.app.get(Ledger).store.readAll(0n, 100_000);
    const started = events.filter((e) => e.type === 'SessionStarted').map((e) => e.data.sessionId);
    expect(started.indexOf(heavyGot.body.session.id)).toBeLessThan(started.indexOf(lightGot.body.session.id));
    for (const s of [heavyGot.body.session, lightGot.body.session]) await duffy.admin.put(`${V1}/sessions/${s.id}`, { active: false });
  }, 90_000);

  it('lets an urgent request for 2 machines hold a freed machine from a later request of a tenant that used as much', async () => {
    // Given other and light each holding one of the two machines, heavy waiting for 2 (urgent once half of its 60 s
    // are gone) and then for 1 more;
    const x = (await other.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }] })).body.session;
    const y = (await light.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }] })).body.session;
    const pairWaits = heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }], wait: 60 });
    await sleep(100);
    const oneWaits = heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 300 });
    await sleep(32_000);
    // when one machine frees, the urgent pair holds it: the single request behind it does not take it;
    await other.put(`${V1}/sessions/${x.id}`, { active: false });
    await sleep(700);
    expect((await waitingIds(heavy)).length).toBe(2);
    // and when the second frees, the pair gets both, before the single request gets anything.
    await light.put(`${V1}/sessions/${y.id}`, { active: false });
    const pair = await pairWaits;
    expect(pair.status).toBe(201);
    expect(pair.body.session.nodes).toHaveLength(2);
    await heavy.put(`${V1}/sessions/${pair.body.session.id}`, { active: false });
    const one = await oneWaits;
    expect(one.status).toBe(201);
    const events = await duffy.app.get(Ledger).store.readAll(0n, 100_000);
    const started = events.filter((e) => e.type === 'SessionStarted').map((e) => e.data.sessionId);
    expect(started.indexOf(pair.body.session.id)).toBeLessThan(started.indexOf(one.body.session.id));
    await heavy.put(`${V1}/sessions/${one.body.session.id}`, { active: false });
  }, 90_000);

  it('keeps a machine an urgent request holds from a new request that arrives between passes, as from a queued one', async () => {
    // Given other and light each holding one of the two machines, and heavy waiting for 2 (urgent once half of its
    // 60 s are gone);
    const x = (await other.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }] })).body.session;
    const y = (await light.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }] })).body.session;
    const pairWaits = heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }], wait: 60 });
    await sleep(32_000);
    // when one machine frees, the urgent pair holds it: a new request of a tenant that used as much (heavy's own),
    // served at once or not at all, does not take it;
    await other.put(`${V1}/sessions/${x.id}`, { active: false });
    await sleep(700);
    const now = await heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }] });
    expect([now.status, now.body.detail]).toEqual([422, "can't reserve nodes: pool small: 1 requested, 0 available"]);
    // and when the second frees, the pair gets both.
    await light.put(`${V1}/sessions/${y.id}`, { active: false });
    const pair = await pairWaits;
    expect(pair.status).toBe(201);
    expect(pair.body.session.nodes).toHaveLength(2);
    await heavy.put(`${V1}/sessions/${pair.body.session.id}`, { active: false });
  }, 90_000);

  it('answers 422 when the wait is over, and lets a waiting request be cancelled', async () => {
    const held = (await heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }] })).body.session;
    const started = Date.now();
    const timedOut = await other.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 1 });
    expect(timedOut.status).toBe(422);
    expect(timedOut.body.detail).toMatch(/^can't reserve nodes: waited until .*: pool small: 1 requested, 0 available$/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);

    const cancelled = other.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 60 });
    await sleep(200);
    const [id] = await waitingIds(other);
    const put = await other.put(`${V1}/sessions/${id}`, { active: false });
    expect(put.status).toBe(200);
    expect(put.body.session.data.rejected).toBe('cancelled by other');
    expect((await cancelled).status).toBe(422);
    expect((await heavy.get(`${V1}/sessions/${id}`)).status).toBe(404);
    await heavy.put(`${V1}/sessions/${held.id}`, { active: false });
  });

  it('ends a waiting request that is served just as its caller says done: 200 means nothing is held', async () => {
    const held = (await heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }] })).body.session;
    const asked = other.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 60 });
    await sleep(200);
    const [id] = await waitingIds(other);
    // The race, made certain: the request is served after the controller saw it waiting and before the cancel is decided.
    const bus = duffy.app.get(CommandBus);
    const execute = bus.execute.bind(bus);
    const ledger = duffy.app.get(Ledger);
    const spy = jest.spyOn(bus, 'execute').mockImplementation(async (command) => {
      if (command instanceof CancelWaitingCommand) {
        await heavy.put(`${V1}/sessions/${held.id}`, { active: false });
        await ledger.until(() => ledger.world.sessions.get(id)!.status === 'active', 10_000);
      }
      return execute(command);
    });
    try {
      const put = await other.put(`${V1}/sessions/${id}`, { active: false });
      expect([put.status, put.body.session.active]).toEqual([200, false]);
    } finally {
      spy.mockRestore();
    }
    expect(ledger.world.sessions.get(id)!.status).toBe('released');
    expect([...ledger.world.machines.values()].filter((m) => m.sessionId === id)).toEqual([]);
    await asked;
  });

  it('lets a tenant queue only what its quota could still take (403 past it), and counts a cancelled wait no more', async () => {
    const held = (await heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }] })).body.session;
    const capped = await newTenant(duffy, 'capped', { node_quota: 2 });
    const first = capped.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }], wait: 60 });
    await sleep(200);
    const refused = await capped.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 60 });
    expect(refused.status).toBe(403);
    expect(refused.body.detail).toBe('quota exceeded: tenant capped has 0 of 2 nodes and 2 more waiting, and asked for 1 more');

    const [id] = await waitingIds(capped);
    expect((await capped.put(`${V1}/sessions/${id}`, { active: false })).status).toBe(200);
    expect((await first).status).toBe(422);
    const again = capped.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 60 });
    await sleep(200);
    expect(await waitingIds(capped)).toHaveLength(1);
    await heavy.put(`${V1}/sessions/${held.id}`, { active: false });
    const served = await again;
    expect(served.status).toBe(201);
    await capped.put(`${V1}/sessions/${served.body.session.id}`, { active: false });
  });

  it('keeps the bound when a tenant sends its waiting requests all at once', async () => {
    const held = (await heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }] })).body.session;
    const flood = await newTenant(duffy, 'flood', { node_quota: 3 });
    const answers = Array.from({ length: 30 }, () => flood.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 60 }));
    await sleep(500);
    const waiting = await waitingIds(flood);
    // Its quota (3) is the bound: three wait, the other 27 are refused (fewer waiting would pass a bound of 3 too).
    expect(waiting).toHaveLength(3);
    for (const id of waiting) await flood.put(`${V1}/sessions/${id}`, { active: false });
    const statuses = (await Promise.all(answers)).map((r) => r.status);
    expect(statuses.filter((s) => s === 403)).toHaveLength(27);
    await heavy.put(`${V1}/sessions/${held.id}`, { active: false });
  });

  it('takes a retired tenant\'s requests out of the queue, and answers them', async () => {
    const held = (await heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }] })).body.session;
    const leaving = await newTenant(duffy, 'leaving', { node_quota: 3 });
    const id = (await duffy.admin.get(`${V1}/tenants`)).body.tenants.find((t: { name: string }) => t.name === 'leaving').id;
    const waits = [1, 2].map(() => leaving.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 60 }));
    await sleep(300);
    expect(await waitingIds(leaving)).toHaveLength(2);
    expect((await duffy.admin.put(`${V1}/tenants/${id}`, { active: false })).status).toBe(200);
    // Out of the queue in the retirement's own append, not at a later pass of the queue.
    expect((await duffy.admin.get(`${V1}/queue`)).body.queue).toEqual([]);
    // Refused as a new request of a retired tenant is (403): asking again cannot help, so a CLI does not (exit 3).
    for (const r of await Promise.all(waits)) {
      expect([r.status, r.headers.get('duffy-refusal')]).toEqual([403, 'forbidden']);
      expect(r.body.detail).toMatch(/tenant leaving was retired/);
    }
    expect((await duffy.admin.get(`${V1}/queue`)).body.queue).toEqual([]);
    await heavy.put(`${V1}/sessions/${held.id}`, { active: false });
  });

  it('takes out of the queue the requests a lowered quota can never take, and keeps the others', async () => {
    const held = (await heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }] })).body.session;
    const shrinking = await newTenant(duffy, 'shrinking', { node_quota: 3 });
    const id = (await duffy.admin.get(`${V1}/tenants`)).body.tenants.find((t: { name: string }) => t.name === 'shrinking').id;
    const big = shrinking.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }], wait: 60 });
    const small = shrinking.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: 60 });
    await sleep(300);
    expect(await waitingIds(shrinking)).toHaveLength(2);
    expect((await duffy.admin.put(`${V1}/tenants/${id}`, { node_quota: 1 })).status).toBe(200);
    const refused = await big;
    expect([refused.status, refused.headers.get('duffy-refusal')]).toEqual([403, 'quota']);
    expect(refused.body.detail).toBe("quota exceeded: tenant shrinking's quota is now 1, fewer than the 2 nodes asked for");
    expect(await waitingIds(shrinking)).toHaveLength(1);
    await heavy.put(`${V1}/sessions/${held.id}`, { active: false });
    const served = await small;
    expect(served.status).toBe(201);
    await shrinking.put(`${V1}/sessions/${served.body.session.id}`, { active: false });
  });

  it('says why a request waits now, not only why it joined the queue (a quota lowered while it waits)', async () => {
    const crowded = await newTenant(duffy, 'crowded', { node_quota: 3 });
    const id = (await duffy.admin.get(`${V1}/tenants`)).body.tenants.find((t: { name: string }) => t.name === 'crowded').id;
    const mine = (await crowded.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }] })).body.session;
    const held = (await heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }] })).body.session;
    const asked = crowded.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 2 }], wait: 60 });
    await sleep(300);
    const reasons = async () => [(await crowded.get(`${V1}/sessions`)).body.sessions.find((s: { data: { queue?: unknown } }) => s.data.queue).data.queue.reason, (await duffy.admin.get(`${V1}/queue`)).body.queue[0].reason];
    expect(await reasons()).toEqual(['pool small: 2 requested, 0 available', 'pool small: 2 requested, 0 available']);
    // Still within its quota (2 asked, quota 2), it waits on; what holds it back now is its quota, not the pool.
    expect((await duffy.admin.put(`${V1}/tenants/${id}`, { node_quota: 2 })).status).toBe(200);
    await heavy.put(`${V1}/sessions/${held.id}`, { active: false });
    await sleep(300);
    const quota = 'quota exceeded: tenant crowded has 1 of 2 nodes and asked for 2 more';
    expect(await reasons()).toEqual([quota, quota]);
    await crowded.put(`${V1}/sessions/${mine.id}`, { active: false });
    const served = await asked;
    expect(served.status).toBe(201);
    await crowded.put(`${V1}/sessions/${served.body.session.id}`, { active: false });
  });

  it('answers at once a request for more machines than the pool will ever have, and takes out of the queue one that machines retired under', async () => {
    const never = await other.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 3 }], wait: 60 });
    expect(never.status).toBe(422);
    expect(never.body.detail).toBe("can't reserve nodes: pool small has 2 machine(s) that are not retired and 3 were asked for, so waiting cannot help");

    const added = await duffy.admin.post(`${V1}/nodes`, { hostname: 'q3.test', pool: 'small' });
    expect(added.status).toBe(201);
    const held = (await heavy.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 3 }] })).body.session;
    const waits = other.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 3 }], wait: 60 });
    await sleep(300);
    expect(await waitingIds(other)).toHaveLength(1);
    expect((await duffy.admin.put(`${V1}/nodes/${added.body.node.id}`, { retired: true, reason: 'scrapped' })).status).toBe(200);
    const refused = await waits;
    expect(refused.status).toBe(422);
    expect(refused.body.detail).toMatch(/pool small has 2 machine\(s\) that are not retired and 3 were asked for/);
    expect(await waitingIds(other)).toHaveLength(0);
    await heavy.put(`${V1}/sessions/${held.id}`, { active: false });
  });

  it('refuses a bad wait', async () => {
    const r = await other.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'small', quantity: 1 }], wait: -1 });
    expect(r.status).toBe(422);
    expect(r.body.detail).toMatch(/wait must be at least 0/);
  });
});
