import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Ledger } from '../../src/application/ledger.service.js';
import { ansibleConfig, inject } from '../support/ansible.js';
import { type Running, machine, newTenant, startDuffy, until } from '../support/server.js';

describe('operating Duffy: health, metrics, request ids', () => {
  let duffy: Running;

  beforeAll(async () => {
    duffy = await startDuffy();
    const alice = await newTenant(duffy, 'alice');
    await alice.post('/api/v1/sessions', { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] });
    await alice.post('/api/v1/sessions', { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 5 }] });
  });
  afterAll(() => duffy.close());

  it('/metrics parses as Prometheus text with the Duffy series', async () => {
    const res = await fetch(`${duffy.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    // Every non-comment line is `name{labels} value`; every sample's family was declared with # TYPE.
    const declared = new Set([...text.matchAll(/^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/gm)].map((m) => m[1]));
    const samples = text.split('\n').filter((l) => l && !l.startsWith('#'));
    for (const line of samples) {
      expect(line).toMatch(/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? -?[0-9.eE+-]+|NaN|[+-]Inf$/);
      const name = line.split(/[{ ]/)[0].replace(/_(bucket|sum|count)$/, '');
      expect(declared.has(name) || declared.has(line.split(/[{ ]/)[0])).toBe(true);
    }
    expect(text).toMatch(/^duffy_machines\{pool="vm-intel-x86_64",state="deployed"\} 1$/m);
    expect(text).toMatch(/^duffy_allocation_seconds_count\{outcome="served"\} 1$/m);
    // 5 of a pool of fewer: no wait could serve it (an invalid request for this farm).
    expect(text).toMatch(/^duffy_allocation_seconds_count\{outcome="invalid"\} 1$/m);
    expect(text).toMatch(/^duffy_http_requests_total\{method="POST",route="\/api\/v1\/sessions",status="201"\} 1$/m);
  });

  it('echoes X-Request-Id, or makes one', async () => {
    const mine = await fetch(`${duffy.url}/health`, { headers: { 'x-request-id': 'job-42' } });
    expect(mine.headers.get('x-request-id')).toBe('job-42');
    const made = await fetch(`${duffy.url}/health`);
    expect(made.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('a write refused as cross-site, or a body the parser refuses, carries its X-Request-Id and is counted', async () => {
    const csrf = await fetch(`${duffy.url}/api/v1/stats/rebuild`, { method: 'POST', headers: { origin: 'http://evil.example', 'x-request-id': 'csrf-1' } });
    expect([csrf.status, csrf.headers.get('x-request-id')]).toEqual([403, 'csrf-1']);
    const bad = await fetch(`${duffy.url}/api/v1/tenants`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'bad-1' }, body: '{bad' });
    expect([bad.status, bad.headers.get('x-request-id')]).toEqual([400, 'bad-1']);
    const text = await (await fetch(`${duffy.url}/metrics`)).text();
    // Counted under the route they were sent to, though refused before routing; a path the app does not serve stays unmatched.
    expect(text).toMatch(/^duffy_http_requests_total\{method="POST",route="\/api\/v1\/stats\/rebuild",status="403"\} 1$/m);
    expect(text).toMatch(/^duffy_http_requests_total\{method="POST",route="\/api\/v1\/tenants",status="400"\} 1$/m);
    const typeless = await fetch(`${duffy.url}/api/v1/sessions/12?x=1`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: '{"active": false}' });
    expect(typeless.status).toBe(422);
    await fetch(`${duffy.url}/api/v1/nowhere/7`, { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: 'x' });
    const after = await (await fetch(`${duffy.url}/metrics`)).text();
    expect(after).toMatch(/^duffy_http_requests_total\{method="PUT",route="\/api\/v1\/sessions\/:id",status="422"\} 1$/m);
    expect(after).toMatch(/^duffy_http_requests_total\{method="PUT",route="unmatched",status="422"\} 1$/m);
    // Under /api/v1 too, a path Duffy does not serve is no route of its own.
    const nowhere = await fetch(`${duffy.url}/api/v1/nowhere/deeper`);
    const deleted = await fetch(`${duffy.url}/api/v1/sessions`, { method: 'DELETE' });
    expect([nowhere.status, nowhere.headers.get('duffy-refusal'), deleted.status, deleted.headers.get('duffy-refusal')]).toEqual([404, 'not_found', 405, 'invalid']);
    // Every refusal says its kind, a middleware's too.
    expect(csrf.headers.get('duffy-refusal')).toBe('forbidden');
    const last = await (await fetch(`${duffy.url}/metrics`)).text();
    expect(last).toMatch(/^duffy_http_requests_total\{method="GET",route="unmatched",status="404"\} 1$/m);
    // A method its path does not take counts under that path's route.
    expect(last).toMatch(/^duffy_http_requests_total\{method="DELETE",route="\/api\/v1\/sessions",status="405"\} 1$/m);
    expect(last).not.toMatch(/route="\/api\/v1\*path"/);
  });

  it('a request whose client went away before any answer counts as 499, as its log line says', async () => {
    const bob = await newTenant(duffy, 'bob');
    // A Jenkins abort: a request waiting in the queue (3 of vm-intel's 4 machines are free) whose client leaves.
    const abort = new AbortController();
    const waiting = fetch(`${duffy.url}/api/v1/sessions`, { method: 'POST', signal: abort.signal, headers: { 'content-type': 'application/json', authorization: bob.auth! }, body: JSON.stringify({ nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 4 }], wait: 60 }) }).catch(() => 'aborted');
    const world = () => duffy.app.get(Ledger).world;
    await until(duffy, () => [...world().openSessions].some((id) => world().sessions.get(id)!.status === 'waiting'));
    abort.abort();
    expect(await waiting).toBe('aborted');
    // A body cut off: Express still writes its 400 into the closed socket, which no client ever reads.
    const port = new URL(duffy.url).port;
    await new Promise<void>((done) => {
      const socket = connect(Number(port), '127.0.0.1', () => {
        socket.write('PUT /api/v1/sessions/1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"active":');
        setTimeout(() => (socket.destroy(), done()), 200);
      });
    });
    // The server sees each close a moment after the client made it. The cut body counts once, under the status its
    // log line gives: 499 if no byte of the 400 left, else the 400 written into the half-closed socket.
    const cut = (t: string) => [...t.matchAll(/^duffy_http_requests_total\{method="PUT",route="\/api\/v1\/sessions\/:id",status="(400|499)"\} (\d+)$/gm)].reduce((n, m) => n + Number(m[2]), 0);
    let text = '';
    for (let i = 0; i < 50 && cut(text) === 0; i++) {
      await sleep(50);
      text = await (await fetch(`${duffy.url}/metrics`)).text();
    }
    expect(cut(text)).toBe(1);
    expect(text).toMatch(/^duffy_http_requests_total\{method="POST",route="\/api\/v1\/sessions",status="499"\} 1$/m);
    // Nor is the abort a refusal for want of machines.
    expect(text).toMatch(/^duffy_allocation_seconds_count\{outcome="cancelled"\} 1$/m);
    expect(text).not.toMatch(/^duffy_allocation_seconds_count\{outcome="capacity"\}/m);
  });

  it('counts an answer Node gives before any request was read whole (headers over 16 KB: 431)', async () => {
    const port = Number(new URL(duffy.url).port);
    const answer = await new Promise<string>((done) => {
      let got = '';
      const socket = connect(port, '127.0.0.1', () => socket.write(`GET /api/v1/sessions HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
      socket.on('data', (d) => (got += String(d))).on('close', () => done(got)).on('error', () => undefined);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 431 /);
    const text = await (await fetch(`${duffy.url}/metrics`)).text();
    expect(text).toMatch(/^duffy_http_requests_total\{method="unknown",route="unreadable",status="431"\} 1$/m);
  });

  it('/health is up with ledger, read models and ansible, and down when the ledger is unreachable', async () => {
    const up = await fetch(`${duffy.url}/health`);
    const body = (await up.json()) as { info: Record<string, { version?: string }> };
    expect(up.status).toBe(200);
    expect(Object.keys(body.info).sort()).toEqual(['ansible', 'ledger', 'readModels']);
    expect(body.info.ansible.version).toMatch(/^ansible-playbook \[core \d/);
    // Cut the ledger away under the running server.
    await duffy.app.get(Ledger).store.close();
    const down = await fetch(`${duffy.url}/health`);
    expect(down.status).toBe(503);
    expect(((await down.json()) as { error: { ledger: { status: string } } }).error.ledger.status).toBe("down");
  });
});

describe('a playbook that hangs, seen on /metrics before its timeout', () => {
  it('counts the run under way and how long it has been running; both go once it is over', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-ops-'));
    inject(dataDir, 'slow-1.test', 'hang', 'provision');
    const config = ansibleConfig([{ name: 's', 'fill-level': 1, contextualize: false, 'playbook-timeout': 12, 'quarantine-after': 1, 'health-check-interval': 3600 }], [{ hostname: 'slow-1.test', pool: 's' }]);
    const duffy = await startDuffy({ configFile: config, dataDir });
    try {
      await until(duffy, () => machine(duffy, 'slow-1.test').job?.action === 'provision', 30_000);
      await sleep(2_000);
      const during = await (await fetch(`${duffy.url}/metrics`)).text();
      expect(during).toMatch(/^duffy_playbook_runs\{action="provision"\} 1$/m);
      expect(Number(/^duffy_playbook_oldest_run_seconds (\S+)$/m.exec(during)?.[1])).toBeGreaterThanOrEqual(2);
      // Killed at its timeout: the machine is blamed (quarantine-after 1), and nothing runs any more.
      await until(duffy, () => machine(duffy, 'slow-1.test').state === 'failed', 60_000);
      const after = await (await fetch(`${duffy.url}/metrics`)).text();
      expect(after).not.toMatch(/^duffy_playbook_runs\{/m);
      expect(after).toMatch(/^duffy_playbook_oldest_run_seconds 0$/m);
      // By pool, so an alert names the pool whose playbook or machines fail.
      expect(after).toMatch(/^duffy_provisioning_failures_total\{action="provision",pool="s"\} 1$/m);
    } finally {
      await duffy.close();
    }
  }, 120_000);
});

describe('OpenAPI', () => {
  let duffy: Running;
  beforeAll(async () => (duffy = await startDuffy()));
  afterAll(() => duffy.close());

  it('serves a UI at /api/docs and a document describing every endpoint and request model', async () => {
    expect((await fetch(`${duffy.url}/api/docs`)).status).toBe(200);
    const doc = (await (await fetch(`${duffy.url}/api/docs-json`)).json()) as { paths: Record<string, Record<string, { summary?: string; security?: unknown[] }>>; components: { schemas: Record<string, unknown> } };
    for (const path of ['/api/v1/sessions', '/api/v1/sessions/{id}', '/api/v1/pools', '/api/v1/tenants', '/api/v1/nodes', '/Node/get', '/Inventory', '/health', '/metrics', '/api/v1/stats/stress']) {
      expect(Object.keys(doc.paths)).toContain(path);
    }
    expect(doc.paths['/api/v1/sessions'].post.summary).toMatch(/request machines/);
    // Pools need no credentials; the document says so for them alone.
    expect(doc.paths['/api/v1/pools'].get.security).toEqual([]);
    expect(doc.paths['/api/v1/sessions'].post.security).toBeUndefined();
    expect(Object.keys(doc.components.schemas)).toEqual(expect.arrayContaining(['SessionCreateDto', 'NodesSpecDto', 'SessionUpdateDto', 'TenantCreateDto', 'NodeCreateDto']));
  });
});
