import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { percentile } from '../src/domain/statistics.js';
import { writeScaleInventory } from './inventory.js';

/** The built server (`npm run bench` builds it first). */
const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Starts the built server as its own process; resolves with the seconds until /health answers 200. */
async function timeToHealth(env: Record<string, string>, timeoutMs: number): Promise<{ seconds: number; child: ChildProcess; url: string }> {
  const port = await freePort();
  const t0 = performance.now();
  const child = spawn(process.execPath, [MAIN], { env: { ...process.env, ...env, DUFFY_PORT: String(port), DUFFY_LOG_LEVEL: 'silent' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-2000)));
  while (performance.now() - t0 < timeoutMs) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}: ${stderr}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/health`);
      if (res.status === 200) return { seconds: (performance.now() - t0) / 1000, child, url: `http://127.0.0.1:${port}` };
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`no /health answer within ${timeoutMs} ms: ${stderr}`);
}

export function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
  });
}

const ADMIN_KEY = '00000000-0000-4000-8000-00000000beef';
const basic = (name: string, key: string) => `Basic ${Buffer.from(`${name}:${key}`).toString('base64')}`;

/** One client, request + release in a loop for `seconds`: the median POST /sessions, as a user of the farm sees it. */
async function postLatency(url: string, seconds: number): Promise<{ median: number; cycles: number }> {
  const call = async (method: string, path: string, auth: string, body: unknown) => {
    const res = await fetch(url + path, { method, headers: { 'content-type': 'application/json', authorization: auth }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as any };
  };
  const t = await call('POST', '/api/v1/tenants', basic('admin', ADMIN_KEY), { name: 'bench', ssh_key: 'ssh-ed25519 AAAAC3Nza bench@ci', node_quota: 100 });
  if (t.status !== 201) throw new Error(`tenant: ${t.status} ${JSON.stringify(t.body)}`);
  const auth = basic('bench', t.body.tenant.api_key);
  const times: number[] = [];
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    const t0 = performance.now();
    const r = await call('POST', '/api/v1/sessions', auth, { nodes_specs: [{ type: 'baremetal', arch: 'x86_64', quantity: 1 }] });
    times.push(performance.now() - t0);
    if (r.status !== 201) throw new Error(`request: ${r.status} ${JSON.stringify(r.body)}`);
    await call('PUT', `/api/v1/sessions/${r.body.session.id}`, auth, { active: false });
  }
  return { median: percentile(times, 50), cycles: times.length };
}

/**
 * P8: the built server with a generated inventory: start-up until /health answers (first start registers the
 * inventory; the restart folds the existing ledger), and one client's median POST /sessions on it.
 */
export async function p8(sizes: readonly number[] = [200, 20_000], seconds = 5): Promise<void> {
  const parts: string[] = [];
  for (const machines of sizes) {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-bench-p8-'));
    const env = { DUFFY_CONFIG: writeScaleInventory(join(dir, 'inventory.yaml'), machines, (i) => `n${i + 1}.bench.test`), DUFFY_DATA_DIR: join(dir, 'data'), DUFFY_ADMIN_KEY: ADMIN_KEY };
    const first = await timeToHealth(env, 600_000);
    const post = await postLatency(first.url, seconds);
    await stop(first.child);
    const again = await timeToHealth(env, 600_000);
    await stop(again.child);
    rmSync(dir, { recursive: true, force: true });
    parts.push(
      `${machines.toLocaleString('en-US')} machines: first start ${first.seconds.toFixed(1)} s, restart ${again.seconds.toFixed(1)} s, ` +
        `POST /sessions median ${post.median.toFixed(1)} ms (one client, ${post.cycles} request+release cycles in ${seconds} s)`,
    );
  }
  console.log(`P8 the built server with a generated inventory (embedded stores; start-up = until /health answers): ${parts.join('; ')}`);
}
