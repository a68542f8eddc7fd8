import { afterAll, describe, expect, it, jest } from '@jest/globals';
import { Logger } from '@nestjs/common';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { run } from '../../src/cli/main.js';
import { effective } from '../../src/domain/decide.js';
import { emptyWorld, evolve } from '../../src/domain/world.js';
import { inject } from '../support/ansible.js';
import { type Reply, type Running, Client, basic, instantDemoConfig, ledgerFile, startDuffy } from '../support/server.js';

/**
 * Chaos: 24 tenant clients (Jenkins) request, list, extend, release and expire sessions while an admin changes
 * their quotas and lifetimes, retires and reactivates them, resets their keys, takes machines in and out of
 * service (quarantined ones too), retires and adds machines, and ends or opens sessions for them. Seeded:
 * DUFFY_CHAOS_SEED replays one run's choices (the interleaving is the machine's). Checked while it runs: no
 * machine in two active sessions in any list, every 2xx seen by a later GET, no 5xx but a documented 503; at the
 * end: the quota held at each decision (from the ledger), `audit replay` and `audit verify` clean, and a restart on
 * the same data dir serving the same state.
 */
jest.setTimeout(240_000);
const SEED = Number(process.env.DUFFY_CHAOS_SEED || 20261130);
const CLIENTS = Number(process.env.DUFFY_CHAOS_CLIENTS || 24);
const OPS = Number(process.env.DUFFY_CHAOS_OPS || 40);
const ADMIN_OPS = Number(process.env.DUFFY_CHAOS_ADMIN_OPS || 150);
const V1 = '/api/v1';
const DEFAULT_QUOTA = 10;
const POOLS: Record<string, { type: string; arch: string; platform: string }> = {
  'metal-intel-x86_64': { type: 'baremetal', arch: 'x86_64', platform: 'intel' },
  'metal-amd-x86_64': { type: 'baremetal', arch: 'x86_64', platform: 'amd' },
  'metal-arm-aarch64': { type: 'baremetal', arch: 'aarch64', platform: 'arm' },
  'vm-intel-x86_64': { type: 'vm', arch: 'x86_64', platform: 'intel' },
  'vm-arm-aarch64': { type: 'vm', arch: 'aarch64', platform: 'arm' },
};

/** mulberry32: small, seedable, good enough to pick operations. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)],
    chance: (p: number) => next() < p,
    /** One of the weighted names. */
    weighted: <K extends string>(w: Record<K, number>): K => {
      const total = Object.values<number>(w).reduce((s, x) => s + x, 0);
      let r = next() * total;
      for (const [k, x] of Object.entries<number>(w)) if ((r -= x) < 0) return k as K;
      return Object.keys(w)[0] as K;
    },
  };
}
type Rng = ReturnType<typeof rng>;

/**
 * The instant demo with the health check far off, so a quarantined machine stays so until an admin acts, and a machine
 * quarantined at its first failed playbook.
 */
function chaosConfig(): string {
  const file = instantDemoConfig();
  const cfg = parse(readFileSync(file, 'utf8'));
  for (const p of cfg.pools) Object.assign(p, { 'health-check-interval': 3600, 'quarantine-after': 1 });
  writeFileSync(file, stringify(cfg));
  return file;
}

interface TenantModel {
  name: string;
  id: number;
  key: string;
  /** Bumped before and after every admin change (odd: one under way) that may refuse the tenant's own calls (retire, reactivate, key). */
  epoch: number;
  retired: boolean;
  sessions: Set<number>;
}

class Defects {
  readonly list: string[] = [];
  add(what: string) {
    if (this.list.length < 50) this.list.push(what);
  }
}

const show = (r: Reply) => `${r.status} ${JSON.stringify(r.body).slice(0, 400)}`;

describe(`chaos: tenants and an admin at once (seed ${SEED})`, () => {
  let duffy: Running;
  afterAll(() => duffy?.close());

  it('keeps every invariant while admins change the farm under load, and a restart serves the same state', async () => {
    console.log(`chaos: seed ${SEED} (DUFFY_CHAOS_SEED=${SEED} replays its choices), ${CLIENTS} tenant clients x ${OPS} operations, admin up to ${ADMIN_OPS}`);
    const started = Date.now();
    // What the server logs as an error: a 500's stack, a background pass that threw (a queue pass lost its rest).
    const logged: string[] = [];
    jest.spyOn(Logger.prototype, 'error').mockImplementation(function (this: Logger, message: unknown) {
      logged.push(String(message).slice(0, 600));
    });
    const configFile = chaosConfig();
    duffy = await startDuffy({ configFile, reconcileEveryMs: 200 });
    const defects = new Defects();
    const statuses = new Map<string, number>();
    const details = new Set<string>();
    const count = (what: string, r: Reply) => statuses.set(`${what} ${r.status}`, (statuses.get(`${what} ${r.status}`) ?? 0) + 1);
    const admin = duffy.admin;
    const seeded = rng(SEED);

    /** Every reply: no 5xx but a 503 with Retry-After (provisioning or the store), and every list keeps machines apart. */
    const checked = async (what: string, p: Promise<Reply>): Promise<Reply> => {
      const r = await p;
      count(what, r);
      if (process.env.DUFFY_CHAOS_VERBOSE && r.status >= 300) details.add(`${what} ${r.status} ${String(r.body?.detail ?? JSON.stringify(r.body)).replace(/\d+/g, 'N').slice(0, 160)}`);
      if (r.status >= 500 && !(r.status === 503 && r.headers.get('retry-after'))) defects.add(`${what}: ${show(r)}`);
      if (r.status === 200 && Array.isArray(r.body?.sessions)) {
        const holder = new Map<string, number>();
        for (const s of r.body.sessions) {
          if (!s.active) continue;
          for (const n of s.nodes) {
            const other = holder.get(n.hostname);
            if (other !== undefined && other !== s.id) defects.add(`${what}: ${n.hostname} in active sessions ${other} and ${s.id}`);
            holder.set(n.hostname, s.id);
          }
        }
      }
      return r;
    };

    // Tenants: quotas from 1 to the default, some on the default.
    const tenants: TenantModel[] = [];
    for (let i = 0; i < CLIENTS; i++) {
      const name = `chaos-${i}`;
      const quota = seeded.chance(0.3) ? undefined : seeded.int(1, 8);
      const r = await admin.post(`${V1}/tenants`, { name, ssh_key: `ssh-ed25519 AAAAC3Nza ${name}@ci`, ...(quota ? { node_quota: quota } : {}) });
      expect(r.status).toBe(201);
      tenants.push({ name, id: r.body.tenant.id, key: r.body.tenant.api_key, epoch: 0, retired: false, sessions: new Set() });
    }
    const as = (t: TenantModel) => new Client(duffy.url, basic(t.name, t.key));
    // One machine per pool whose disk fails its first provisioning: handed out once the pool's ready ones are taken,
    // it is quarantined and the session served by another machine, or failed (503), until an admin repairs it.
    for (const pool of Object.keys(POOLS)) {
      const hostname = `broken.${pool.replaceAll('_', '-')}.test`;
      inject(duffy.dataDir, hostname, 'fail', 'provision', 'disk on fire');
      expect((await admin.post(`${V1}/nodes`, { hostname, pool, state: 'unused' })).status).toBe(201);
    }
    const machines = new Map<number, { hostname: string; pool: string }>(
      (await admin.get(`${V1}/nodes`)).body.nodes.map((n: { id: number; hostname: string; pool: string }) => [n.id, { hostname: n.hostname, pool: n.pool }]),
    );

    /** A refusal the tenant may get because the admin changed it during the call. */
    const adminChangedIt = (t: TenantModel, epoch: number, r: Reply) =>
      (epoch !== t.epoch || epoch % 2 === 1 || t.retired) &&
      ((r.status === 401 && /Invalid tenant name or API key/.test(r.body?.detail)) || (r.status === 403 && /retired/.test(r.body?.detail)));
    /**
     * What a request may be refused with whatever the admin does (a 503: its hand-over failed, no machine left to
     * replace; a 409: its session was ended, by the admin or an abort, during its hand-over).
     */
    const refusalOk = (r: Reply, byAdmin = false) =>
      (r.status === 503 && r.headers.get('retry-after') !== null) ||
      (r.status === 409 && /before its machines were handed over$/.test(r.body?.detail)) ||
      (r.status === 403 && /^quota exceeded: /.test(r.body?.detail)) || (r.status === 422 && /^can't reserve nodes: /.test(r.body?.detail)) ||
      // Duffy v3's answer to an admin asking for a retired tenant (the tenant's own key gets a 403).
      (byAdmin && r.status === 422 && /isn't active/.test(r.body?.detail)) ||
      // A waiting request whose tenant's quota the admin lowered under it: refused as a new one would be.
      (r.status === 403 && /^quota exceeded: tenant \S+'s quota is now \d+, fewer than the \d+ nodes asked for$/.test(r.body?.detail));

    /** A session created: a later GET shows it with the same tenant and nodes (it may have ended since). */
    async function confirmCreated(what: string, tenantId: number, session: any) {
      const g = await checked('GET /sessions/{id} (confirm)', admin.get(`${V1}/sessions/${session.id}`));
      if (g.status !== 200) return defects.add(`${what}: 201 session ${session.id}, then GET ${show(g)}`);
      const hosts = (s: any) => s.nodes.map((n: { hostname: string }) => n.hostname).sort();
      if (g.body.session.tenant.id !== tenantId || JSON.stringify(hosts(g.body.session)) !== JSON.stringify(hosts(session))) {
        defects.add(`${what}: 201 ${JSON.stringify(session).slice(0, 300)}, then GET ${show(g)}`);
      }
      if (session.nodes.length !== session.data.nodes_specs.reduce((s: number, x: { quantity: number }) => s + x.quantity, 0)) defects.add(`${what}: 201 with nodes missing: ${JSON.stringify(session).slice(0, 300)}`);
    }

    const shape = (r: Rng) => {
      const pool = r.pick(Object.keys(POOLS));
      const p = POOLS[pool];
      const quantity = r.chance(0.7) ? 1 : r.int(2, 3);
      const k = r.weighted({ pool: 3, type: 3, arch: 3, platform: 1 });
      if (k === 'pool') return { pool, quantity };
      if (k === 'type') return { type: p.type, quantity };
      if (k === 'arch') return { type: p.type, arch: p.arch, quantity };
      return { type: p.type, arch: p.arch, platform: p.platform, quantity };
    };

    async function tenantWorker(t: TenantModel, r: Rng) {
      for (let op = 0; op < OPS; op++) {
        const epoch = t.epoch;
        const me = as(t);
        const mine = [...t.sessions];
        const kind = r.weighted({ request: 8, list: 3, get: 2, release: 5, extend: 3, expire: 1, legacy: 1, legacyDone: 1, abort: 1, nodes: 1 });
        if (kind === 'request' || (mine.length === 0 && kind !== 'list' && kind !== 'nodes' && kind !== 'legacy' && kind !== 'abort')) {
          const body = { nodes_specs: r.chance(0.15) ? [shape(r), shape(r)] : [shape(r)], ...(r.chance(0.15) ? { wait: 1 } : {}) };
          const res = await checked('POST /sessions', me.post(`${V1}/sessions`, body));
          if (res.status === 201) {
            t.sessions.add(res.body.session.id);
            await confirmCreated(`POST /sessions ${JSON.stringify(body)} by ${t.name}`, t.id, res.body.session);
          } else if (!refusalOk(res) && !adminChangedIt(t, epoch, res)) {
            defects.add(`POST /sessions ${JSON.stringify(body)} by ${t.name}: ${show(res)}`);
          }
        } else if (kind === 'list') {
          const res = await checked('GET /sessions', me.get(`${V1}/sessions`));
          if (res.status === 200) {
            for (const s of res.body.sessions) if (s.tenant.id !== t.id) defects.add(`GET /sessions by ${t.name} shows session ${s.id} of tenant ${s.tenant.id}`);
          } else if (!adminChangedIt(t, epoch, res)) defects.add(`GET /sessions by ${t.name}: ${show(res)}`);
        } else if (kind === 'nodes') {
          const res = await checked('GET /nodes', me.get(`${V1}/nodes`));
          if (res.status !== 200 && !adminChangedIt(t, epoch, res)) defects.add(`GET /nodes by ${t.name}: ${show(res)}`);
        } else if (kind === 'get') {
          const id = r.pick(mine);
          const res = await checked('GET /sessions/{id}', me.get(`${V1}/sessions/${id}`));
          if (res.status !== 200 && !adminChangedIt(t, epoch, res)) defects.add(`GET /sessions/${id} by ${t.name}: ${show(res)}`);
        } else if (kind === 'release') {
          const id = r.pick(mine);
          const body = r.chance(0.3) ? { active: false, expires_at: null } : { active: false };
          const res = await checked('PUT /sessions/{id} done', me.put(`${V1}/sessions/${id}`, body));
          if (res.status === 200) {
            t.sessions.delete(id);
            const g = await checked('GET /sessions/{id} (confirm)', admin.get(`${V1}/sessions/${id}`));
            if (g.status !== 200 || g.body.session.active !== false) defects.add(`PUT /sessions/${id} done by ${t.name}: ${show(res)}, then GET ${show(g)}`);
          } else if (!adminChangedIt(t, epoch, res)) defects.add(`PUT /sessions/${id} done by ${t.name}: ${show(res)}`);
        } else if (kind === 'extend' || kind === 'expire') {
          const id = r.pick(mine);
          const by = kind === 'expire' ? '-1d' : r.pick(['+1h', '+10m', '+6h', '-5m', new Date(Date.now() + r.int(1, 48) * 3600_000).toISOString()]);
          const was = by.startsWith('+') ? (await checked('GET /sessions/{id}', me.get(`${V1}/sessions/${id}`))).body?.session?.expires_at : undefined;
          const res = await checked('PUT /sessions/{id} extend', me.put(`${V1}/sessions/${id}`, { expires_at: by }));
          if (res.status === 200) {
            const s = res.body.session;
            if (was && Date.parse(s.expires_at) < Date.parse(was)) shortened.push(`session ${id} ${by}: ${was} -> ${s.expires_at}`);
            if (Date.parse(s.expires_at) < Date.parse(s.created_at)) defects.add(`extend ${id} by ${by}: expiry before its creation: ${show(res)}`);
            const g = await checked('GET /sessions/{id} (confirm)', admin.get(`${V1}/sessions/${id}`));
            // Ended since (an admin, a retirement, the reconciler: an expiry in the past) or as answered.
            if (g.status !== 200 || (g.body.session.active && g.body.session.expires_at !== s.expires_at)) defects.add(`PUT /sessions/${id} ${by} by ${t.name}: ${show(res)}, then GET ${show(g)}`);
            if (!s.active) t.sessions.delete(id);
          } else if (res.status === 422 && /is retired/.test(res.body?.detail)) {
            t.sessions.delete(id); // ended under it: expired, ended by an admin or by the tenant's retirement
          } else if (!adminChangedIt(t, epoch, res)) defects.add(`PUT /sessions/${id} ${by} by ${t.name}: ${show(res)}`);
        } else if (kind === 'legacy') {
          const ver = r.pick(['7', '9-stream', '10-stream']);
          const arch = r.pick(['x86_64', 'aarch64']);
          const res = await checked('GET /Node/get', new Client(duffy.url).get(`/Node/get?key=${t.key}&ver=${ver}&arch=${arch}&count=${r.int(1, 2)}`));
          if (res.status === 200 && typeof res.body === 'object' && Number.isInteger(res.body.ssid)) {
            t.sessions.add(res.body.ssid);
            const g = await checked('GET /sessions/{id} (confirm)', admin.get(`${V1}/sessions/${res.body.ssid}`));
            const hosts = (g.body?.session?.nodes ?? []).map((n: { hostname: string }) => n.hostname).sort();
            if (g.status !== 200 || g.body.session.tenant.id !== t.id || JSON.stringify(hosts) !== JSON.stringify([...res.body.hosts].sort())) defects.add(`GET /Node/get by ${t.name}: ${show(res)}, then GET ${show(g)}`);
          }
          else if (!(res.status === 200 && res.body === 'Failed to allocate nodes') && !((epoch !== t.epoch || epoch % 2 === 1 || t.retired) && res.status === 403)) defects.add(`GET /Node/get by ${t.name}: ${show(res)}`);
        } else if (kind === 'abort') {
          // Jenkins aborts a build whose request waits: it leaves the queue (422), or, served meanwhile, is done at once.
          const asked = checked('POST /sessions (to abort)', me.post(`${V1}/sessions`, { nodes_specs: [shape(r)], wait: 2 }));
          await new Promise((res) => setTimeout(res, r.int(0, 300)));
          const list = await checked('GET /sessions', me.get(`${V1}/sessions`));
          const waiting = ((list.body?.sessions ?? []) as any[]).filter((x) => x.data?.queue);
          const cancelled = await Promise.all(waiting.map((x) => checked('PUT /sessions/{id} done (abort)', me.put(`${V1}/sessions/${x.id}`, { active: false }))));
          for (const c of cancelled) if (c.status !== 200 && !adminChangedIt(t, epoch, c)) defects.add(`abort by ${t.name}: ${show(c)}`);
          const res = await asked;
          if (res.status === 201 && waiting.some((x) => x.id === res.body.session.id)) {
            // Served between the look and the cancel: the cancel ended it.
            const g = await checked('GET /sessions/{id} (confirm)', admin.get(`${V1}/sessions/${res.body.session.id}`));
            if (g.body?.session?.active !== false) defects.add(`abort by ${t.name}: served, cancelled, yet ${show(g)}`);
          } else if (res.status === 201) {
            t.sessions.add(res.body.session.id);
          } else if (!refusalOk(res) && !adminChangedIt(t, epoch, res)) defects.add(`POST /sessions (to abort) by ${t.name}: ${show(res)}`);
          for (const x of waiting) {
            const g = await checked('GET /sessions/{id} (confirm)', admin.get(`${V1}/sessions/${x.id}`));
            if (g.body?.session?.active !== false || g.body.session.data?.queue) defects.add(`abort of ${x.id} by ${t.name}: ${show(g)}`);
          }
        } else if (kind === 'legacyDone') {
          // cico's done, or fail (6 h more), on one of its sessions.
          const id = r.pick(mine);
          const call = r.chance(0.7) ? 'done' : 'fail';
          const res = await checked(`GET /Node/${call}`, new Client(duffy.url).get(`/Node/${call}?key=${t.key}&ssid=${id}`));
          const g = await checked('GET /sessions/{id} (confirm)', admin.get(`${V1}/sessions/${id}`));
          if (res.status === 200 && res.body === 'Done') {
            if (call === 'done') t.sessions.delete(id);
            if (call === 'done' && g.body?.session?.active !== false) defects.add(`GET /Node/done ${id} by ${t.name}: ${show(res)}, then GET ${show(g)}`);
          } else if (!(call === 'fail' && res.body === 'Failed to change expiration time' && g.body?.session?.active === false) && !((epoch !== t.epoch || epoch % 2 === 1 || t.retired) && res.status === 403)) {
            defects.add(`GET /Node/${call} ${id} by ${t.name}: ${show(res)}`);
          }
        }
      }
    }

    const cli = async (...args: string[]) => {
      const lines: string[] = [];
      process.exitCode = 0;
      const code = await run(['node', 'duffy', ...args], (l) => lines.push(...l.split('\n')));
      process.exitCode = 0;
      return { code, last: lines.at(-1), lines };
    };
    const backups: string[] = [];
    const shortened: string[] = [];
    const retiredNodes = new Set<number>();
    let added = 0;
    async function adminWorker(r: Rng) {
      for (let op = 0; op < ADMIN_OPS; op++) {
        const t = r.pick(tenants);
        const kind = r.weighted({ quota: 6, lifetime: 3, retire: 2, key: 2, maintenance: 5, retireNode: 1, unquarantine: 2, race: 3, maxRace: 3, addNode: 2, endSession: 3, requestFor: 2, listAll: 3, pool: 2, queue: 1, rebuild: 1, stats: 1, backup: 1 });
        if (kind === 'quota') {
          const q = r.chance(0.2) ? null : r.int(1, 8);
          const res = await checked('PUT /tenants/{id} quota', admin.put(`${V1}/tenants/${t.id}`, { node_quota: q }));
          if (res.status === 200) {
            const g = await checked('GET /tenants/{id}', admin.get(`${V1}/tenants/${t.id}`));
            if (g.body?.tenant?.node_quota !== q || g.body.tenant.effective_node_quota !== (q ?? DEFAULT_QUOTA)) defects.add(`quota ${q} for ${t.name}: ${show(res)}, then GET ${show(g)}`);
            // At once: one more than the new quota is refused whatever the tenant holds.
            const over = (q ?? DEFAULT_QUOTA) + 1;
            const asked = await checked('POST /sessions (admin, over the new quota)', admin.post(`${V1}/sessions`, { tenant_id: t.id, nodes_specs: [{ type: 'vm', quantity: over }] }));
            if (asked.status !== 403 || !asked.body.detail.startsWith('quota exceeded: ')) defects.add(`quota ${q} for ${t.name}, then ${over} asked: ${show(asked)}`);
          } else if (!(t.retired && res.status === 422 && /is retired/.test(res.body?.detail))) defects.add(`quota ${q} for ${t.name}: ${show(res)}`);
        } else if (kind === 'lifetime') {
          const lifetime = r.chance(0.2) ? null : r.int(60, 7200);
          const max = r.chance(0.2) ? null : r.int(60, 14400);
          const res = await checked('PUT /tenants/{id} lifetime', admin.put(`${V1}/tenants/${t.id}`, { session_lifetime: lifetime, session_lifetime_max: max }));
          if (res.status === 200) {
            const g = await checked('GET /tenants/{id}', admin.get(`${V1}/tenants/${t.id}`));
            if (g.body?.tenant?.session_lifetime !== lifetime || g.body.tenant.session_lifetime_max !== max) defects.add(`lifetimes ${lifetime}/${max} for ${t.name}: ${show(res)}, then GET ${show(g)}`);
            // At once: a session made now lasts the new lifetime, within the new maximum.
            const made = await checked('POST /sessions (admin, new lifetime)', admin.post(`${V1}/sessions`, { tenant_id: t.id, nodes_specs: [{ type: 'vm', quantity: 1 }] }));
            if (made.status === 201) {
              const lasts = Date.parse(made.body.session.expires_at) - Date.parse(made.body.session.created_at);
              if (lasts !== Math.min(lifetime ?? 21600, max ?? 43200) * 1000) defects.add(`lifetimes ${lifetime}/${max} for ${t.name}, then a session of ${lasts} ms: ${show(made)}`);
              await checked('PUT /sessions/{id} done (admin)', admin.put(`${V1}/sessions/${made.body.session.id}`, { active: false }));
            } else if (!refusalOk(made, true)) defects.add(`lifetimes ${lifetime}/${max} for ${t.name}, then a request: ${show(made)}`);
          } else if (!(res.status === 422 && /lifetime|retired/.test(res.body?.detail))) defects.add(`lifetimes ${lifetime}/${max} for ${t.name}: ${show(res)}`);
        } else if (kind === 'retire') {
          const active = t.retired;
          t.epoch++;
          const res = await checked(`PUT /tenants/{id} active ${active}`, admin.put(`${V1}/tenants/${t.id}`, { active }));
          if (res.status === 200) {
            t.retired = !active;
            if (!active) t.sessions.clear();
            const g = await checked('GET /tenants/{id}', admin.get(`${V1}/tenants/${t.id}`));
            if (g.body?.tenant?.active !== active) defects.add(`active ${active} for ${t.name}: ${show(res)}, then GET ${show(g)}`);
            if (!active) {
              const s = await checked('GET /sessions (admin)', admin.get(`${V1}/sessions`));
              const left = (s.body.sessions ?? []).filter((x: any) => x.tenant.id === t.id && x.active);
              if (left.length) defects.add(`${t.name} retired, yet sessions ${left.map((x: any) => x.id)} are active`);
            }
            // At once, for the tenant itself too.
            const own = await checked('GET /sessions (just retired or reactivated)', as(t).get(`${V1}/sessions`));
            if (own.status !== (active ? 200 : 403)) defects.add(`active ${active} for ${t.name}, then its own GET /sessions: ${show(own)}`);
          } else defects.add(`active ${active} for ${t.name}: ${show(res)}`);
          t.epoch++;
        } else if (kind === 'key') {
          t.epoch++;
          // A new key made up by Duffy, one the admin chose, or (refused, 409) another tenant's.
          const other = r.pick(tenants.filter((x) => x !== t));
          const given = r.weighted({ reset: 3, chosen: 1, taken: 1 });
          const api_key = given === 'reset' ? 'reset' : given === 'chosen' ? randomUUID() : other.key;
          const res = await checked(`PUT /tenants/{id} api_key ${given}`, admin.put(`${V1}/tenants/${t.id}`, { api_key }));
          if (given === 'taken') {
            // The other tenant's key may have just changed (the admin is sequential: it has not).
            if (!(res.status === 409 || (t.retired && res.status === 422))) defects.add(`${t.name} given ${other.name}'s key: ${show(res)}`);
          } else if (res.status === 200) {
            const old = t.key;
            t.key = given === 'reset' ? res.body.tenant.api_key : api_key;
            const stale = await checked('GET /sessions (old key)', new Client(duffy.url, basic(t.name, old)).get(`${V1}/sessions`));
            if (stale.status !== 401) defects.add(`old key of ${t.name} after a reset: ${show(stale)}`);
            const legacy = await checked('GET /Inventory (old key)', new Client(duffy.url).get(`/Inventory?key=${old}`));
            if (legacy.status !== 403) defects.add(`old key of ${t.name} in a legacy call after a reset: ${show(legacy)}`);
            const who = await checked('GET /tenants (new key)', as(t).get(`${V1}/tenants`));
            if (who.status !== 200 || who.body.tenants.length !== 1 || who.body.tenants[0].id !== t.id) defects.add(`new key of ${t.name}: ${show(who)}`);
          } else if (!(t.retired && res.status === 422)) defects.add(`key reset for ${t.name}: ${show(res)}`);
          t.epoch++;
        } else if (kind === 'maintenance' || kind === 'retireNode') {
          const [id, m] = r.pick([...machines].filter(([i]) => !retiredNodes.has(i)));
          // Keep most of the farm: at most 4 machines retired.
          const body = kind === 'retireNode' && retiredNodes.size < 4 ? { retired: true, reason: 'chaos' } : { maintenance: r.chance(0.5), reason: `chaos ${op}` };
          const res = await checked('PUT /nodes/{id}', admin.put(`${V1}/nodes/${id}`, body));
          if (res.status === 200) {
            // Back in service, a machine whose disk fails may be quarantined again by then (its provisioning failed).
            const want = 'retired' in body ? ['retired', 'draining'] : body.maintenance ? ['maintenance', 'draining'] : ['in-service', 'quarantined'];
            if ('retired' in body) retiredNodes.add(id);
            const g = await checked('GET /nodes/{id}', admin.get(`${V1}/nodes/${id}`));
            if (!want.includes(g.body?.node?.service)) defects.add(`PUT /nodes/${id} ${JSON.stringify(body)} (${m.hostname}): ${show(res)}, then GET ${show(g)}`);
          } else defects.add(`PUT /nodes/${id} ${JSON.stringify(body)}: ${show(res)}`);
        } else if (kind === 'unquarantine') {
          // Quarantined by the health check's stand-in (registered so) or by a failed provisioning: repaired, then back.
          const out = ((await checked('GET /nodes (admin)', admin.get(`${V1}/nodes`))).body.nodes ?? []).filter((n: any) => n.service === 'quarantined');
          if (out.length === 0) continue;
          const n = r.pick(out) as any;
          rmSync(join(duffy.dataDir, 'machines', n.hostname, 'inject'), { recursive: true, force: true });
          const res = await checked('PUT /nodes/{id} (out of quarantine)', admin.put(`${V1}/nodes/${n.id}`, { maintenance: false, reason: 'repaired' }));
          const g = await checked('GET /nodes/{id}', admin.get(`${V1}/nodes/${n.id}`));
          // (a request may have taken it since: provisioned for it now)
          if (res.status !== 200 || res.body.node.service !== 'in-service' || res.body.node.state !== 'unused' || !['in-service', 'draining'].includes(g.body?.node?.service)) defects.add(`PUT /nodes/${n.id} out of quarantine: ${show(res)}, then GET ${show(g)}`);
        } else if (kind === 'race') {
          // A machine taken out of service at the very moment a tenant asks for its pool: never reserved after that.
          const free = ((await checked('GET /nodes (admin)', admin.get(`${V1}/nodes`))).body.nodes ?? []).filter((n: any) => n.state === 'ready' && n.service === 'in-service');
          if (free.length === 0) continue;
          const n = r.pick(free) as any;
          const [put, asked] = await Promise.all([
            checked('PUT /nodes/{id} (race)', admin.put(`${V1}/nodes/${n.id}`, { maintenance: true, reason: `race ${op}` })),
            checked('POST /sessions (race)', as(t).post(`${V1}/sessions`, { nodes_specs: [{ pool: n.pool, quantity: 1 }] })),
          ]);
          if (put.status !== 200) defects.add(`PUT /nodes/${n.id} maintenance (race): ${show(put)}`);
          if (asked.status === 201) t.sessions.add(asked.body.session.id);
          if (r.chance(0.7)) await checked('PUT /nodes/{id} (race, back)', admin.put(`${V1}/nodes/${n.id}`, { maintenance: false }));
        } else if (kind === 'maxRace') {
          // A lower maximum lifetime at the very moment the tenant extends: the extension keeps to the maximum it lands
          // after. On a session of the admin's making, so the tenant's own checks of its sessions stay exact.
          if (t.retired) continue;
          const made = await checked('POST /sessions (admin for a tenant)', admin.post(`${V1}/sessions`, { tenant_id: t.id, nodes_specs: [{ type: 'vm', quantity: 1 }] }));
          if (made.status !== 201) continue;
          const id = made.body.session.id;
          const max = r.int(60, 3600);
          const [put, ext] = await Promise.all([
            checked('PUT /tenants/{id} lifetime (race)', admin.put(`${V1}/tenants/${t.id}`, { session_lifetime_max: max })),
            checked('PUT /sessions/{id} extend (race)', as(t).put(`${V1}/sessions/${id}`, { expires_at: '+1h' })),
          ]);
          if (put.status !== 200 && !(put.status === 422 && /retired/.test(put.body?.detail))) defects.add(`lifetime max ${max} for ${t.name} (race): ${show(put)}`);
          if (ext.status !== 200) defects.add(`extension of ${id} (race): ${show(ext)}`);
          await checked('PUT /sessions/{id} done (admin)', admin.put(`${V1}/sessions/${id}`, { active: false }));
        } else if (kind === 'addNode') {
          const pool = r.pick(Object.keys(POOLS));
          // Ready; quarantined; or to be provisioned before its first use, with a disk that fails that (quarantine-after 1).
          const state = r.weighted({ ready: 5, failed: 2, unused: 3 });
          const hostname = `chaos-${++added}.${pool.replaceAll('_', '-')}.test`;
          if (state === 'unused') inject(duffy.dataDir, hostname, 'fail', 'provision', 'disk on fire');
          const res = await checked('POST /nodes', admin.post(`${V1}/nodes`, { hostname, pool, state, hardware: { cpus: 8, ram_gb: 32 } }));
          if (res.status === 201) {
            machines.set(res.body.node.id, { hostname, pool });
            const g = await checked('GET /nodes/{id}', admin.get(`${V1}/nodes/${res.body.node.id}`));
            if (g.body?.node?.hostname !== hostname || g.body.node.service !== (state === 'failed' ? 'quarantined' : 'in-service')) defects.add(`POST /nodes ${hostname}: ${show(res)}, then GET ${show(g)}`);
          } else defects.add(`POST /nodes ${hostname}: ${show(res)}`);
        } else if (kind === 'endSession') {
          const all = await checked('GET /sessions (admin)', admin.get(`${V1}/sessions`));
          // Active ones, and requests waiting in the queue (their callers get a 422).
          const live = (all.body.sessions ?? []).filter((s: any) => s.active || s.data?.queue);
          if (live.length === 0) continue;
          const s = r.pick(live) as any;
          const res = await checked('PUT /sessions/{id} done (admin)', admin.put(`${V1}/sessions/${s.id}`, { active: false }));
          const g = await checked('GET /sessions/{id} (confirm)', admin.get(`${V1}/sessions/${s.id}`));
          if (res.status !== 200 || g.body?.session?.active !== false) defects.add(`admin ends ${s.id}: ${show(res)}, then GET ${show(g)}`);
        } else if (kind === 'requestFor') {
          const body = { tenant_id: t.id, nodes_specs: [shape(r)] };
          const res = await checked('POST /sessions (admin for a tenant)', admin.post(`${V1}/sessions`, body));
          if (res.status === 201) {
            t.sessions.add(res.body.session.id);
            await confirmCreated(`admin POST /sessions ${JSON.stringify(body)}`, t.id, res.body.session);
          } else if (!refusalOk(res, true)) defects.add(`admin POST /sessions ${JSON.stringify(body)}: ${show(res)}`);
        } else if (kind === 'listAll') {
          await checked('GET /sessions (admin)', admin.get(`${V1}/sessions`));
          // cico's keyless inventory: one row per machine in an active session.
          const inv = await checked('GET /Inventory', new Client(duffy.url).get('/Inventory'));
          const hosts = Array.isArray(inv.body) ? inv.body.map((row: unknown[]) => row[1]) : [];
          if (inv.status !== 200 || new Set(hosts).size !== hosts.length) defects.add(`GET /Inventory: a machine twice: ${show(inv)}`);
        } else if (kind === 'pool') {
          const pool = r.pick(Object.keys(POOLS));
          const res = await checked('GET /pools/{name}', admin.get(`${V1}/pools/${pool}`));
          const total = Object.values<number>(res.body?.pool?.levels ?? {}).reduce((a, b) => a + b, 0);
          const known = [...machines.values()].filter((m) => m.pool === pool).length;
          if (res.status !== 200 || total !== known) defects.add(`GET /pools/${pool}: levels count ${total} machines of ${known}: ${show(res)}`);
        } else if (kind === 'rebuild') {
          // Read models rebuilt from position 0 while tenants read their own writes.
          const res = await checked('POST /stats/rebuild', admin.post(`${V1}/stats/rebuild`, {}));
          if (res.status !== 202) defects.add(`POST /stats/rebuild: ${show(res)}`);
        } else if (kind === 'backup') {
          if (backups.length >= 2) continue;
          const dir = mkdtempSync(join(tmpdir(), 'duffy-chaos-backup-'));
          const res = await cli('backup', dir, '--data-dir', duffy.dataDir);
          if (res.code !== 0) defects.add(`duffy backup under load: ${res.lines.join('\n')}`);
          else backups.push(dir);
        } else if (kind === 'stats') {
          for (const path of ['/stats/stress', '/stats/fairness', '/events?limit=50', '/audit/checkpoint']) {
            const res = await checked(`GET ${path.replace(/\?.*/, '')}`, admin.get(`${V1}${path}`));
            if (res.status !== 200) defects.add(`GET ${path}: ${show(res)}`);
          }
        } else if (kind === 'queue') {
          const res = await checked('GET /queue', admin.get(`${V1}/queue`));
          if (res.status !== 200) defects.add(`GET /queue: ${show(res)}`);
        }
      }
    }

    await Promise.all([...tenants.map((t, i) => tenantWorker(t, rng(SEED + 1 + i))), adminWorker(rng(SEED - 1))]);
    const ran = Date.now() - started;

    // Quiet: the reconciler ends what expired; then every live session gets a far expiry, so the restart changes nothing.
    const live = async () => ((await checked('GET /sessions (admin)', admin.get(`${V1}/sessions`))).body.sessions as any[]).filter((s) => s.active);
    for (let i = 0; i < 50 && (await live()).some((s) => Date.parse(s.expires_at) <= Date.now()); i++) await new Promise((res) => setTimeout(res, 100));
    const far = new Date(Date.now() + 3 * 3600_000).toISOString();
    for (const s of await live()) {
      const res = await checked('PUT /sessions/{id} extend (admin)', admin.put(`${V1}/sessions/${s.id}`, { expires_at: far }));
      if (res.status !== 200) defects.add(`final extension of ${s.id}: ${show(res)}`);
    }
    /** No playbook under way (a hand-over given up, a machine back from quarantine): its outcome would change the state. */
    const settled = async (c: Client) => {
      const moving = new Set(['provisioning', 'contextualizing', 'deprovisioning']);
      for (let i = 0; i < 600; i++) {
        const nodes = (await c.get(`${V1}/nodes`)).body.nodes as Array<{ state: string }>;
        if (!nodes.some((n) => moving.has(n.state))) return;
        await new Promise((res) => setTimeout(res, 100));
      }
      throw new Error('machines still in a playbook after 60 s');
    };
    const snapshot = async (c: Client) => {
      const [sessions, nodes, ts, queue] = await Promise.all([`${V1}/sessions`, `${V1}/nodes`, `${V1}/tenants`, `${V1}/queue`].map((p) => c.get(p)));
      const pools = await Promise.all(Object.keys(POOLS).map((p) => c.get(`${V1}/pools/${p}`)));
      for (const r of [sessions, nodes, ts, queue, ...pools]) expect(r.status).toBe(200);
      return { sessions: sessions.body, nodes: nodes.body, tenants: ts.body, queue: queue.body, pools: pools.map((p) => p.body) };
    };
    await settled(admin);
    const before = await snapshot(admin);
    await duffy.close();

    const file = join(duffy.dataDir, 'ledger.sqlite');
    const events = await ledgerFile(file);
    // The ledger in order, folded by the World's own evolve; before each event, the rules the admin's changes bear on.
    const world = emptyWorld();
    const defaults = { nodeQuota: DEFAULT_QUOTA, sessionLifetime: 21600, sessionLifetimeMax: 43200 };
    for (const e of events as any[]) {
      const tenant = world.tenants.get(e.data?.tenantId);
      const limit = tenant ? effective(tenant, defaults).nodeQuota : DEFAULT_QUOTA;
      // README: held + asked <= quota when a request is decided; a queued one: held + waiting + asked <= quota.
      if (e.type === 'QuotaClaimed' && tenant && tenant.held + e.data.count > limit) defects.add(`ledger ${e.position}: tenant ${tenant.name} holds ${tenant.held} of ${limit} and claims ${e.data.count} more`);
      // (its RequestQueued, just before in the same append, counts it as waiting already)
      if (e.type === 'QueueSpaceClaimed' && tenant && tenant.held + tenant.waiting > limit) defects.add(`ledger ${e.position}: tenant ${tenant.name} holds ${tenant.held} and waits for ${tenant.waiting} of ${limit}, ${e.data.count} of them queued now`);
      if ((e.type === 'QuotaClaimed' || e.type === 'QueueSpaceClaimed') && tenant?.retiredAt) defects.add(`ledger ${e.position}: ${e.type} for tenant ${tenant.name}, retired at ${tenant.retiredAt}`);
      if (e.type === 'MachineReserved') {
        const m = world.machines.get(e.data.machineId)!;
        if (m.service !== 'in-service' || m.state === 'failed') defects.add(`ledger ${e.position}: ${m.hostname} reserved for session ${e.data.sessionId} while ${m.service}/${m.state}`);
      }
      if (e.type === 'SessionExtended') {
        const session = world.sessions.get(e.data.sessionId);
        const owner = session && world.tenants.get(session.tenantId);
        const byAdmin = e.metadata?.actor === 'admin';
        if (session && owner && !byAdmin) {
          // README: the maximum counts from the lease's start (a request that waited: when it was served).
          const max = Date.parse(session.startedAt ?? session.createdAt) + effective(owner, defaults).sessionLifetimeMax * 1000;
          if (Date.parse(e.data.expiresAt) > max) defects.add(`ledger ${e.position}: session ${session.id} extended to ${e.data.expiresAt}, past its maximum ${new Date(max).toISOString()}`);
        }
      }
      evolve(world, e);
    }
    // The ledger, and each backup taken under load, replay and verify clean.
    for (const ledger of [file, ...backups.map((b) => join(b, 'ledger.sqlite'))]) {
      const replayed = await cli('audit', '--ledger', ledger, 'replay', '--config', configFile);
      if (replayed.code !== 0 || replayed.last !== 'OK: no invariant is broken') defects.add(`audit replay of ${ledger}: ${replayed.lines.slice(0, 20).join('\n')}`);
      const verified = await cli('audit', '--ledger', ledger, 'verify');
      if (verified.code !== 0 || !/^OK: /.test(verified.last ?? '')) defects.add(`audit verify of ${ledger}: ${verified.lines.slice(0, 20).join('\n')}`);
    }

    duffy = await startDuffy({ dataDir: duffy.dataDir, configFile, reconcileEveryMs: 200 });
    await settled(duffy.admin);
    const after = await snapshot(duffy.admin);
    expect(after).toEqual(before);

    const summary = Object.fromEntries([...statuses].sort());
    const happened = ['MachineProvisioned', 'ProvisioningFailed', 'MachineQuarantined', 'ReplacementReserved', 'SessionFailed', 'MachineServiceChanged', 'RequestQueued', 'SessionRejected', 'SessionExtended', 'SessionExpired', 'TenantRetired', 'TenantReactivated'];
    const seen = Object.fromEntries(happened.map((type) => [type, events.filter((e) => e.type === type).length]));
    console.log(`chaos: seed ${SEED}: ${[...statuses.values()].reduce((a, b) => a + b, 0)} replies in ${ran} ms (${Date.now() - started} ms with the checks and the restart), ${events.length} events (${JSON.stringify(seen)}), ${shortened.length} leases shortened by a tenant's extension (${shortened.slice(0, 3).join('; ')}); ${JSON.stringify(summary)}`);
    if (process.env.DUFFY_CHAOS_VERBOSE) console.log([...details].sort().join('\n'));
    for (const line of logged) defects.add(`server log: ${line}`);
    expect(defects.list).toEqual([]);
    // A run that did next to nothing proves nothing.
    expect(summary['POST /sessions 201']).toBeGreaterThan(CLIENTS);
    expect(summary['PUT /sessions/{id} done 200']).toBeGreaterThan(CLIENTS);
    const adminChanges = Object.entries(summary).filter(([k]) => /^(PUT|POST) \/(tenants|nodes)\S* .*2\d\d$/.test(k)).reduce((a, [, n]) => a + n, 0);
    expect(adminChanges).toBeGreaterThan(20);
  });
});
