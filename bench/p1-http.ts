/**
 * P1: request + release over HTTP at 64 keep-alive clients. Duffy (the built server, `npm start`'s code, default
 * log level), Duffy's Nest pipeline with nothing behind it (nest-floor.ts), the same answering once the ledger
 * holds the request's events durably (nest-floor.ts with FLOOR_LEDGER), Nest alone (nest-bare.ts) and a bare Express
 * app with the same two routes each run in a process of their own; the load comes from a worker thread of the bench
 * process, another process. Rounds take the servers in turn. Prints figures, asserts nothing.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { stringify } from 'yaml';
import { percentile } from '../src/domain/statistics.js';
import { basic, call } from './http-client.js';

const SCRIPT = fileURLToPath(import.meta.url);
const DIST = fileURLToPath(new URL('..', import.meta.url));
/** Issue 12's aim: Duffy's HTTP requests per second against bare Express's. */
const AIM_RATIO = 0.4;
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
  /** The server's CPU seconds over the measured window (from /proc): its main thread, and all its other threads. */
  cpu?: { main: number; others: number };
  /** The load generator's CPU seconds over the same window: this bench process, all its threads. */
  loadCpu?: number;
}

/** CPU seconds of each thread of a process so far, by thread id (Linux /proc; empty elsewhere). */
function threadSeconds(pid: number): Map<string, number> {
  const seconds = new Map<string, number>();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return seconds;
  }
  for (const tid of tids) {
    try {
      // After the command name (which may hold spaces): state is field 3, utime and stime fields 14 and 15, in ticks.
      const fields = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ').at(-1)!.split(' ');
      seconds.set(tid, (Number(fields[11]) + Number(fields[12])) / 100);
    } catch {
      /* the thread ended meanwhile */
    }
  }
  return seconds;
}

function cpuBetween(pid: number, before: Map<string, number>, after: Map<string, number>): { main: number; others: number } {
  let main = 0;
  let others = 0;
  for (const [tid, t] of after) {
    const used = t - (before.get(tid) ?? 0);
    if (tid === String(pid)) main += used;
    else others += used;
  }
  return { main, others };
}

/** Runs in the worker: each client loops POST /sessions, PUT /sessions/{id} {"active": false}. */
async function clientLoop(job: LoadJob): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.auths.length });
  const measureFrom = performance.now() + job.warmupSeconds * 1000;
  const end = measureFrom + job.seconds * 1000;
  // Tells the bench when the measured window opens, so it reads the server's CPU then.
  setTimeout(() => parentPort?.postMessage({ measuring: true }), job.warmupSeconds * 1000);
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

function load(job: LoadJob, serverPid?: number): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(SCRIPT, { workerData: job });
    let before = new Map<string, number>();
    let loadBefore = new Map<string, number>();
    worker.on('message', (m: LoadResult | { measuring: true }) => {
      if (serverPid === undefined) return 'measuring' in m || resolve(m);
      if ('measuring' in m) {
        before = threadSeconds(serverPid);
        loadBefore = threadSeconds(process.pid);
        return;
      }
      const loadCpu = cpuBetween(process.pid, loadBefore, threadSeconds(process.pid));
      resolve({ ...m, cpu: cpuBetween(serverPid, before, threadSeconds(serverPid)), loadCpu: loadCpu.main + loadCpu.others });
    });
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

/** Several runs of one server as one: requests, cycles and seconds summed, latencies pooled. */
function merged(runs: LoadResult[]): LoadResult {
  const all: LoadResult = { cycles: 0, requests: 0, seconds: 0, post: [], put: [], statuses: {} };
  for (const r of runs) {
    if (r.cpu) all.cpu = { main: (all.cpu?.main ?? 0) + r.cpu.main, others: (all.cpu?.others ?? 0) + r.cpu.others };
    if (r.loadCpu !== undefined) all.loadCpu = (all.loadCpu ?? 0) + r.loadCpu;
    all.cycles += r.cycles;
    all.requests += r.requests;
    all.seconds += r.seconds;
    for (const x of r.post) all.post.push(x);
    for (const x of r.put) all.put.push(x);
    for (const [k, v] of Object.entries(r.statuses)) all.statuses[k] = (all.statuses[k] ?? 0) + v;
  }
  return all;
}

/** CPU seconds spent over a run, in milliseconds per HTTP request of it. */
const msPerRequest = (r: LoadResult, cpuSeconds: number) => (cpuSeconds * 1000) / r.requests;
const median = (xs: number[]) => percentile(xs, 50);
const ratios = (xs: number[], digits: number, unit = '') => xs.map((x) => `${x.toFixed(digits)}${unit}`).join(', ');

/**
 * The four servers run side by side for the whole bench; each round loads each of them in turn, so every ratio
 * compares runs minutes apart, not a whole bench apart, and the rounds show how much a figure moves.
 */
export async function p1(seconds: number, rounds: number): Promise<void> {
  const clients = 64;
  const tenants = 8;
  const machines = 200;
  const warmupSeconds = 2;
  // Below the ephemeral range (32768 and up here), where a client socket of an earlier round may hold the port.
  const port = 20000 + Math.floor(Math.random() * 10000);

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
  const children: ChildProcess[] = [];
  const spawnServer = (script: string, env: Record<string, string>) => {
    const child = spawn(process.execPath, [join(DIST, script)], { env: { ...process.env, ...env, NODE_OPTIONS: '' }, stdio: 'ignore' });
    children.push(child);
    return child;
  };
  // The yardsticks: the same two routes answered at once, by Duffy's Nest pipeline, by Nest alone and by bare Express.
  const servers = [
    { name: 'Duffy', script: 'src/main.js', port },
    { name: 'Nest pipeline, no work', script: 'bench/nest-floor.js', port: port + 2 },
    { name: 'Nest pipeline + ledger append', script: 'bench/nest-floor.js', port: port + 4 },
    { name: 'bare Nest', script: 'bench/nest-bare.js', port: port + 3 },
    { name: 'bare Express', script: 'bench/bare-express.js', port: port + 1 },
  ].map((s) => ({ ...s, url: `http://127.0.0.1:${s.port}`, auths: Array.from({ length: clients }, () => ''), runs: [] as LoadResult[], pid: undefined as number | undefined }));
  const [duffy, floor, durable, nest, bare] = servers;
  try {
    for (const s of servers) {
      const env: Record<string, string> =
        s === duffy
          ? { DUFFY_DATA_DIR: dataDir, DUFFY_CONFIG: configFile, DUFFY_PORT: String(s.port), DUFFY_ADMIN_KEY: adminKey }
          : s === durable
            ? { PORT: String(s.port), FLOOR_LEDGER: join(dataDir, 'floor', 'ledger.sqlite') }
            : { PORT: String(s.port) };
      const child = spawnServer(s.script, env);
      s.pid = child.pid;
      await ready(s.url, child);
    }
    const agent = new http.Agent({ keepAlive: true });
    const auths: string[] = [];
    for (let t = 0; t < tenants; t++) {
      const r = await call(agent, duffy.url, 'POST', '/api/v1/tenants', basic('admin', adminKey), { name: `bench-${t}`, ssh_key: `ssh-ed25519 AAAAC3Nza bench-${t}@ci`, node_quota: 1000 });
      if (r.status !== 201) throw new Error(`tenant bench-${t}: ${r.status} ${r.text}`);
      auths.push(basic(`bench-${t}`, (JSON.parse(r.text) as { tenant: { api_key: string } }).tenant.api_key));
    }
    agent.destroy();
    duffy.auths = Array.from({ length: clients }, (_, i) => auths[i % tenants]);
    for (let round = 0; round < rounds; round++) {
      for (const s of servers) {
        s.runs.push(await load({ url: s.url, auths: s.auths, seconds, warmupSeconds }, s.pid));
        // What a server still does after its load (Duffy's projections, checkpoint, GC) must not weigh on the next.
        await sleep(500);
      }
    }
  } finally {
    await Promise.all(children.map(stop));
    rmSync(dataDir, { recursive: true, force: true });
  }

  // Each server's rounds as one, merged once for the lines below.
  const total = new Map(servers.map((s) => [s, merged(s.runs)]));
  const line = new Map(servers.map((s) => [s, describeLoad(s.name, total.get(s)!)]));
  const perRound = (a: (typeof servers)[number], b: (typeof servers)[number]) =>
    a.runs.map((r, i) => ({ rps: r.requests / r.seconds / (b.runs[i].requests / b.runs[i].seconds), p99: percentile([...r.post, ...r.put], 99) / percentile([...b.runs[i].post, ...b.runs[i].put], 99) }));
  const vsBare = perRound(duffy, bare);
  const summary = (a: (typeof servers)[number], b: (typeof servers)[number]) => {
    const rs = perRound(a, b);
    return `${ratios(rs.map((r) => r.rps), 3)} (median ${median(rs.map((r) => r.rps)).toFixed(3)}), p99 ${ratios(rs.map((r) => r.p99), 2, 'x')}`;
  };
  console.log(
    `P1 HTTP, ${clients} keep-alive clients on loopback (${tenants} tenants, ${machines} machines), each server in its own process, ${rounds} rounds: each server in turn for ${seconds} s after ${warmupSeconds} s warm-up (figures over all rounds):`,
  );
  for (const s of servers) console.log(`   ${line.get(s)!.line}`);
  console.log(
    `   Duffy / bare Express per round: ${ratios(vsBare.map((r) => r.rps), 3)} of the HTTP requests per second, median ${median(vsBare.map((r) => r.rps)).toFixed(3)} (aim >= ${AIM_RATIO.toFixed(2)}); ` +
      `p99 ${ratios(vsBare.map((r) => r.p99), 2, 'x')} bare Express's, median ${median(vsBare.map((r) => r.p99)).toFixed(2)}x (aim <= 2x)`,
  );
  console.log(`   Duffy / Nest pipeline per round: ${summary(duffy, floor)}; Nest pipeline / bare Express: ${summary(floor, bare)}; bare Nest / bare Express: ${summary(nest, bare)}`);
  console.log(`   Nest pipeline + ledger append / bare Express per round: ${summary(durable, bare)}; Duffy / Nest pipeline + ledger append: ${summary(duffy, durable)}`);
  const cpu = servers
    .map((s) => ({ s, all: total.get(s)! }))
    .filter(({ all }) => all.cpu && all.requests > 0)
    .map(({ s, all }) => `${s.name} ${msPerRequest(all, all.cpu!.main).toFixed(3)} + ${msPerRequest(all, all.cpu!.others).toFixed(3)} ms`);
  if (cpu.length) console.log(`   CPU per HTTP request (from /proc over the measured windows), main thread + the process's other threads (V8's garbage collector and compiler helpers, worker threads): ${cpu.join('; ')}`);
  const budget = aimBudget(total.get(duffy)!, total.get(floor)!, total.get(durable)!, total.get(bare)!);
  if (budget) console.log(`   ${budget}`);
}

/**
 * What the aim leaves Duffy on this machine: at AIM_RATIO of bare Express's rate (over all rounds), the cores less what
 * the load generator needs for that many requests (its CPU per request in Duffy's own runs), and the main thread at
 * most all the time.
 */
function aimBudget(duffy: LoadResult, floor: LoadResult, durable: LoadResult, bare: LoadResult): string | undefined {
  if (!duffy.cpu || !floor.cpu || !durable.cpu || duffy.loadCpu === undefined || duffy.requests === 0 || floor.requests === 0 || durable.requests === 0) return undefined;
  const used = (r: LoadResult) => `${msPerRequest(r, r.cpu!.main + r.cpu!.others).toFixed(3)} (main ${msPerRequest(r, r.cpu!.main).toFixed(3)})`;
  const cores = availableParallelism();
  const busy = (r: LoadResult) => `${((r.cpu!.main + r.cpu!.others) / r.seconds).toFixed(2)} + ${(r.loadCpu! / r.seconds).toFixed(2)}`;
  const aimRate = AIM_RATIO * (bare.requests / bare.seconds);
  const load = msPerRequest(duffy, duffy.loadCpu);
  const allThreads = (cores * 1000) / aimRate - load;
  return (
    `The aim on this machine: ${count(Math.round(aimRate))} HTTP req/s, so the ${cores} cores less the load generator's ${load.toFixed(3)} ms per request leave Duffy at most ${allThreads.toFixed(3)} ms of CPU per request ` +
    `(all threads) and ${(1000 / aimRate).toFixed(3)} ms of its main thread; Duffy used ${used(duffy)}, ` +
    `the Nest pipeline with no work ${used(floor)}, with the ledger append ${used(durable)}. ` +
    `Cores busy, server + load generator: Duffy ${busy(duffy)}, the Nest pipeline ${busy(floor)}, with the ledger append ${busy(durable)}${bare.cpu && bare.loadCpu !== undefined ? `, bare Express ${busy(bare)}` : ''}`
  );
}

if (!isMainThread) clientLoop(workerData as LoadJob).then((r) => parentPort!.postMessage(r));
