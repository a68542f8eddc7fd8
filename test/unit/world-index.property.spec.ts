import { describe, expect, it } from '@jest/globals';
import { MACHINES, SESSIONS, TENANTS, entities, tenantDoc } from '../../projections/entities.projection.js';
import { type Doc, foldAll } from '../../projections/projection.js';
import { freeMachines } from '../../src/domain/decide.js';
import type { DuffyEvent, NodeSpec, PlaybookAction } from '../../src/domain/events.js';
import { IdSet, OrderedSet } from '../../src/domain/ordered-set.js';
import { type Machine, type World, RETAINED_ENDED, emptyWorld, evolve, sessionIsLive } from '../../src/domain/world.js';
import { unmet } from '../../src/domain/hardware.js';
import { type Affinity, type Pick, type PlanResult, type PoolProfile, describeSpec, eligiblePools, lessStressed, planAllocation } from '../../src/domain/policy.js';
import { mulberry32 } from '../../src/domain/simulator.js';

/**
 * The World's indexes change how fast a choice is made, never which: random worlds, random event sequences
 * (valid or not: evolve folds anything), and after every step the indexes must agree with a plain scan, and the
 * planner drawing from the index must choose exactly what the scan-based planner (the code before the index) chose.
 */


const POOLS: PoolProfile[] = [
  { name: 'metal-intel', type: 'baremetal', arch: 'x86_64', platform: 'intel' },
  { name: 'metal-amd', type: 'baremetal', arch: 'x86_64', platform: 'amd' },
  { name: 'metal-arm', type: 'baremetal', arch: 'aarch64', platform: 'arm' },
  { name: 'vm-intel', type: 'vm', arch: 'x86_64', platform: 'intel' },
  { name: 'vm-amd', type: 'vm', arch: 'x86_64', platform: 'amd' },
];
const ACTIONS: PlaybookAction[] = ['provision', 'contextualize', 'release', 'health_check', 'collect_artifacts'];
const run = { exitCode: 0, durationMs: 1, tail: '' } as never;

const oldFree = (m: Machine) =>
  (m.state === 'ready' || m.state === 'unused') && m.job === null && m.retiredAt === null && m.sessionId === null && m.service === 'in-service';
function scanPlan(world: World, specs: NodeSpec[], tenantPlatform: string | null, busy: (id: number) => boolean, overflow: boolean): PlanResult {
  const free = (pool: string) => [...world.machines.values()].filter((m) => m.pool === pool && oldFree(m) && !busy(m.id));
  return scanPlanAllocation({ specs, pools: POOLS, free, tenantPlatform, overflow });
}

// ---- The oracle: the planner as it was before the index (main's scan over every free machine), with soft affinity's several families. ----
/** A ready machine serves at once; an unused one needs provisioning first. */
const readiness = (m: Machine) => (m.state === 'ready' ? 0 : 1);
const byPreference = (a: { machine: Machine }, b: { machine: Machine }) =>
  readiness(a.machine) - readiness(b.machine) || lessStressed(a.machine, b.machine);

/** The k smallest items in order, without sorting them all: a request wants a few machines out of many. */
function smallest<T>(items: readonly T[], k: number, cmp: (a: T, b: T) => number): T[] {
  const best: T[] = [];
  for (const item of items) {
    if (best.length === k && cmp(item, best[k - 1]) >= 0) continue;
    let i = best.length < k ? best.length : k - 1;
    while (i > 0 && cmp(item, best[i - 1]) < 0) i -= 1;
    best.splice(i, 0, item);
    if (best.length > k) best.pop();
  }
  return best;
}

function scanPlanAllocation(args: {
  specs: readonly NodeSpec[];
  pools: readonly PoolProfile[];
  free: (pool: string) => Iterable<Machine>;
  tenantPlatform: string | null;
  /** Soft affinity may serve from another family (default: yes); a request that waits first gives its family time. */
  overflow?: boolean;
}): PlanResult {
  const taken = new Set<number>();
  const picks: Pick[] = [];
  // Within one request, the first pick establishes the family for the rest.
  let platform = args.tenantPlatform;
  for (const spec of args.specs) {
    const pools = eligiblePools(args.pools, spec);
    if (pools.length === 0) return { ok: false, reason: `no pool matches ${describeSpec(spec)}` };
    const candidates: Array<{ machine: Machine; platform: string }> = [];
    // Hardware requirements: only machines that meet them all are candidates; count what each one rules out.
    const ruledOut = new Map<string, number>();
    for (const pool of pools) {
      for (const machine of args.free(pool.name)) {
        if (taken.has(machine.id)) continue;
        const misses = unmet(machine.hardware ?? {}, spec.hardware);
        for (const r of misses) ruledOut.set(r, (ruledOut.get(r) ?? 0) + 1);
        if (misses.length === 0) candidates.push({ machine, platform: pool.platform });
      }
    }
    const hw = ruledOut.size ? `; hardware ${[...ruledOut].map(([r, n]) => `${r} rules out ${n} free machine${n === 1 ? '' : 's'}`).join(', ')}` : '';
    const explicit = spec.pool !== undefined || spec.platform !== undefined;
    // The family this spec must come from (null: any). A spec naming a pool or platform is the tenant's own choice;
    // affinity binds only where the tenant's family is offered for this kind of machine at all.
    const offered = platform !== null && pools.some((p) => p.platform === platform);
    let family = explicit ? null : platform === null ? roomiestFamily(candidates, spec.quantity) : offered ? platform : null;
    // Soft affinity: when the tenant's family has too few free machines of this type and arch, another family
    // that has enough serves rather than nobody (the pick says `overflow`). A spec naming a pool or platform stays strict.
    let overflow = false;
    // When no one family has enough, several serve the spec: the tenant's own family's machines first.
    let mixed: Array<{ machine: Machine; platform: string }> | null = null;
    const across = (own: string | null) => {
      const first = smallest(candidates.filter((c) => c.platform === own), spec.quantity, byPreference);
      const rest = smallest(candidates.filter((c) => c.platform !== own), spec.quantity - first.length, byPreference);
      return first.length + rest.length === spec.quantity ? [...first, ...rest] : null;
    };
    if (args.overflow !== false && !explicit && family !== null && family === platform && candidates.filter((c) => c.platform === family).length < spec.quantity) {
      const other = roomiestFamily(candidates.filter((c) => c.platform !== family), spec.quantity);
      if (other !== null) [family, overflow] = [other, true];
      else mixed = across(platform);
    } else if (args.overflow !== false && !explicit && platform === null && family === null) mixed = across(null);
    if (mixed !== null) overflow = true;
    if (!explicit && platform === null && family === null && mixed === null) {
      const perFamily = countBy(candidates.map((c) => c.platform));
      const most = Math.max(0, ...perFamily.values());
      const detail = perFamily.size > 1 ? `at most ${most} available on one platform family (${candidates.length} in all)` : `${most} available`;
      return { ok: false, reason: `${describeSpec(spec)}: ${spec.quantity} requested, ${detail}${hw}` };
    }
    const chosen = mixed ?? smallest(family === null ? candidates : candidates.filter((c) => c.platform === family), spec.quantity, byPreference);
    if (chosen.length < spec.quantity) {
      const where = family !== null && !explicit ? ` on platform ${family}` : '';
      return { ok: false, reason: `${describeSpec(spec)}: ${spec.quantity} requested, ${chosen.length} available${where}${hw}` };
    }
    // The rest of the spec that establishes the family: its family is offered (it was just picked).
    const establishing = platform === null;
    for (const c of chosen) {
      const affinity: Affinity =
        platform === null ? 'established' : !explicit && !offered && !establishing ? 'not-offered' : c.platform === platform ? 'kept' : overflow ? 'overflow' : 'fallback';
      if (platform === null) platform = c.platform;
      taken.add(c.machine.id);
      picks.push({ machine: c.machine, platform: c.platform, affinity });
    }
  }
  return { ok: true, picks };
}

/**
 * A tenant's first family: the one with the most free machines of the kind it asked for, so that tenants
 * spread over families instead of all landing on the first one; ties go to the least worn machine's family.
 */
function roomiestFamily(candidates: ReadonlyArray<{ machine: Machine; platform: string }>, quantity: number): string | null {
  const free = countBy(candidates.map((c) => c.platform));
  const leastWorn = smallest(candidates, 1, byPreference)[0]?.platform ?? null;
  let best = leastWorn;
  for (const [platform, n] of free) if (best === null || n > free.get(best)! || (n === free.get(best)! && platform === leastWorn)) best = platform;
  // A family that cannot serve the whole request is no better than none.
  return best !== null && free.get(best)! >= quantity ? best : null;
}

function countBy(values: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return counts;
}

const summary = (p: PlanResult) => (p.ok ? p.picks.map((x) => `${x.machine.id}/${x.platform}/${x.affinity}`) : p.reason);

// ---- Random worlds and histories. ----
class History {
  readonly world = emptyWorld();
  private position = 0n;
  private clock = Date.parse('2026-01-01T00:00:00.000Z');
  private nextSession = 1;
  constructor(readonly rnd: () => number) {}

  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rnd() * xs.length)];
  }
  at(): string {
    // Coarse steps, so equal wear (and the id tie-break) happens often.
    this.clock += 1000 * Math.floor(this.rnd() * 3);
    return new Date(this.clock).toISOString();
  }
  readonly recorded: Array<DuffyEvent & { revision: number; position: bigint }> = [];
  fold(event: DuffyEvent): void {
    const e = { ...event, revision: 0, position: ++this.position };
    this.recorded.push(e);
    evolve(this.world, e as never);
  }

  build(machines: number): void {
    for (let t = 1; t <= 3; t++) {
      this.fold({ type: 'TenantRegistered', data: { tenantId: t, name: `t${t}`, apiKeyDigest: `d${t}`, isAdmin: false, sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null, at: this.at() } });
    }
    for (let id = 1; id <= machines; id++) {
      const pool = this.pick(POOLS).name;
      const hardware = this.rnd() < 0.8 ? { cpus: this.pick([2, 8, 32]), ram_gb: this.pick([4, 64, 256]), cpu_model: this.pick(['Xeon Gold', 'EPYC 7763']) } : undefined;
      this.fold({ type: 'MachineRegistered', data: { machineId: id, hostname: `m${id}`, ipaddr: null, pool, reusable: true, data: {}, state: this.pick(['ready', 'ready', 'unused'] as const), ...(hardware ? { hardware } : {}), at: this.at() } });
    }
  }

  /** One random event: mostly the ones a real farm sees, on machines in a state where they make sense, some not. */
  step(): void {
    const w = this.world;
    const m = w.machines.get(1 + Math.floor(this.rnd() * w.machines.size))!;
    const machineId = m.id;
    const at = this.at();
    const open = [...w.openSessions];
    const sessionId = m.sessionId ?? (open.length && this.rnd() < 0.7 ? this.pick(open) : this.nextSession);
    const tenantId = 1 + Math.floor(this.rnd() * 3);
    const r = Math.floor(this.rnd() * 18);
    switch (r) {
      case 0:
      case 1:
      case 2: {
        const id = this.nextSession++;
        this.fold({ type: 'MachineRequested', data: { sessionId: id, tenantId, tenant: `t${tenantId}`, specs: [], expiresAt: new Date(this.clock + this.rnd() * 7200_000).toISOString(), at } });
        this.fold({ type: 'QuotaClaimed', data: { tenantId, sessionId: id, count: 1 + Math.floor(this.rnd() * 3), at } });
        return;
      }
      case 3:
      case 4:
        return this.fold({ type: 'MachineReserved', data: { machineId, hostname: m.hostname, sessionId, tenantId, pool: m.pool, platform: 'intel', affinity: 'kept', contextualize: this.rnd() < 0.3, ...(m.state === 'unused' ? { provision: true } : {}), at } });
      case 5:
        return this.fold({ type: 'MachineReleased', data: { machineId, sessionId, reason: 'done', at } });
      case 6:
        return this.fold({ type: 'MachineReservationCancelled', data: { machineId, sessionId, reason: 'x', at } });
      case 7:
        return this.fold({ type: 'MachineRecycled', data: { machineId, policy: 'reuse', state: this.pick(['ready', 'ready', 'unused', 'done'] as const), at } });
      case 8:
        return this.fold({ type: 'PlaybookStarted', data: { machineId, action: this.pick(ACTIONS), sessionId: m.sessionId, instance: 'i', deadline: at, at } });
      case 9:
        return this.fold({ type: 'MachineProvisioned', data: { machineId, sessionId: m.sessionId, ipaddr: null, run, at } });
      case 10:
        return this.fold({ type: 'ProvisioningFailed', data: { machineId, sessionId: m.sessionId, action: this.pick(ACTIONS), error: 'x', run, at } });
      case 11:
        return this.fold(this.rnd() < 0.5 ? { type: 'MachineQuarantined', data: { machineId, reason: 'x', at } } : { type: 'MachineReturnedToService', data: { machineId, run, at } });
      case 12:
        return this.fold({ type: 'SessionStarted', data: { sessionId, machineIds: [machineId], at, ...(this.rnd() < 0.3 ? { expiresAt: new Date(this.clock + this.rnd() * 3600_000).toISOString() } : {}) } });
      case 13:
        return this.fold({ type: 'SessionExtended', data: { sessionId, expiresAt: new Date(this.clock + this.rnd() * 7200_000).toISOString(), at } });
      case 14:
        return this.fold(
          this.pick([
            { type: 'SessionReleased', data: { sessionId, reason: 'done', at } },
            { type: 'SessionExpired', data: { sessionId, at } },
            { type: 'SessionFailed', data: { sessionId, reason: 'x', at } },
            { type: 'SessionRejected', data: { sessionId, reason: 'x', at } },
          ] as DuffyEvent[]),
        );
      case 15:
        return this.fold({ type: 'QuotaReturned', data: { tenantId: w.sessions.get(sessionId)?.tenantId ?? tenantId, sessionId, count: 1, at } });
      case 16:
        return this.fold({ type: 'MachineServiceChanged', data: { machineId, hostname: m.hostname, service: this.pick(['in-service', 'in-service', 'maintenance', 'retired'] as const), reason: null, actor: 'admin', at } });
      default:
        return this.fold({ type: 'MachineContextualized', data: { machineId, sessionId, run, at } });
    }
  }

  randomSpecs(): NodeSpec[] {
    const one = (): NodeSpec => ({ ...shape(), ...(this.rnd() < 0.25 ? { hardware: this.pick([{ min_cpus: 8 }, { min_ram_gb: 64, cpu_model: 'xeon' }, {}]) } : {}) });
    const shape = (): NodeSpec => {
      const quantity = 1 + Math.floor(this.rnd() * 4);
      switch (Math.floor(this.rnd() * 5)) {
        case 0:
          return { pool: this.pick(POOLS).name, quantity };
        case 1:
          return { type: this.pick(['baremetal', 'vm'] as const), quantity };
        case 2:
          return { type: 'baremetal', arch: this.pick(['x86_64', 'aarch64']), quantity };
        case 3:
          return { type: this.pick(['baremetal', 'vm'] as const), platform: this.pick(['intel', 'amd', 'arm']), quantity };
        default:
          return { type: 'vm', arch: 'aarch64', quantity };
      }
    };
    return Array.from({ length: 1 + Math.floor(this.rnd() * 3) }, one);
  }
}

function checkIndexes(world: World): void {
  for (const pool of POOLS) {
    const scanned = [...world.machines.values()].filter((m) => m.pool === pool.name && oldFree(m)).sort((a, b) => readiness(a) - readiness(b) || lessStressed(a, b));
    expect([...world.free.inOrder(pool.name)].map((m) => m.id)).toEqual(scanned.map((m) => m.id));
    expect(world.free.size(pool.name)).toBe(scanned.length);
  }
  const inService = [...world.machines.values()].filter((m) => m.retiredAt === null);
  const work = inService.filter((m) => ['unused', 'provisioning', 'contextualizing', 'deprovisioning', 'failed'].includes(m.state)).map((m) => m.id).sort((a, b) => a - b);
  expect([...world.work.machines].map((m) => m.id)).toEqual(work);
  const idle = new Map<string, number>();
  for (const m of inService) if (m.service === 'in-service' && m.state === 'ready' && m.sessionId === null) idle.set(m.pool, (idle.get(m.pool) ?? 0) + 1);
  for (const pool of POOLS) expect(world.work.readyIdle.get(pool.name) ?? 0).toBe(idle.get(pool.name) ?? 0);
  for (const t of world.tenants.values()) expect(t.held).toBe([...t.claims.values()].reduce((a, b) => a + b, 0));
  for (const pool of POOLS) {
    const notRetired = [...world.machines.values()].filter((m) => m.pool === pool.name && m.retiredAt === null && m.service !== 'retired').length;
    expect(world.notRetiredByPool.get(pool.name) ?? 0).toBe(notRetired);
  }
  const now = Date.parse('2026-01-01T00:30:00.000Z');
  const due = [...world.sessions.values()]
    .filter((s) => s.status === 'active' && Date.parse(s.expiresAt) <= now)
    .sort((a, b) => Date.parse(a.expiresAt) - Date.parse(b.expiresAt) || a.id - b.id)
    .map((s) => s.id);
  expect(world.leases.expired(now)).toEqual(due);
  expect(world.leases.size).toBe([...world.sessions.values()].filter((s) => s.status === 'active').length);
}

describe('World indexes against plain scans (property, seeded)', () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8])('seed %i: the free, work, quota and lease indexes match a scan after every event, and the planner chooses the same', (seed) => {
    const h = new History(mulberry32(seed));
    h.build(20 + Math.floor(h.rnd() * 60));
    for (let step = 0; step < 400; step++) {
      h.step();
      checkIndexes(h.world);
      // Some machines are promised to requests still being written: skipped by both.
      const busyIds = new Set([...h.world.machines.keys()].filter(() => h.rnd() < 0.1));
      const busy = (id: number) => busyIds.has(id);
      const specs = h.randomSpecs();
      const tenantPlatform = h.pick([null, 'intel', 'amd', 'arm', 'ppc']);
      const overflow = h.rnd() < 0.5;
      const indexed = planAllocation({ specs, pools: POOLS, tenantPlatform, overflow, free: (pool) => freeMachines(h.world, pool, busy) });
      expect(summary(indexed)).toEqual(summary(scanPlan(h.world, specs, tenantPlatform, busy, overflow)));
      // The same planner over plain lists (the simulator's way) agrees too.
      const listed = planAllocation({ specs, pools: POOLS, tenantPlatform, overflow, free: (pool) => [...h.world.machines.values()].filter((m) => m.pool === pool && oldFree(m) && !busy(m.id)) });
      expect(summary(listed)).toEqual(summary(indexed));
    }
  });

  it('chooses among 1,000 machines in a few pools exactly as the scan does, over a long history', () => {
    const h = new History(mulberry32(99));
    h.build(1000);
    for (let step = 0; step < 5000; step++) {
      h.step();
      if (step % 250 === 0) checkIndexes(h.world);
      const specs = h.randomSpecs();
      const tenantPlatform = h.pick([null, 'intel', 'amd']);
      const busy = () => false;
      expect(summary(planAllocation({ specs, pools: POOLS, tenantPlatform, free: (pool) => freeMachines(h.world, pool, busy) }))).toEqual(summary(scanPlan(h.world, specs, tenantPlatform, busy, true)));
    }
    checkIndexes(h.world);
  });
});

describe('entities projection', () => {
  it.each([11, 12, 13])('seed %i: folds its documents to exactly the World\'s entities', (seed) => {
    const h = new History(mulberry32(seed));
    h.build(30);
    for (let step = 0; step < 1500; step++) h.step();
    // What the projector would write: every marked document, as the projection shows it.
    const { state, changed } = foldAll(entities, h.recorded as never[]);
    const docs = new Map<string, Doc | undefined>([...changed].map((k) => [k, entities.doc(state, k.split('/')[0], k.split('/')[1])]));
    const json = (x: unknown) => JSON.parse(JSON.stringify(x));
    for (const t of h.world.tenants.values()) expect(json(docs.get(`${TENANTS}/${t.id}`))).toEqual(json(tenantDoc(t)));
    // The fair queue's usage list stays out of the tenant document, rewritten with every batch.
    for (const t of h.world.tenants.values()) expect(docs.get(`${TENANTS}/${t.id}`)).not.toHaveProperty('usage');
    // Nor does the projection's World sum that usage, which the deciding World does.
    for (const t of state.tenants.values()) expect([t.usage.open.size, Object.keys(t.usage.ended).length]).toEqual([0, 0]);
    expect([...h.world.tenants.values()].some((t) => Object.keys(t.usage.ended).length > 0)).toBe(true);
    for (const m of h.world.machines.values()) expect(json(docs.get(`${MACHINES}/${m.id}`))).toEqual(json(m));
    for (const s of h.world.sessions.values()) expect(json(docs.get(`${SESSIONS}/${s.id}`))).toEqual(json(s));
    expect(h.world.sessions.size).toBeGreaterThan(0);
  });
});

describe('cost of a choice', () => {
  it('reads a few machines per pool, and counts none, for a tenant with an established family', () => {
    const h = new History(mulberry32(21));
    h.build(0);
    for (let id = 1; id <= 5000; id++) {
      h.fold({ type: 'MachineRegistered', data: { machineId: id, hostname: `m${id}`, ipaddr: null, pool: POOLS[id % POOLS.length].name, reusable: true, data: {}, state: 'ready', at: h.at() } });
    }
    let read = 0;
    let counted = 0;
    const free = (pool: string) => {
      const view = freeMachines(h.world, pool, () => false);
      return {
        size: () => (counted += 1) && view.size(),
        *inOrder() {
          for (const m of view.inOrder()) {
            read += 1;
            yield m;
          }
        },
      };
    };
    const plan = planAllocation({ specs: [{ type: 'baremetal', arch: 'x86_64', quantity: 3 }], pools: POOLS, tenantPlatform: 'intel', free });
    expect(plan.ok).toBe(true);
    expect(counted).toBe(0);
    // At most the 3 taken plus one look-ahead per pool the merge and the overflow check walk.
    expect(read).toBeLessThanOrEqual(3 * 2 + 4);
  });
});

describe('OrderedSet', () => {
  it('keeps random inserts and deletes in order', () => {
    const rnd = mulberry32(7);
    const set = new OrderedSet<number>((a, b) => a - b);
    const plain = new Set<number>();
    for (let i = 0; i < 5000; i++) {
      const x = Math.floor(rnd() * 1000);
      if (plain.has(x)) {
        expect(set.delete(x)).toBe(true);
        plain.delete(x);
      } else {
        set.insert(x);
        plain.add(x);
      }
      expect(set.delete(-1)).toBe(false);
    }
    expect([...set]).toEqual([...plain].sort((a, b) => a - b));
    expect(set.size).toBe(plain.size);
  });

  it('reuses the nodes of deleted items and keeps no deleted item', () => {
    // A node per insert dies in the old space when the set is old (P7's memory): a deleted item's node is reused.
    const set = new OrderedSet<{ k: number }>((a, b) => a.k - b.k);
    const nodes = (s: OrderedSet<{ k: number }>) => s as unknown as { root: object | null; spare: { item: unknown } | null };
    const first = { k: 1 };
    set.insert(first);
    const node = nodes(set).root;
    expect(set.delete(first)).toBe(true);
    expect(nodes(set).spare).toBe(node);
    expect(nodes(set).spare!.item).toBeNull();
    set.insert({ k: 2 });
    expect(nodes(set).root).toBe(node);
    expect([...set]).toEqual([{ k: 2 }]);
  });
});

describe('IdSet', () => {
  it('answers as a Set of the same ids does, in ascending order', () => {
    const rnd = mulberry32(11);
    const ids = new IdSet();
    const plain = new Set<number>();
    for (let i = 0; i < 5000; i++) {
      const x = Math.floor(rnd() * 300);
      if (rnd() < 0.5) {
        expect(ids.add(x)).toBe(ids);
        plain.add(x);
      } else expect(ids.delete(x)).toBe(plain.delete(x));
      expect(ids.has(x)).toBe(plain.has(x));
      expect(ids.size).toBe(plain.size);
    }
    expect([...ids]).toEqual([...plain].sort((a, b) => a - b));
    ids.clear();
    expect([ids.size, [...ids]]).toEqual([0, []]);
  });
});

describe('quota claims', () => {
  it('gives a tenant a new claims map when its last claim is returned, and keeps the sum', () => {
    // An emptied old Map reallocates its table in the old space on the delete and the next set (P7's memory).
    const h = new History(mulberry32(5));
    h.build(1);
    const at = '2026-01-01T00:00:00.000Z';
    const t = h.world.tenants.get(1)!;
    h.fold({ type: 'QuotaClaimed', data: { tenantId: 1, sessionId: 1, count: 2, at } });
    h.fold({ type: 'QuotaClaimed', data: { tenantId: 1, sessionId: 2, count: 1, at } });
    const claims = t.claims;
    h.fold({ type: 'QuotaReturned', data: { tenantId: 1, sessionId: 1, count: 2, at } });
    expect(t.claims).toBe(claims);
    expect([...t.claims]).toEqual([[2, 1]]);
    h.fold({ type: 'QuotaReturned', data: { tenantId: 1, sessionId: 2, count: 1, at } });
    expect(t.claims).not.toBe(claims);
    expect([t.claims.size, t.held]).toEqual([0, 0]);
    h.fold({ type: 'QuotaClaimed', data: { tenantId: 1, sessionId: 3, count: 4, at } });
    expect([[...t.claims], t.held]).toEqual([[[3, 4]], 4]);
  });
});

describe('new sessions', () => {
  it('share one empty list of machines and artifacts until they get their own, copied on change', () => {
    // Per-session empty array literals (and session literals) were pretenured by V8 and died in the old space (P7).
    const h = new History(mulberry32(9));
    h.build(2);
    const at = '2026-01-01T00:00:00.000Z';
    for (const id of [1, 2]) h.fold({ type: 'MachineRequested', data: { sessionId: id, tenantId: 1, tenant: 't1', specs: [], expiresAt: at, at } });
    const [s1, s2] = [h.world.sessions.get(1)!, h.world.sessions.get(2)!];
    expect(s1.machineIds).toBe(s2.machineIds);
    expect(s1.lostMachineIds).toBe(s2.lostMachineIds);
    expect(s1.artifacts).toBe(s2.artifacts);
    expect(s1.artifactsIncomplete).toBe(s2.artifactsIncomplete);
    h.fold({ type: 'MachineReserved', data: { machineId: 1, hostname: 'm1', sessionId: 1, tenantId: 1, pool: 'x', platform: 'intel', affinity: 'kept', contextualize: false, at } });
    h.fold({ type: 'ArtifactsCollected', data: { machineId: 1, sessionId: 1, files: ['a.log'], error: null, run: { action: 'collect_artifacts', playbook: 'artifacts.yml', exitCode: 0, durationMs: 1, timedOut: false, tail: '' }, at } });
    expect([s1.machineIds, s1.artifacts, s2.machineIds, s2.artifacts]).toEqual([[1], ['a.log'], [], []]);
    expect(Object.keys(s1)).toEqual(['id', 'tenantId', 'specs', 'createdAt', 'expiresAt', 'startedAt', 'retiredAt', 'status', 'releaseReason', 'rejection', 'machineIds', 'lostMachineIds', 'artifacts', 'artifactsIncomplete', 'failure', 'queue', 'wasQueued', 'revision']);
  });
});

describe('ended sessions leave the World', () => {
  it('keeps the last ones and any still holding machines or quota; forgets older settled ones', () => {
    const h = new History(mulberry32(3));
    h.build(2);
    const at = '2026-01-01T00:00:00.000Z';
    const total = RETAINED_ENDED + 500;
    for (let id = 1; id <= total; id++) {
      h.fold({ type: 'MachineRequested', data: { sessionId: id, tenantId: 1, tenant: 't1', specs: [], expiresAt: at, at } });
      h.fold({ type: 'QuotaClaimed', data: { tenantId: 1, sessionId: id, count: 1, at } });
      if (id === 1) h.fold({ type: 'MachineReserved', data: { machineId: 1, hostname: 'm1', sessionId: 1, tenantId: 1, pool: 'x', platform: 'intel', affinity: 'kept', contextualize: false, at } });
      h.fold({ type: 'SessionStarted', data: { sessionId: id, machineIds: id === 1 ? [1] : [], at } });
      h.fold({ type: 'SessionReleased', data: { sessionId: id, reason: 'done', at } });
      // Session 2 never gets its quota back.
      if (id !== 2) h.fold({ type: 'QuotaReturned', data: { tenantId: 1, sessionId: id, count: 1, at } });
    }
    const w = h.world;
    expect(w.sessions.has(1)).toBe(true); // machine 1 still reserved for it
    expect(w.sessions.has(2)).toBe(true); // its quota is still claimed
    expect(w.sessions.has(3)).toBe(false);
    expect(w.sessions.has(total)).toBe(true);
    expect(w.sessions.size).toBeLessThanOrEqual(RETAINED_ENDED + 3);
    expect([...w.sessions.values()].filter(sessionIsLive)).toEqual([]);
    const forgotten = w.sessions.get(1)!;
    expect(forgotten.machineIds).toEqual([1]);
    // Once machine 1 is released and recycled, session 1 goes too when its turn comes again.
    h.fold({ type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'done', at } });
    h.fold({ type: 'MachineRecycled', data: { machineId: 1, policy: 'reuse', state: 'ready', at } });
    for (let id = total + 1; id <= total + RETAINED_ENDED; id++) {
      h.fold({ type: 'MachineRequested', data: { sessionId: id, tenantId: 1, tenant: 't1', specs: [], expiresAt: at, at } });
      h.fold({ type: 'SessionRejected', data: { sessionId: id, reason: 'x', at } });
    }
    expect(w.sessions.has(1)).toBe(false);
    expect(w.sessions.has(2)).toBe(true);
    expect(w.sessions.size).toBeLessThanOrEqual(RETAINED_ENDED + 1);
    // A forgotten session lets go of its lists (memory: see `forget` in world.ts).
    expect([forgotten.specs, forgotten.machineIds, forgotten.artifacts]).toEqual([[], [], []]);
  });
});
