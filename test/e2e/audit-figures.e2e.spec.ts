import { afterEach, describe, expect, it } from '@jest/globals';
import { collect } from '../../src/audit/audit.js';
import { Ledger } from '../../src/application/ledger.service.js';
import { ReadSide } from '../../src/application/read-side.service.js';
import { ansibleConfig } from '../support/ansible.js';
import { type Running, newTenant, startDuffy } from '../support/server.js';

const V1 = '/api/v1';

describe('figures ops read', () => {
  let duffy: Running | undefined;
  afterEach(async () => {
    await duffy?.close();
    duffy = undefined;
  });

  it("Jain's index is 1 when nobody waits, however unequal the holdings", async () => {
    duffy = await startDuffy();
    const alice = await newTenant(duffy, 'alice');
    const bob = await newTenant(duffy, 'bob');
    expect((await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 2 }] })).status).toBe(201);
    expect((await bob.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 1 }] })).status).toBe(201);
    const done = (await bob.post(`${V1}/sessions`, { nodes_specs: [{ type: 'vm', quantity: 1 }] })).body.session;
    await new Promise((r) => setTimeout(r, 50));
    await bob.put(`${V1}/sessions/${done.id}`, { active: false });
    const fair = await duffy.admin.get(`${V1}/stats/fairness`);
    expect(fair.body.jain_index_24h).toBe(1);
    expect(fair.body.tenants.find((t: { tenant: string }) => t.tenant === 'alice').fair_share_24h).toBe(1);
  });

  it('projection lag counts from the append: a playbook outcome is recorded at its own time', async () => {
    const config = ansibleConfig([{ name: 'p', contextualize: true }], [{ hostname: 'lag-01.test', pool: 'p' }]);
    duffy = await startDuffy({ configFile: config });
    const alice = await newTenant(duffy, 'alice');
    const r = await alice.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'p', quantity: 1 }] });
    expect(r.status).toBe(201);
    const ledger = duffy.app.get(Ledger);
    await duffy.app.get(ReadSide).caughtUp(ledger.world.position);
    const events = await collect(ledger.store);
    const claim = events.find((e) => e.type === 'PlaybookStarted')!;
    const outcome = events.find((e) => e.type === 'MachineProvisioned')!;
    const ran = Number((outcome.data as { run: { durationMs: number } }).run.durationMs);
    expect(ran).toBeGreaterThan(200);
    expect(Date.parse(String(outcome.metadata.at)) - Date.parse(String(claim.metadata.at))).toBeGreaterThanOrEqual(ran);
    const metrics = await (await fetch(`${duffy.url}/metrics`)).text();
    const lag = Number(/^duffy_projection_lag_ms (\S+)$/m.exec(metrics)![1]);
    // Measured from the claim, the lag would include the whole playbook run.
    expect(lag).toBeLessThan(ran);
  }, 60_000);
});
