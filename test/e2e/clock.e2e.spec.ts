import { replay } from '../../src/audit/audit.js';
import { checkPublished } from '../../src/audit/checkpoint.js';
import { Catalog } from '../../src/application/catalog.js';
import { CheckpointService } from '../../src/audit/checkpoint.service.js';
import { type Running, ledgerEvents, newTenant, startDuffy } from '../support/server.js';
import { clockSetBack, setClockBack } from '../support/clock.js';

const V1 = '/api/v1';

describe('the host clock stepped back after a signed checkpoint', () => {
  let duffy: Running;
  afterAll(() => duffy?.close());

  it('leaves an honest ledger that plain verify passes: what Duffy writes never claims a time before a checkpoint it signed', async () => {
    duffy = await startDuffy();
    const ci = await newTenant(duffy, 'ci-clock');
    expect((await ci.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).status).toBe(201);
    await duffy.app.get(CheckpointService).publish();
    await clockSetBack(5 * 60_000, async () => {
      const s = await ci.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] });
      expect(s.status).toBe(201);
      expect((await ci.put(`${V1}/sessions/${s.body.session.id}`, { active: false })).status).toBe(200);
    });
    const events = await ledgerEvents(duffy);
    expect(replay(events, duffy.app.get(Catalog).defaults)).toEqual([]);
    const published = checkPublished(events);
    expect(published.checked).toBe(1);
    // Before: every event of the next five minutes was reported back-dated (TAMPERED).
    expect(published.problems).toEqual([]);
  });
});

describe('the host clock stepped back while a request waits in the queue', () => {
  let duffy: Running;
  afterAll(() => duffy?.close());

  it('takes the request out of the queue when its caller is answered at the end of its wait, so it is never served to nobody', async () => {
    duffy = await startDuffy();
    const holder = await newTenant(duffy, 'holder');
    const waiter = await newTenant(duffy, 'waiter');
    const held = await holder.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 2 }] });
    expect(held.status).toBe(201);
    const asked = waiter.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 1 }], wait: 1 });
    await new Promise((r) => setTimeout(r, 300));
    expect((await duffy.admin.get(`${V1}/queue`)).body.queue).toHaveLength(1);
    // NTP steps the clock back a day while the request waits: its `until` is a day ahead of the clock now.
    const restore = setClockBack(24 * 3600_000);
    try {
      const answer = await asked;
      expect(answer.status).toBe(422);
      // The machines free up: the request its caller was refused must not be served (nobody would give them back).
      expect((await holder.put(`${V1}/sessions/${held.body.session.id}`, { active: false })).status).toBe(200);
      await new Promise((r) => setTimeout(r, 2_000));
      expect((await duffy.admin.get(`${V1}/queue`)).body.queue).toEqual([]);
      const mine = (await waiter.get(`${V1}/sessions`)).body.sessions;
      expect(mine.filter((s: { active: boolean }) => s.active)).toEqual([]);
    } finally {
      restore();
    }
  }, 60_000);
});
