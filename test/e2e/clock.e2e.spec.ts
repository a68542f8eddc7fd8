import { replay } from '../../src/audit/audit.js';
import { checkPublished } from '../../src/audit/checkpoint.js';
import { Catalog } from '../../src/application/catalog.js';
import { CheckpointService } from '../../src/audit/checkpoint.service.js';
import { type Running, ledgerEvents, newTenant, startDuffy } from '../support/server.js';
import { clockSetBack } from '../support/clock.js';

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
