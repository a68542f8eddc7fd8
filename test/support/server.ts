import type { INestApplication } from '@nestjs/common';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { DEMO_CONFIG, type Settings, loadConfig } from '../../src/config/config.js';
import { createApp } from '../../src/main.js';
import { collect, openLedger } from '../../src/audit/audit.js';
import type { RecordedEvent } from '../../src/application/ports/event-store.port.js';
import { Ledger } from '../../src/application/ledger.service.js';
import { hostKey } from '../../src/domain/world.js';

// Request logs would drown the test output; DUFFY_TEST_LOG=1 shows them.
process.env.DUFFY_LOG_LEVEL ??= process.env.DUFFY_TEST_LOG ? 'info' : 'silent';

export const ADMIN_KEY = '00000000-0000-4000-8000-000000000001';

export interface Running {
  app: INestApplication;
  url: string;
  dataDir: string;
  admin: Client;
  client(name: string, key: string): Client;
  close(): Promise<void>;
}

export type Reply = { status: number; body: any; headers: Headers };

export class Client {
  constructor(
    readonly url: string,
    readonly auth?: string,
  ) {}

  /** `raw`: the body's exact bytes instead of `body` as JSON; `extra`: headers beside (or instead of) the defaults. */
  async call(method: string, path: string, body?: unknown, raw?: string, extra: Record<string, string> = {}): Promise<Reply> {
    const headers: Record<string, string> = { 'content-type': 'application/json', ...(this.auth ? { authorization: this.auth } : {}), ...extra };
    const res = await fetch(this.url + path, { method, headers, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON: keep the text so the test can show it */
    }
    return { status: res.status, body: parsed, headers: res.headers };
  }
  get = (path: string) => this.call('GET', path);
  post = (path: string, body: unknown) => this.call('POST', path, body);
  put = (path: string, body: unknown) => this.call('PUT', path, body);
}

export const basic = (name: string, key: string) => `Basic ${Buffer.from(`${name}:${key}`).toString('base64')}`;

/**
 * The demo inventory without playbooks on the hand-over path (no contextualize, `reuse`), so API tests run in
 * milliseconds; the provisioning suites use configurations that run Ansible for real.
 */
export function instantDemoConfig(): string {
  const demo = parse(readFileSync(DEMO_CONFIG, 'utf8'));
  for (const pool of demo.pools) Object.assign(pool, { contextualize: false, 'release-policy': 'reuse', 'collect-artifacts': false, 'fill-level': 0 });
  for (const m of demo.machines) m.state = 'ready';
  const file = join(mkdtempSync(join(tmpdir(), 'duffy-cfg-')), 'instant-demo.yaml');
  writeFileSync(file, stringify(demo));
  return file;
}

/** A real Duffy on a free port with its own data dir: the embedded ledger, the demo inventory unless told otherwise. */
export async function startDuffy(opts: { dataDir?: string; configFile?: string; reconcileEveryMs?: number } = {}): Promise<Running> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'duffy-e2e-'));
  const configFile = opts.configFile ?? instantDemoConfig();
  const settings: Settings = { port: 0, dataDir, configFile, adminName: 'admin', adminKey: ADMIN_KEY, config: loadConfig(configFile) };
  const { app } = await createApp(settings, { logger: process.env.DUFFY_TEST_LOG ? undefined : false, reconcileEveryMs: opts.reconcileEveryMs ?? 60_000 });
  await app.listen(0, '127.0.0.1');
  const url = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
  return {
    app,
    url,
    dataDir,
    admin: new Client(url, basic('admin', ADMIN_KEY)),
    client: (name, key) => new Client(url, basic(name, key)),
    close: () => app.close(),
  };
}

/** Creates a tenant through the API and returns a client logged in as it. */
export async function newTenant(duffy: Running, name: string, extra: Record<string, unknown> = {}): Promise<Client> {
  const r = await duffy.admin.post('/api/v1/tenants', { name, ssh_key: `ssh-ed25519 AAAAC3Nza ${name}@ci`, ...extra });
  if (r.status !== 201) throw new Error(`tenant ${name}: ${r.status} ${JSON.stringify(r.body)}`);
  return duffy.client(name, r.body.tenant.api_key);
}

/** Every event of a running server's ledger, in order. */
export const ledgerEvents = (duffy: Running): Promise<RecordedEvent[]> => collect(duffy.app.get(Ledger).store);

/** Every event of a ledger file, opened read-only as an auditor does (its server may be running or gone). */
export async function ledgerFile(file: string): Promise<RecordedEvent[]> {
  const store = await openLedger(file);
  try {
    return await collect(store);
  } finally {
    await store.close();
  }
}

/** Resolves once the server's World satisfies `ready` (the playbook suites wait up to 2 minutes by default). */
export const until = (duffy: Running, ready: () => boolean, ms = 120_000) => duffy.app.get(Ledger).until(ready, ms);

/** A machine of the server's World, by its host name. */
export function machine(duffy: Running, hostname: string) {
  const w = duffy.app.get(Ledger).world;
  return w.machines.get(w.machineIdsByHostname.get(hostKey(hostname))!)!;
}
