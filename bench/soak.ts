/**
 * SOAK: memory of the built server over a long history. One server (embedded stores) under a steady mixed load from a
 * worker thread of the bench process: request + release by several tenants, some sessions left to expire (an
 * `expires_at` a second ahead, ended by the reconciler), requests that queue (`wait`) for a pool of 2 machines, and
 * GET lists. At a few points of history the load pauses, and RSS (/proc) and heap (/metrics, after a full GC run by
 * a preloaded SIGWINCH handler) are read; then the server restarts on the ledger it wrote and is read again.
 * Prints figures, asserts nothing.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { stringify } from 'yaml';
import { basic, call } from './http-client.js';
import { freePort, stop } from './startup.js';

const SCRIPT = fileURLToPath(import.meta.url);
const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const GC_HOOK = pathToFileURL(fileURLToPath(new URL('./soak-gc.js', import.meta.url))).href;
const ADMIN_KEY = '00000000-0000-4000-8000-00000000beef';
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const count = (n: number) => n.toLocaleString('en-US');
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

const CYCLERS_PER_TENANT = 6;
const CYCLE_TENANTS = 6;
const QUEUERS = 4;
/** One cycle in EXPIRE_EVERY leaves its session to expire instead of releasing it. */
const EXPIRE_EVERY = 100;

interface SoakJob {
  url: string;
  cyclers: string[];
  queuers: string[];
  lister: string;
  admin: string;
}

/** Worker -> parent. */
type Report = { type: 'progress'; sessions: number } | { type: 'paused'; sessions: number } | { type: 'done'; statuses: Record<string, number> };

/** Runs in the worker until told to stop; pauses (every client at its gate, nothing in flight) when told to. */
async function soakLoad(job: SoakJob): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.cyclers.length + job.queuers.length + 1 });
  const statuses: Record<string, number> = {};
  let sessions = 0;
  let lastId = 1;
  let stopping = false;
  let paused: { resume: Promise<void>; go: () => void } | null = null;
  let atGate = 0;
  const clients = job.cyclers.length + job.queuers.length + 1;
  const gate = async () => {
    while (paused) {
      atGate += 1;
      if (atGate === clients) parentPort!.postMessage({ type: 'paused', sessions } satisfies Report);
      await paused.resume;
      atGate -= 1;
    }
  };
  parentPort!.on('message', (m: 'pause' | 'resume' | 'stop') => {
    if (m === 'pause') {
      let go!: () => void;
      paused = { resume: new Promise<void>((r) => (go = r)), go };
    } else {
      const p = paused;
      paused = null;
      if (m === 'stop') stopping = true;
      p?.go();
    }
  });
  const progress = setInterval(() => parentPort!.postMessage({ type: 'progress', sessions } satisfies Report), 100);
  const send = async (method: string, path: string, auth: string, body: unknown) => {
    const r = await call(agent, job.url, method, path, auth, body);
    const key = `${method} ${path.replace(/\/\d+$/, '/{id}')} ${r.status}`;
    statuses[key] = (statuses[key] ?? 0) + 1;
    return r;
  };
  const created = (r: { status: number; text: string }) => {
    if (r.status !== 201) return null;
    sessions += 1;
    const id = (JSON.parse(r.text) as { session: { id: number } }).session.id;
    lastId = Math.max(lastId, id);
    return id;
  };
  const cycler = async (auth: string, n: number) => {
    for (let i = n; !stopping; i++) {
      await gate();
      if (stopping) break;
      const id = created(await send('POST', '/api/v1/sessions', auth, { nodes_specs: [{ pool: 'soak-big', quantity: 1 }] }));
      if (id === null) continue;
      // Left to the reconciler: its expiry a second ahead.
      const body = i % EXPIRE_EVERY === 0 ? { expires_at: new Date(Date.now() + 1000).toISOString() } : { active: false };
      await send('PUT', `/api/v1/sessions/${id}`, auth, body);
    }
  };
  const queuer = async (auth: string) => {
    while (!stopping) {
      await gate();
      if (stopping) break;
      const id = created(await send('POST', '/api/v1/sessions', auth, { wait: 60, nodes_specs: [{ pool: 'soak-small', quantity: 1 }] }));
      if (id !== null) await send('PUT', `/api/v1/sessions/${id}`, auth, { active: false });
    }
  };
  const lister = async () => {
    while (!stopping) {
      await gate();
      if (stopping) break;
      await send('GET', '/api/v1/sessions', job.lister, undefined);
      await send('GET', '/api/v1/sessions', job.admin, undefined);
      await send('GET', `/api/v1/sessions/${1 + Math.floor(Math.random() * lastId)}`, job.admin, undefined);
      await sleep(100);
    }
  };
  await Promise.all([...job.cyclers.map(cycler), ...job.queuers.map(queuer), lister()]);
  clearInterval(progress);
  agent.destroy();
  parentPort!.postMessage({ type: 'done', statuses } satisfies Report);
}

/** The server process's resident set now and at its highest (VmRSS, VmHWM), in bytes; Linux only. */
function rssOf(pid: number): { rss: number; peak: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)![1]) * 1024;
    return { rss: kib('VmRSS'), peak: kib('VmHWM') };
  } catch {
    return null;
  }
}

async function metric(url: string, names: string[]): Promise<number[]> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return names.map((n) => Number(new RegExp(`^${n} ([0-9.e+]+)`, 'm').exec(text)?.[1] ?? NaN));
}

async function startServer(env: Record<string, string>, url: string): Promise<{ child: ChildProcess; seconds: number }> {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--expose-gc', '--import', GC_HOOK, MAIN], { env: { ...process.env, ...env, NODE_OPTIONS: '' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-2000)));
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}: ${stderr}`);
    const up = await fetch(`${url}/health`).then((r) => r.status === 200, () => false);
    if (up) return { child, seconds: (performance.now() - t0) / 1000 };
    if (performance.now() - t0 > 600_000) throw new Error(`no /health answer in 600 s: ${stderr}`);
    await sleep(100);
  }
}

/** RSS as the server has it, then RSS and heap right after a full GC, and the ledger's length. */
async function sample(child: ChildProcess, url: string): Promise<string> {
  const seen = rssOf(child.pid!);
  child.kill('SIGWINCH');
  await sleep(300);
  const after = rssOf(child.pid!);
  const [used, total, position] = await metric(url, ['duffy_nodejs_heap_size_used_bytes', 'duffy_nodejs_heap_size_total_bytes', 'duffy_ledger_position']);
  const rss = seen && after ? `RSS ${mb(seen.rss)} (${mb(after.rss)} after a full GC)` : 'RSS n/a (no /proc)';
  return `${count(position)} events: ${rss}, heap used ${mb(used)} of ${mb(total)} after the GC`;
}

/**
 * `sessions`: how many sessions the load creates before the restart (some 150 to 350 a second on this shared 2-core machine);
 * the figures are read at a tenth, a half and all of them, and after the restart.
 */
export async function soak(sessions: number, port?: number): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'duffy-bench-soak-'));
  const configFile = join(dataDir, 'soak.yaml');
  const pool = (name: string) => ({ name, type: 'baremetal', arch: 'x86_64', platform: 'intel', driver: 'local', 'release-policy': 'reuse', contextualize: false, 'collect-artifacts': false, 'fill-level': 0 });
  const machine = (p: string, i: number) => ({ hostname: `${p}-${String(i + 1).padStart(3, '0')}.test`, pool: p, state: 'ready' });
  writeFileSync(
    configFile,
    stringify({
      defaults: { 'node-quota': 1000, 'session-lifetime': 3600, 'session-lifetime-max': 7200 },
      pools: [pool('soak-big'), pool('soak-small')],
      machines: [...Array.from({ length: 200 }, (_, i) => machine('soak-big', i)), ...Array.from({ length: 2 }, (_, i) => machine('soak-small', i))],
    }),
  );
  const url = `http://127.0.0.1:${port ?? (await freePort())}`;
  const env = { DUFFY_DATA_DIR: join(dataDir, 'data'), DUFFY_CONFIG: configFile, DUFFY_PORT: new URL(url).port, DUFFY_ADMIN_KEY: ADMIN_KEY, DUFFY_LOG_LEVEL: 'warn' };
  let server: ChildProcess | undefined;
  try {
    server = (await startServer(env, url)).child;
    const agent = new http.Agent({ keepAlive: true });
    const admin = basic('admin', ADMIN_KEY);
    const tenant = async (name: string) => {
      const r = await call(agent, url, 'POST', '/api/v1/tenants', admin, { name, ssh_key: `ssh-ed25519 AAAAC3Nza ${name}@ci`, node_quota: 1000 });
      if (r.status !== 201) throw new Error(`tenant ${name}: ${r.status} ${r.text}`);
      return basic(name, (JSON.parse(r.text) as { tenant: { api_key: string } }).tenant.api_key);
    };
    const cycleTenants: string[] = [];
    for (let t = 0; t < CYCLE_TENANTS; t++) cycleTenants.push(await tenant(`soak-${t}`));
    const queueTenant = await tenant('soak-queue');
    agent.destroy();
    const job: SoakJob = {
      url,
      cyclers: Array.from({ length: CYCLE_TENANTS * CYCLERS_PER_TENANT }, (_, i) => cycleTenants[i % CYCLE_TENANTS]),
      queuers: Array.from({ length: QUEUERS }, () => queueTenant),
      lister: cycleTenants[0],
      admin,
    };
    // Each point is printed as it is read: a long soak shows its figures as it goes.
    console.log(
      `SOAK the built server (embedded stores, log level warn, 200 + 2 machines) under ${job.cyclers.length} request+release clients (${CYCLE_TENANTS} tenants; 1 session in ${EXPIRE_EVERY} left to expire), ` +
        `${QUEUERS} clients queueing (wait) for 2 machines and 1 lister; load paused 1 s at each point:`,
    );
    console.log(`   at start, 0 sessions, ${await sample(server, url)}`);

    const worker = new Worker(SCRIPT, { workerData: { soak: job } });
    let seen = 0;
    let onPaused: (() => void) | null = null;
    let onDone: ((s: Record<string, number>) => void) | null = null;
    worker.on('message', (r: Report) => {
      if (r.type === 'done') return onDone?.(r.statuses);
      seen = r.sessions;
      if (r.type === 'paused') onPaused?.();
    });
    let failed: unknown = null;
    worker.once('error', (err) => (failed = err));
    const t0 = performance.now();
    let pausedMs = 0;
    /** Waits for `n` sessions, pauses the load, lets projections and the reconciler catch up, reads, resumes. */
    const at = async (n: number) => {
      while (seen < n) {
        if (failed) throw failed;
        await sleep(50);
      }
      const p0 = performance.now();
      await new Promise<void>((r) => ((onPaused = r), worker.postMessage('pause')));
      await sleep(1000);
      console.log(`   after ${count(seen)} sessions, ${await sample(server!, url)}`);
      worker.postMessage('resume');
      pausedMs += performance.now() - p0;
    };
    for (const n of new Set([Math.round(sessions / 10), Math.round(sessions / 2), sessions])) await at(n);
    const loadSeconds = (performance.now() - t0 - pausedMs) / 1000;
    const statuses = await new Promise<Record<string, number>>((r) => ((onDone = r), worker.postMessage('stop')));
    await worker.terminate();
    const peak = rssOf(server.pid!)?.peak;
    await stop(server);

    const again = await startServer(env, url);
    server = again.child;
    await sleep(1000);
    console.log(`   restart on that ledger: /health in ${again.seconds.toFixed(1)} s, 1 s later ${await sample(server, url)}`);
    const total = Object.values(statuses).reduce((a, b) => a + b, 0);
    const answers = Object.entries(statuses)
      .sort()
      .map(([k, v]) => `${k}: ${count(v)}`)
      .join(', ');
    console.log(
      `   load: ${count(Math.round(seen / loadSeconds))} sessions/s, ${count(Math.round(total / loadSeconds))} HTTP req/s over ${loadSeconds.toFixed(0)} s` +
        `${peak ? `, highest RSS before the restart ${mb(peak)}` : ''} [${answers}]`,
    );
  } finally {
    if (server) await stop(server);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (!isMainThread && (workerData as { soak?: SoakJob })?.soak) void soakLoad((workerData as { soak: SoakJob }).soak);
