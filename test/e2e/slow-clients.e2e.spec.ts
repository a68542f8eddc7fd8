import { afterAll, describe, expect, it, jest } from '@jest/globals';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { type Socket, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { defaultMaxConnections } from '../../src/config/config.js';
import { ADMIN_KEY, basic } from '../support/server.js';

// Node checks request timeouts every 30 s: a slow sender's 408 comes 1-31 s after its timeout of 1 s.
jest.setTimeout(120_000);
const MAIN = fileURLToPath(new URL('../../dist/src/main.js', import.meta.url));
const MAX_CONNECTIONS = 12;

/** One request on a connection of its own, closed after the answer: it holds no idle socket that counts against the limit. */
function once(port: number, method: string, path: string, auth: string, body?: unknown): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      { host: '127.0.0.1', port, method, path, agent: false, headers: { authorization: auth, connection: 'close', ...(data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}) } },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : undefined }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/**
 * A client that sends the headers and the first byte of a 100-byte body, then nothing, and never closes its side:
 * what it gets back once the server is done with it. The server must close the connection itself, or it would
 * count against the connection limit for good.
 */
function slowSender(port: number): { socket: Socket; answer: Promise<string> } {
  const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.write('POST /api/v1/sessions HTTP/1.1\r\nHost: duffy\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{');
  let text = '';
  socket.on('data', (d) => (text += d));
  const answer = new Promise<string>((resolve) => {
    socket.on('end', () => resolve(text));
    socket.on('close', () => resolve(text));
  });
  socket.on('error', () => undefined);
  return { socket, answer };
}

describe('slow senders and connection floods', () => {
  let child: ChildProcess | undefined;
  afterAll(() => {
    child?.kill('SIGKILL');
  });

  /** The built server with one pool of one machine, a tenant `ci`, and that machine held by ci. */
  async function oneMachineHeld(maxConnections: number, requestTimeoutSeconds = 1): Promise<{ port: number; admin: string; ci: string; held: number }> {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-slow-'));
    const config = join(dir, 'one.yaml');
    writeFileSync(config, stringify({ pools: [{ name: 'solo', type: 'baremetal', arch: 'x86_64', platform: 'intel', driver: 'local' }], machines: [{ hostname: 'solo-1.test', pool: 'solo', state: 'ready' }] }));
    const port = 20000 + Math.floor(Math.random() * 20000);
    child?.kill('SIGKILL');
    child = spawn(process.execPath, [MAIN], {
      env: { ...process.env, DUFFY_DATA_DIR: join(dir, 'data'), DUFFY_CONFIG: config, DUFFY_PORT: String(port), DUFFY_ADMIN_KEY: ADMIN_KEY, DUFFY_LOG_LEVEL: 'warn', DUFFY_MAX_CONNECTIONS: String(maxConnections), DUFFY_REQUEST_TIMEOUT_SECONDS: String(requestTimeoutSeconds), NODE_OPTIONS: '' },
      stdio: 'ignore',
    });
    const admin = basic('admin', ADMIN_KEY);
    for (let i = 0; ; i++) {
      if ((await once(port, 'GET', '/api/v1/pools', admin).catch(() => undefined))?.status === 200) break;
      if (i > 300) throw new Error('no server');
      await sleep(200);
    }
    const created = await once(port, 'POST', '/api/v1/tenants', admin, { name: 'ci', ssh_key: 'ssh-ed25519 AAAAC3Nza ci@ci' });
    const ci = basic('ci', created.body.tenant.api_key);
    const held = await once(port, 'POST', '/api/v1/sessions', ci, { nodes_specs: [{ pool: 'solo', quantity: 1 }] });
    expect(held.status).toBe(201);
    return { port, admin, ci, held: held.body.session.id };
  }

  it('past half the connections in callers waiting in the queue, a request that cannot be served now is a 503, and releases still get through', async () => {
    const { port, ci, held } = await oneMachineHeld(8);
    const wait = () => once(port, 'POST', '/api/v1/sessions', ci, { nodes_specs: [{ pool: 'solo', quantity: 1 }], wait: 60 });
    // Six at once (decided together, before any is in the queue): four wait, two are told to ask again.
    const all = Array.from({ length: 6 }, () => {
      const answer = wait();
      const entry = { answer, settled: undefined as undefined | { status: number; body: any } };
      void answer.then(
        (r) => (entry.settled = r),
        (err: Error) => (entry.settled = { status: -1, body: err.message }),
      );
      return entry;
    });
    await sleep(1500);
    const refused = all.filter((w) => w.settled !== undefined);
    expect(refused.map((w) => w.settled!.status)).toEqual([503, 503]);
    for (const r of refused) {
      expect(r.settled!.body.detail).toMatch(/^can't reserve nodes: .*; not waiting: 4 callers wait in the queue already, half the connections Duffy takes \(DUFFY_MAX_CONNECTIONS\), the rest kept for releases; ask again shortly$/);
    }
    // One that no wait could serve is told so, as without the limit.
    const never = await once(port, 'POST', '/api/v1/sessions', ci, { nodes_specs: [{ pool: 'solo', quantity: 2 }], wait: 60 });
    expect([never.status, never.body.detail]).toEqual([422, expect.stringMatching(/^can't reserve nodes: /)]);
    expect(never.body.detail).not.toMatch(/not waiting/);
    // Each release serves the next caller in the queue.
    const waiters = all.filter((w) => w.settled === undefined).map((w) => w.answer);
    let release = held;
    for (const w of waiters) {
      expect((await once(port, 'PUT', `/api/v1/sessions/${release}`, ci, { active: false })).status).toBe(200);
      const served = await w;
      expect(served.status).toBe(201);
      release = served.body.session.id;
    }
  });

  it("keeps an idle keep-alive connection open as long as a request may take, not Node's 5 s (a close decided while the main thread was busy reset requests sent meanwhile)", async () => {
    const { port, ci, held } = await oneMachineHeld(MAX_CONNECTIONS, 10);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = () =>
      new Promise<{ status: number; reused: boolean }>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, path: `/api/v1/sessions/${held}`, agent, headers: { authorization: ci } }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode!, reused: req.reusedSocket }));
        });
        req.on('error', reject);
        req.end();
      });
    try {
      expect(await get()).toEqual({ status: 200, reused: false });
      await sleep(6500);
      expect(await get()).toEqual({ status: 200, reused: true });
    } finally {
      agent.destroy();
    }
  });

  it('a slow sender gets 408 after the request timeout, connections past the limit are dropped, and a long wait in the queue is not a slow request', async () => {
    const { port, admin, ci, held } = await oneMachineHeld(MAX_CONNECTIONS);

    // A request that waits in the queue far longer than the request timeout: its whole request was received.
    const waiting = once(port, 'POST', '/api/v1/sessions', ci, { nodes_specs: [{ pool: 'solo', quantity: 1 }], wait: 120 });
    await sleep(300);
    const slow = Array.from({ length: MAX_CONNECTIONS - 1 }, () => slowSender(port));
    await sleep(500);
    // The limit is reached: the next connection is dropped, not queued behind the slow ones.
    await expect(once(port, 'GET', '/api/v1/pools', admin)).rejects.toThrow(/ECONNRESET|socket hang up|EPIPE/);

    const answers = await Promise.all(slow.map((s) => s.answer));
    for (const a of answers) expect(a).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n[^]*\r\n\r\n\{"detail":"the request was not sent whole within 1 s \(DUFFY_REQUEST_TIMEOUT_SECONDS\)"\}$/);
    // Headers past Node's limit, and bytes that are no HTTP: refused in JSON too.
    const raw = (text: string) =>
      new Promise<string>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => socket.write(text));
        let got = '';
        socket.on('data', (d) => (got += d));
        socket.on('close', () => resolve(got));
        socket.on('error', () => undefined);
      });
    expect(await raw(`GET /api/v1/pools HTTP/1.1\r\nHost: duffy\r\nX-Big: ${'x'.repeat(20_000)}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 431 [^]*\{"detail":"the request headers are too large"\}$/);
    expect(await raw('NOT HTTP AT ALL\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 Bad Request[^]*\{"detail":"not a readable HTTP request \(HPE_[A-Z_]+\)"\}$/);
    // The server closed their connections (they never closed their own side): everyone is served again, and the
    // waiting request gets the machine when it is freed.
    expect((await once(port, 'PUT', `/api/v1/sessions/${held}`, ci, { active: false })).status).toBe(200);
    const served = await waiting;
    expect(served.status).toBe(201);
    expect(served.body.session.nodes.map((n: { hostname: string }) => n.hostname)).toEqual(['solo-1.test']);
  });

  it('goes on serving after a SIGHUP (`systemctl reload`), which used to stop it', async () => {
    const { port, ci, held } = await oneMachineHeld(64);
    child!.kill('SIGHUP');
    await sleep(500);
    expect(child!.exitCode).toBeNull();
    expect((await once(port, 'PUT', `/api/v1/sessions/${held}`, ci, { active: false })).status).toBe(200);
  });

  it('by default takes the open-files limit less room for its own files, at most 10,000', () => {
    const limits = join(mkdtempSync(join(tmpdir(), 'duffy-limits-')), 'limits');
    const file = (soft: string) => (writeFileSync(limits, `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                 524288               files\n`), limits);
    expect(defaultMaxConnections(file('1024'))).toBe(512);
    expect(defaultMaxConnections(file('20000'))).toBe(10_000);
    expect(defaultMaxConnections(file('unlimited'))).toBe(10_000);
    expect(defaultMaxConnections(file('256'))).toBe(64);
    expect(defaultMaxConnections(join(limits, 'none'))).toBe(512);
  });
});
