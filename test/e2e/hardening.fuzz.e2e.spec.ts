import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import fc from 'fast-check';
import { effective } from '../../src/domain/decide.js';
import { Catalog } from '../../src/application/catalog.js';
import { Ledger } from '../../src/application/ledger.service.js';
import { ADMIN_KEY, type Running, basic, startDuffy } from '../support/server.js';

/**
 * Property-based fuzzing of every endpoint, body and query parameter (legacy calls included) against the instant
 * demo: thousands of generated requests, some of them concurrent. Whatever arrives: no 5xx, no hang, no tenant
 * above its quota, no machine held for another session or tenant, no tenant shown another tenant's sessions or nodes.
 * DUFFY_FUZZ_SEED replays a run; DUFFY_FUZZ_RUNS changes its size.
 */
jest.setTimeout(120_000);
const BUDGET_MS = 50_000;
const PER_REQUEST_MS = 10_000;
const POOLS = ['metal-intel-x86_64', 'metal-amd-x86_64', 'metal-arm-aarch64', 'vm-intel-x86_64', 'vm-arm-aarch64'];
const V1 = '/api/v1';

interface Req {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  who: number; // index into the callers below; -1: no auth, -2: garbage auth
  body?: string;
  requestId?: string;
}

// Numbers and strings that broke, or could break, a parser.
const nastyNumber = fc.constantFrom(0, 1, 2, 3, 5, 59, 60, 3600, 3601, 86400, 2592000, 2592001, -1, 1.5, 1e21, 1e308, -1e308, 9007199254740993, 100000, 100001);
const nastyString = fc.constantFrom('', ' ', '0x10', '1e1', '0b1', '1.0', '+1', '-1', '01', '99999999999999999999', 'null', '+2h', '+1h30m', '+0s', '-1h', '2030-01-01T00:00:00Z', '1970-01-01T00:00:00Z', 'tomorrow', '../../etc/passwd', '<script>', 'é', '\u0000');
const scalar = fc.oneof(nastyNumber, nastyString, fc.boolean(), fc.constant(null), fc.integer(), fc.double(), fc.string({ maxLength: 20 }));
const anyJson = fc.oneof({ weight: 3, arbitrary: scalar }, fc.jsonValue({ maxDepth: 4 }));
const maybe = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined, freq: 2 });

const spec = fc.oneof(
  { weight: 6, arbitrary: fc.record({ pool: maybe(fc.oneof(fc.constantFrom(...POOLS), nastyString)), quantity: maybe(fc.oneof(fc.integer({ min: 0, max: 4 }), nastyNumber, nastyString)), type: maybe(fc.constantFrom('baremetal', 'vm', 'x', null)), arch: maybe(fc.constantFrom('x86_64', 'aarch64', 'ppc64le', null)), platform: maybe(fc.constantFrom('intel', 'amd', 'arm', 'sparc', null)) }, { requiredKeys: [] }) },
  { weight: 1, arbitrary: anyJson },
  { weight: 1, arbitrary: fc.array(fc.record({ pool: fc.constantFrom(...POOLS), quantity: fc.integer({ min: 1, max: 3 }) }), { maxLength: 2 }) },
);
const withExtra = <T extends object>(arb: fc.Arbitrary<T>) =>
  fc.tuple(arb, fc.option(fc.dictionary(fc.constantFrom('priority', 'data', 'x', 'hardware', '__proto__', 'constructor'), anyJson, { maxKeys: 2 }), { freq: 5 })).map(([o, extra]) => (extra ? { ...o, ...extra } : o));

const sessionCreate = withExtra(
  fc.record(
    {
      nodes_specs: fc.oneof({ weight: 8, arbitrary: fc.array(spec, { maxLength: 3 }) }, { weight: 1, arbitrary: anyJson }),
      tenant_id: fc.oneof(fc.constantFrom(1, 2, 3, 4, 5, 99), nastyNumber, fc.constant(null)),
      // A positive wait holds the answer up to that many seconds: keep it short.
      wait: fc.oneof(fc.constantFrom(0, 1, null, -1, 3601, 1e21, '1'), fc.double()),
    },
    { requiredKeys: ['nodes_specs'] },
  ),
);
const sessionUpdate = withExtra(fc.record({ active: fc.oneof(fc.boolean(), scalar), expires_at: fc.oneof(fc.constantFrom('+1h', '+2m', '+1d', '+1h30m'), nastyString, scalar) }, { requiredKeys: [] }));
const tenantFields = {
  ssh_key: fc.oneof(fc.constant('ssh-ed25519 AAAA fuzz'), scalar),
  node_quota: fc.oneof(nastyNumber, scalar),
  session_lifetime: fc.oneof(nastyNumber, scalar),
  session_lifetime_max: fc.oneof(nastyNumber, scalar),
};
const tenantCreate = withExtra(fc.record({ name: fc.oneof(fc.stringMatching(/^fz[a-z0-9]{1,6}$/), nastyString, scalar), is_admin: fc.oneof(fc.boolean(), scalar), ...tenantFields }, { requiredKeys: ['name'] }));
const tenantUpdate = withExtra(fc.record({ ...tenantFields, active: fc.oneof(fc.boolean(), scalar), api_key: fc.oneof(fc.constant(false), scalar) }, { requiredKeys: [] }));
const nodeCreate = withExtra(
  fc.record(
    {
      hostname: fc.oneof(fc.stringMatching(/^fz-[a-z0-9]{1,8}\.test$/), nastyString),
      pool: fc.oneof(fc.constantFrom(...POOLS), nastyString),
      ipaddr: fc.oneof(fc.constantFrom('10.0.0.1', '::1', '999.1.1.1'), scalar),
      reusable: fc.oneof(fc.boolean(), scalar),
      data: fc.oneof(fc.jsonValue({ maxDepth: 6 }), fc.constant({ ipmi_password: 'fuzz-secret-pw', rack: 'r1' })),
      state: fc.oneof(fc.constantFrom('ready', 'unused', 'deployed', 'failed'), scalar),
    },
    { requiredKeys: [] },
  ),
);

const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);
const rawBody = fc.oneof(
  fc.constantFrom('', 'null', '[]', '"x"', '1', '{', '{"a":', deep(31), deep(33), deep(1300), `{"nodes_specs":[{"pool":"vm-intel-x86_64","quantity":1}],"x":${deep(1300)}}`, '{"__proto__":{"isAdmin":true}}'),
  fc.string({ maxLength: 60 }),
);
const body = (json: fc.Arbitrary<unknown>) => fc.oneof({ weight: 9, arbitrary: json.map((v) => JSON.stringify(v)) }, { weight: 1, arbitrary: rawBody });

const id = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 40 }).map(String) }, { weight: 3, arbitrary: nastyString.map(encodeURIComponent) }, { weight: 1, arbitrary: fc.constant('%201') });
const q = (params: Record<string, fc.Arbitrary<string | undefined>>) =>
  fc.record(params, { requiredKeys: [] }).map((r) => {
    const parts = Object.entries(r).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${encodeURIComponent(v!)}`);
    return parts.length ? `?${parts.join('&')}` : '';
  });
const queryValue = fc.oneof(nastyString, fc.integer({ min: -2, max: 200 }).map(String), fc.string({ maxLength: 10 }));

function requests(keys: () => string[], sessions: (tenant?: number) => number[]): fc.Arbitrary<Req> {
  // Mostly the three fuzzed tenants, whose quotas are checked; also the admin, nobody, garbage and a wrong key.
  const who = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 1, arbitrary: fc.integer({ min: -2, max: 4 }) });
  // Ids of sessions that exist, so done, extend and cico's done/fail reach real sessions (any tenant's).
  const pick = (known: number[], i: number) => String(known.length ? known[known.length - 1 - (i % Math.min(known.length, 12))] : 1);
  const sessionId = fc.nat().map((i) => pick(sessions(), i));
  // A tenant and one of its own recent sessions: done and extend that succeed.
  const own = fc.tuple(fc.integer({ min: 1, max: 3 }), fc.nat()).map(([k, i]) => ({ k, id: pick(sessions(k), i) }));
  const validCreate = fc.record({ pool: fc.constantFrom(...POOLS), quantity: fc.integer({ min: 1, max: 3 }) }).map((spec) => JSON.stringify({ nodes_specs: [spec] }));
  const key = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 4 }).map((i) => keys()[i]) }, { weight: 1, arbitrary: nastyString }, { weight: 1, arbitrary: fc.uuid() });
  const legacy = {
    ver: maybe(fc.oneof(fc.constantFrom('7', '8', '8-stream', '9', '9-stream', '10-stream', '6'), queryValue)),
    arch: maybe(fc.oneof(fc.constantFrom('x86_64', 'aarch64', 'ppc64le'), queryValue)),
    count: maybe(fc.oneof(fc.constantFrom('1', '2', '3', '0', '0x2', '1e1', '100', '101'), queryValue)),
    flavor: maybe(fc.oneof(fc.constantFrom('small', 'medium'), queryValue)),
  };
  const r = (method: Req['method'], path: fc.Arbitrary<string>, b?: fc.Arbitrary<string>) =>
    fc.record({ method: fc.constant(method), path, who, body: b ?? fc.constant(undefined), requestId: maybe(fc.oneof(fc.stringMatching(/^[!-~]{1,200}$/), fc.constant('A'.repeat(12 * 1024)))) });
  return fc.oneof(
    // Well-formed traffic, so quotas fill up and machines change hands while the hostile requests arrive.
    { weight: 10, arbitrary: r('POST', fc.constant(`${V1}/sessions`), validCreate) },
    {
      weight: 12,
      arbitrary: fc
        .tuple(own, fc.constantFrom('{"active": false}', '{"active": false, "expires_at": null}', '{"expires_at": "+1h"}'))
        .map(([{ k, id: sid }, b]): Req => ({ method: 'PUT', path: `${V1}/sessions/${sid}`, who: k, body: b })),
    },
    { weight: 4, arbitrary: r('GET', fc.tuple(fc.integer({ min: 1, max: 3 }), fc.constantFrom('7', '8-stream', '9-stream'), fc.constantFrom('x86_64', 'aarch64'), fc.integer({ min: 1, max: 3 })).map(([k, ver, arch, count]) => `/Node/get?key=${keys()[k]}&ver=${ver}&arch=${arch}&count=${count}`)) },
    { weight: 4, arbitrary: r('GET', fc.tuple(own, fc.constantFrom('done', 'done', 'fail')).map(([{ k, id: ssid }, a]) => `/Node/${a}?key=${keys()[k]}&ssid=${ssid}`)) },
    { weight: 1, arbitrary: r('GET', fc.tuple(fc.integer({ min: 1, max: 3 }), sessionId).map(([k, ssid]) => `/Node/done?key=${keys()[k]}&ssid=${ssid}`)) },
    { weight: 8, arbitrary: r('POST', fc.constant(`${V1}/sessions`), body(sessionCreate)) },
    { weight: 5, arbitrary: r('PUT', id.map((i) => `${V1}/sessions/${i}`), body(sessionUpdate)) },
    { weight: 3, arbitrary: r('GET', fc.oneof(fc.constant(`${V1}/sessions`), id.map((i) => `${V1}/sessions/${i}`))) },
    { weight: 2, arbitrary: r('POST', fc.constant(`${V1}/tenants`), body(tenantCreate)) },
    // Never tenant 1 (the only admin) nor the three fuzzed tenants: their keys and quotas must stay what the checks assume.
    { weight: 2, arbitrary: r('PUT', fc.oneof(fc.integer({ min: 5, max: 30 }).map(String), nastyString.map(encodeURIComponent)).map((i) => `${V1}/tenants/${i}`), body(tenantUpdate)) },
    { weight: 2, arbitrary: r('GET', fc.oneof(fc.constant(`${V1}/tenants`), id.map((i) => `${V1}/tenants/${i}`))) },
    { weight: 2, arbitrary: r('POST', fc.constant(`${V1}/nodes`), body(nodeCreate)) },
    { weight: 3, arbitrary: r('GET', fc.oneof(fc.constant(`${V1}/nodes`), id.map((i) => `${V1}/nodes/${i}`))) },
    { weight: 2, arbitrary: r('GET', fc.oneof(fc.constant(`${V1}/pools`), fc.oneof(fc.constantFrom(...POOLS), nastyString).map((p) => `${V1}/pools/${encodeURIComponent(p)}`), fc.constant(`${V1}/pool-profiles`))) },
    { weight: 1, arbitrary: r('GET', fc.constantFrom(`${V1}/queue`, `${V1}/stats/stress`, `${V1}/stats/fairness`, '/health', '/metrics')) },
    { weight: 1, arbitrary: r('GET', maybe(queryValue).map((l) => `${V1}/events${l === undefined ? '' : `?limit=${encodeURIComponent(l)}`}`)) },
    { weight: 6, arbitrary: r('GET', q({ key: maybe(key), ...legacy }).map((s) => `/Node/get${s}`)) },
    { weight: 3, arbitrary: r('GET', fc.tuple(fc.constantFrom('done', 'fail'), q({ key: maybe(key), ssid: maybe(fc.oneof(id.map(decodeURIComponent), queryValue)) })).map(([a, s]) => `/Node/${a}${s}`)) },
    { weight: 2, arbitrary: r('GET', q({ key: maybe(key) }).map((s) => `/Inventory${s}`)) },
    { weight: 1, arbitrary: r('DELETE', fc.oneof(fc.constant(`${V1}/sessions/1`), fc.constant(`${V1}/nodes/1`))) },
    { weight: 1, arbitrary: r('POST', fc.constantFrom(`${V1}/sessions`, `${V1}/tenants`, `${V1}/nodes`), rawBody) },
  );
}

describe('fuzzing every endpoint (fast-check)', () => {
  let duffy: Running;
  const keys: string[] = [];
  const names = ['admin', 'fz-alice', 'fz-bob', 'fz-carol'];
  let sent = 0;
  const statuses = new Map<number, number>();
  const sessionIds: Array<{ id: number; who: number }> = [];

  beforeAll(async () => {
    duffy = await startDuffy();
    keys.push(ADMIN_KEY);
    for (const [name, quota] of [['fz-alice', 2], ['fz-bob', 3], ['fz-carol', 5]] as const) {
      const r = await duffy.admin.post(`${V1}/tenants`, { name, ssh_key: 'ssh-ed25519 AAAA fz', node_quota: quota });
      keys.push(r.body.tenant.api_key);
    }
    keys.push('not-a-key');
  });
  afterAll(() => duffy.close());

  async function send(r: Req): Promise<{ status: number; body: any }> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (r.who >= 0) headers.authorization = basic(names[r.who] ?? 'nobody', keys[r.who]);
    if (r.who === -2) headers.authorization = 'Basic !!!';
    if (r.requestId) headers['x-request-id'] = r.requestId;
    const res = await fetch(duffy.url + r.path, { method: r.method, headers, body: r.body, signal: AbortSignal.timeout(PER_REQUEST_MS) });
    const text = await res.text();
    sent++;
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    let parsed: any = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    const created = res.status === 201 ? parsed?.session?.id : parsed?.ssid;
    // Legacy calls carry their tenant in the key.
    const owner = r.path.startsWith('/Node/get') ? keys.findIndex((k) => r.path.includes(`key=${k}&`)) : r.who;
    if (Number.isInteger(created)) sessionIds.push({ id: created, who: owner });
    return { status: res.status, body: parsed };
  }

  /**
   * What a tenant is shown is its own: sessions and nodes. A node must be one the tenant held when the answer was
   * made: in a concurrent batch it may have been released (or even passed on) since, so the ones it does not hold
   * any more are returned and checked against the batch's ledger events.
   */
  function checkAnswer(r: Req, a: { status: number; body: any }): Array<{ machine: number; tenant: number }> {
    if (a.status >= 500) throw new Error(`5xx: ${r.method} ${r.path.slice(0, 200)} ${String(r.body).slice(0, 300)} -> ${a.status} ${JSON.stringify(a.body).slice(0, 300)}`);
    const world = duffy.app.get(Ledger).world;
    const me = r.who >= 1 && r.who <= 3 ? world.tenantIdsByName.get(names[r.who]) : undefined;
    if (me === undefined || a.status !== 200) return [];
    for (const s of a.body?.sessions ?? []) expect(s.tenant.id).toBe(me);
    if (a.body?.session) expect(a.body.session.tenant.id).toBe(me);
    const toCheck: Array<{ machine: number; tenant: number }> = [];
    for (const n of [...(a.body?.nodes ?? []), ...(a.body?.node ? [a.body.node] : [])]) {
      expect(JSON.stringify(n.data ?? {})).not.toContain('fuzz-secret-pw');
      if (r.path.startsWith(`${V1}/nodes`) && world.machines.get(n.id)?.tenantId !== me) toCheck.push({ machine: n.id, tenant: me });
    }
    return toCheck;
  }

  /** Nodes shown to a tenant that it no longer holds: it must have been reserved for that tenant before or during the batch. */
  async function checkShown(shown: Array<{ machine: number; tenant: number }>, heldBefore: Map<number, number | null>, from: bigint) {
    if (shown.length === 0) return;
    const reserved = new Set<string>();
    const store = duffy.app.get(Ledger).store;
    for (let page = await store.readAll(from, 1000); page.length > 0; page = await store.readAll(page[page.length - 1].position, 1000)) {
      for (const e of page) if (e.type === 'MachineReserved') reserved.add(`${(e.data as { machineId: number }).machineId}/${(e.data as { tenantId: number }).tenantId}`);
    }
    for (const { machine, tenant } of shown) {
      expect({ machine, shownTo: tenant, held: heldBefore.get(machine) === tenant || reserved.has(`${machine}/${tenant}`) }).toEqual({ machine, shownTo: tenant, held: true });
    }
  }

  /** Invariants on the ledger's state after each batch: quota, one session per machine, the machine's tenant. */
  function checkWorld() {
    const world = duffy.app.get(Ledger).world;
    const defaults = duffy.app.get(Catalog).defaults;
    // Every active session that lists a machine, whatever the machine says (counting only the session the machine
    // names could never count two).
    const holders = new Map<number, number[]>();
    for (const s of world.sessions.values()) {
      if (s.status !== 'active') continue;
      for (const mid of s.machineIds) holders.set(mid, [...(holders.get(mid) ?? []), s.id]);
    }
    for (const [mid, ids] of holders) expect({ machine: mid, activeSessions: ids, heldBy: world.machines.get(mid)?.sessionId }).toEqual({ machine: mid, activeSessions: [ids[0]], heldBy: ids[0] });
    for (const m of world.machines.values()) {
      if (m.sessionId === null) continue;
      const s = world.sessions.get(m.sessionId);
      expect({ machine: m.hostname, tenant: m.tenantId }).toEqual({ machine: m.hostname, tenant: s?.tenantId });
    }
    for (const name of names.slice(1)) {
      const t = world.tenants.get(world.tenantIdsByName.get(name)!)!;
      const held = [...world.machines.values()].filter((m) => m.sessionId !== null && m.tenantId === t.id).length;
      const claimed = [...t.claims.values()].reduce((a, b) => a + (Number.isInteger(b) ? b : Infinity), 0);
      const quota = effective(t, defaults).nodeQuota;
      expect({ tenant: name, held: held <= quota, claimed: claimed <= quota }).toEqual({ tenant: name, held: true, claimed: true });
    }
  }

  it('answers thousands of generated requests without a 5xx or a hang, and keeps quota and tenancy', async () => {
    const seed = process.env.DUFFY_FUZZ_SEED ? Number(process.env.DUFFY_FUZZ_SEED) : undefined;
    const started = Date.now();
    const result = await fc.check(
      fc.asyncProperty(fc.array(requests(() => keys, (who) => sessionIds.filter((s) => who === undefined || s.who === who).map((s) => s.id)), { minLength: 1, maxLength: 16 }), fc.boolean(), async (batch, concurrent) => {
        const ledger = duffy.app.get(Ledger);
        const from = ledger.world.position;
        const heldBefore = new Map([...ledger.world.machines.values()].map((m) => [m.id, m.tenantId]));
        if (concurrent) {
          const answers = await Promise.all(batch.map(send));
          await checkShown(answers.flatMap((a, i) => checkAnswer(batch[i], a)), heldBefore, from);
        } else {
          for (const r of batch) expect(checkAnswer(r, await send(r))).toEqual([]);
        }
        checkWorld();
      }),
      { numRuns: Number(process.env.DUFFY_FUZZ_RUNS ?? 400), seed, interruptAfterTimeLimit: BUDGET_MS, markInterruptAsFailure: false, endOnFailure: false },
    );
    console.log(`fuzz: ${sent} requests in ${result.numRuns} batches, ${Date.now() - started} ms, seed ${result.seed}${result.interrupted ? ' (stopped at the time budget)' : ''}; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))}`);
    if (result.failed) {
      const cause = result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance);
      throw new Error(`${cause.slice(0, 2000)}\n${(fc.defaultReportMessage(result) ?? 'fuzz failed').slice(0, 4000)}`);
    }
    // About 2,400 on an idle machine; the floor only guards against a run that did next to nothing.
    expect(sent).toBeGreaterThanOrEqual(500);
  });
});
