/**
 * P1: request + release over HTTP at 64 keep-alive clients. Duffy (the built server, `npm start`'s code, default
 * log level), Duffy's Nest pipeline with nothing behind it (nest-floor.ts), Nest alone (nest-bare.ts) and a bare
 * Express app with the same two routes each run in a process of their own; the load comes from a worker thread of the
 * bench process, a third process. Prints figures, asserts nothing.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { stringify } from 'yaml';
import { percentile } from '../src/domain/statistics.js';

const SCRIPT = fileURLToPath(import.meta.url);
const DIST = fileURLToPath(new URL('..', import.meta.url));
const ms = (x: number) => `${x.toFixed(x < 10 ? 2 : 1)} ms`;
const count = (n: number) => n.toLocaleString('en-US');
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

interface LoadJob {
  url: string;
  /** Authorization header per client. */
  auths: string[];
  seconds: number;
  warmupSeconds: number;
}

interface LoadResult {
  cycles: number;
  requests: number;
  seconds: number;
  post: number[];
  put: number[];
  statuses: Record<string, number>;
}

function call(agent: http.Agent, url: string, method: string, path: string, auth: string | undefined, body: unknown): Promise<{ status: number; text: string }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url + path,
      { method, agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...(auth ? { authorization: auth } : {}) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** Runs in the worker: each client loops POST /sessions, PUT /sessions/{id} {"active": false}. */
async function clientLoop(job: LoadJob): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.auths.length });
  const measureFrom = performance.now() + job.warmupSeconds * 1000;
  const end = measureFrom + job.seconds * 1000;
  const result: LoadResult = { cycles: 0, requests: 0, seconds: job.seconds, post: [], put: [], statuses: {} };
  const note = (status: number, method: string, t0: number) => {
    if (t0 < measureFrom) return;
    const key = `${method} ${status}`;
    result.statuses[key] = (result.statuses[key] ?? 0) + 1;
    result.requests += 1;
    (method === 'POST' ? result.post : result.put).push(performance.now() - t0);
  };
  const spec = { nodes_specs: [{ type: 'baremetal', arch: 'x86_64', quantity: 1 }] };
  await Promise.all(
    job.auths.map(async (auth) => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const r = await call(agent, job.url, 'POST', '/api/v1/sessions', auth, spec);
        note(r.status, 'POST', t0);
        if (r.status !== 201) continue;
        const id = (JSON.parse(r.text) as { session: { id: number } }).session.id;
        const t1 = performance.now();
        const d = await call(agent, job.url, 'PUT', `/api/v1/sessions/${id}`, auth, { active: false });
        note(d.status, 'PUT', t1);
        if (t0 >= measureFrom && d.status === 200) result.cycles += 1;
      }
    }),
  );
  agent.destroy();
  result.seconds = (performance.now() - measureFrom) / 1000;
  return result;
}

function load(job: LoadJob): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(SCRIPT, { workerData: job });
    worker.once('message', (r: LoadResult) => resolve(r));
    worker.once('error', reject);
    worker.once('exit', (code) => code !== 0 && reject(new Error(`load worker exited with ${code}`)));
  });
}

function describeLoad(name: string, r: LoadResult): { rps: number; p99: number; line: string } {
  const all = [...r.post, ...r.put];
  const rps = r.requests / r.seconds;
  const statuses = Object.entries(r.statuses)
    .sort()
    .map(([k, v]) => `${k}: ${count(v)}`)
    .join(', ');
  return {
    rps,
    p99: percentile(all, 99),
    line:
      `${name}: ${count(Math.round(r.cycles / r.seconds))} request+release/s, ${count(Math.round(rps))} HTTP req/s, ` +
      `latency p50 ${ms(percentile(all, 50))} p99 ${ms(percentile(all, 99))} ` +
      `(POST p50 ${ms(percentile(r.post, 50))} p99 ${ms(percentile(r.post, 99))}, PUT p50 ${ms(percentile(r.put, 50))} p99 ${ms(percentile(r.put, 99))}) [${statuses}]`,
  };
}

const basic = (name: string, key: string) => `Basic ${Buffer.from(`${name}:${key}`).toString('base64')}`;

async function ready(url: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`${url}: server exited with ${child.exitCode}`);
    const up = await new Promise<boolean>((resolve) => {
      http.get(`${url}/health`, (res) => (res.resume(), resolve(true))).on('error', () => resolve(false));
    });
    if (up) return;
    await sleep(100);
  }
  throw new Error(`${url}: server did not start`);
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

export async function p1(seconds: number): Promise<void> {
  const clients = 64;
  const tenants = 8;
  const machines = 200;
  const warmupSeconds = 2;
  const port = 30000 + Math.floor(Math.random() * 10000);

  // Duffy: embedded ledger (synchronous=FULL) in a temp dir, one pool of 200 ready machines, no playbooks on the path.
  const dataDir = mkdtempSync(join(tmpdir(), 'duffy-bench-p1-'));
  const configFile = join(dataDir, 'bench.yaml');
  writeFileSync(
    configFile,
    stringify({
      defaults: { 'node-quota': 1000, 'session-lifetime': 3600, 'session-lifetime-max': 7200 },
      pools: [{ name: 'metal-bench', type: 'baremetal', arch: 'x86_64', platform: 'intel', driver: 'local', 'release-policy': 'reuse', contextualize: false, 'collect-artifacts': false, 'fill-level': 0 }],
      machines: Array.from({ length: machines }, (_, i) => ({ hostname: `bench-${String(i + 1).padStart(3, '0')}.test`, pool: 'metal-bench', state: 'ready' })),
    }),
  );
  const adminKey = '00000000-0000-4000-8000-00000000beef';
  const duffyUrl = `http://127.0.0.1:${port}`;
  const duffy = spawn(process.execPath, [join(DIST, 'src/main.js')], {
    env: { ...process.env, DUFFY_DATA_DIR: dataDir, DUFFY_CONFIG: configFile, DUFFY_PORT: String(port), DUFFY_ADMIN_KEY: adminKey, NODE_OPTIONS: '' },
    stdio: 'ignore',
  });
  let duffyLine;
  try {
    await ready(duffyUrl, duffy);
    const agent = new http.Agent({ keepAlive: true });
    const auths: string[] = [];
    for (let t = 0; t < tenants; t++) {
      const r = await call(agent, duffyUrl, 'POST', '/api/v1/tenants', basic('admin', adminKey), { name: `bench-${t}`, ssh_key: `ssh-ed25519 AAAAC3Nza bench-${t}@ci`, node_quota: 1000 });
      if (r.status !== 201) throw new Error(`tenant bench-${t}: ${r.status} ${r.text}`);
      auths.push(basic(`bench-${t}`, (JSON.parse(r.text) as { tenant: { api_key: string } }).tenant.api_key));
    }
    agent.destroy();
    duffyLine = describeLoad('Duffy', await load({ url: duffyUrl, auths: Array.from({ length: clients }, (_, i) => auths[i % tenants]), seconds, warmupSeconds }));
  } finally {
    await stop(duffy);
    rmSync(dataDir, { recursive: true, force: true });
  }

  // The yardsticks: the same two routes answered at once, by Duffy's Nest pipeline, by Nest alone and by bare Express.
  const yardstick = async (name: string, script: string, yardPort: number) => {
    const url = `http://127.0.0.1:${yardPort}`;
    const child = spawn(process.execPath, [join(DIST, script)], { env: { ...process.env, PORT: String(yardPort), NODE_OPTIONS: '' }, stdio: 'ignore' });
    try {
      await ready(url, child);
      return describeLoad(name, await load({ url, auths: Array.from({ length: clients }, () => ''), seconds, warmupSeconds }));
    } finally {
      await stop(child);
    }
  };
  const floorLine = await yardstick('Nest pipeline, no work', 'bench/nest-floor.js', port + 2);
  const nestLine = await yardstick('bare Nest', 'bench/nest-bare.js', port + 3);
  const bareLine = await yardstick('bare Express', 'bench/bare-express.js', port + 1);

  console.log(`P1 HTTP, ${clients} keep-alive clients on loopback (${tenants} tenants, ${machines} machines), ${seconds} s after ${warmupSeconds} s warm-up, each server in its own process:`);
  console.log(`   ${duffyLine.line}`);
  console.log(`   ${floorLine.line}`);
  console.log(`   ${nestLine.line}`);
  console.log(`   ${bareLine.line}`);
  console.log(`   Duffy / bare Express: ${(duffyLine.rps / bareLine.rps).toFixed(3)} of the HTTP requests per second (aim >= 0.40); p99 ${(duffyLine.p99 / bareLine.p99).toFixed(2)}x bare Express's (aim <= 2x)`);
  console.log(`   Duffy / Nest pipeline: ${(duffyLine.rps / floorLine.rps).toFixed(3)} of the requests per second, p99 ${(duffyLine.p99 / floorLine.p99).toFixed(2)}x; Nest pipeline / bare Express: ${(floorLine.rps / bareLine.rps).toFixed(3)}, p99 ${(floorLine.p99 / bareLine.p99).toFixed(2)}x; bare Nest / bare Express: ${(nestLine.rps / bareLine.rps).toFixed(3)}, p99 ${(nestLine.p99 / bareLine.p99).toFixed(2)}x`);
}

if (!isMainThread) clientLoop(workerData as LoadJob).then((r) => parentPort!.postMessage(r));
