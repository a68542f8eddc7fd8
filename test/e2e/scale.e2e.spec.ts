import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeScaleInventory } from '../../bench/inventory.js';
import { parse, stringify } from 'yaml';
import { type Running, newTenant, startDuffy } from '../support/server.js';

/**
 * Correctness at size, not a timing: a farm of 20,000 machines is registered at start-up (in batches), and a
 * request is served from it by the least-worn machine, on the pool it asked for; a restart registers nothing again.
 */
const MACHINES = 20_000;

describe(`a farm of ${MACHINES.toLocaleString('en-US')} machines`, () => {
  let duffy: Running;
  let configFile: string;

  beforeAll(async () => {
    configFile = writeScaleInventory(join(mkdtempSync(join(tmpdir(), 'duffy-scale-')), 'scale.yaml'), MACHINES, (i) => `n${String(i + 1).padStart(5, '0')}.scale.test`, {
      defaults: { 'node-quota': 100, 'session-lifetime': 3600, 'session-lifetime-max': 7200 },
    });
    duffy = await startDuffy({ configFile });
  }, 120_000);

  afterAll(async () => {
    await duffy?.close();
  });

  it('registers every machine of the inventory once', async () => {
    const pool = await duffy.admin.get('/api/v1/pools/metal-a');
    expect(pool.status).toBe(200);
    expect(pool.body.pool.levels.ready).toBe(MACHINES / 4);
    const nodes = await duffy.admin.get('/api/v1/nodes');
    expect(nodes.status).toBe(200);
    expect(nodes.body.nodes).toHaveLength(MACHINES);
    expect(new Set(nodes.body.nodes.map((n: { hostname: string }) => n.hostname)).size).toBe(MACHINES);
  }, 60_000);

  it('serves a request from the pool asked for, and takes the machine back', async () => {
    const ci = await newTenant(duffy, 'scale-ci');
    const r = await ci.post('/api/v1/sessions', { nodes_specs: [{ pool: 'vm-b', quantity: 2 }] });
    expect(r.status).toBe(201);
    expect(r.body.session.nodes).toHaveLength(2);
    for (const n of r.body.session.nodes) expect(n.pool).toBe('vm-b');
    // Nothing is worn yet: the lowest ids of the pool win the tie-break (vm-b holds machines 4, 8, 12, ...).
    expect(r.body.session.nodes.map((n: { hostname: string }) => n.hostname).sort()).toEqual(['n00004.scale.test', 'n00008.scale.test']);
    const done = await ci.put(`/api/v1/sessions/${r.body.session.id}`, { active: false });
    expect(done.status).toBe(200);
  }, 60_000);

  it('shows a session of many machines from the read models (past 64 machines, one read of the collection)', async () => {
    const ci = await newTenant(duffy, 'scale-wide');
    const r = await ci.post('/api/v1/sessions', { nodes_specs: [{ pool: 'metal-a', quantity: 80 }] });
    expect(r.status).toBe(201);
    const shown = (await ci.get(`/api/v1/sessions/${r.body.session.id}`)).body.session;
    expect(shown.nodes.map((n: { hostname: string }) => n.hostname).sort()).toEqual(r.body.session.nodes.map((n: { hostname: string }) => n.hostname).sort());
    expect(shown.nodes).toHaveLength(80);
    expect((await ci.put(`/api/v1/sessions/${r.body.session.id}`, { active: false })).status).toBe(200);
  }, 60_000);

  it('registers nothing again on a restart with the same ledger', async () => {
    await duffy.close();
    duffy = await startDuffy({ configFile, dataDir: duffy.dataDir });
    const nodes = await duffy.admin.get('/api/v1/nodes');
    expect(nodes.body.nodes).toHaveLength(MACHINES);
  }, 120_000);
});

describe('an inventory whose machines carry much node data', () => {
  it('is registered in appends within the event store bound (KurrentDB refuses an append over 1 MiB whole)', async () => {
    // 400 machines of 6 KB of data each: 2.4 MB, which 1,000 machines per append put in one.
    const file = writeScaleInventory(join(mkdtempSync(join(tmpdir(), 'duffy-rich-')), 'rich.yaml'), 400, (i) => `r${i + 1}.rich.test`);
    const config = parse(readFileSync(file, 'utf8'));
    for (const m of config.machines) m.data = { rack: 'r1', notes: 'n'.repeat(6_000) };
    writeFileSync(file, stringify(config));
    const duffy = await startDuffy({ configFile: file });
    try {
      const nodes = (await duffy.admin.get('/api/v1/nodes')).body.nodes as unknown[];
      expect(nodes).toHaveLength(400);
    } finally {
      await duffy.close();
    }
  }, 120_000);
});
