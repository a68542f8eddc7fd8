import { type FreePool, OVERFLOW_AFTER_SHARE_OF_WAIT, type Pick, describeSpec, eligiblePools, familyCrowding, hasHardware, planAllocation } from './policy.js';
import { unmet } from './hardware.js';
import { type DomainErrorKind, refuse } from './errors.js';
import { parseDuration } from './duration.js';
import { type Defaults, type DuffyEvent, type Hardware, type MachineState, type NodeSpec, type PlaybookRun, type PoolProfile, profileChanges, type RecyclePolicy, type ReleaseReason, type TenantSettings, REGISTRABLE_STATES, machinesAsked, stream, unstorableAt, usedInUndoneHours } from './events.js';
import { type Machine, type Session, type Tenant, type World, activeAdmins, claimedBy, addressKey, canonicalIp, hostKey, isRetired, machineAtAddress, machineIdOfHost, sshPortProblem, tenantKey } from './world.js';

/*
 * Deciders: (World, command, now) -> the writes that record the decision, or a Refusal value.
 * Pure: no I/O, no clock (time comes in the command), no Nest. Each write carries the expected revision
 * of the stream it guards, so a stale decision fails at append time and is taken again on fresh state.
 */

/** `no_stream`: the stream must not exist; `any`: no check; a number: the stream's last revision must be exactly that. */
export type ExpectedRevision = 'any' | 'no_stream' | number;

/** The revision a write expects of a stream the World counts from -1 (none yet): -1 is `no_stream`. */
export const expectedAt = (revision: number): ExpectedRevision => (revision < 0 ? 'no_stream' : revision);

export interface Write {
  stream: string;
  expected: ExpectedRevision;
  events: DuffyEvent[];
}

/** A decider's "no": a value the handler turns into the API's answer, never an exception inside the domain. */
export interface Refusal {
  refused: DomainErrorKind;
  reason: string;
}
/** What one command decided: the writes of one atomic append (empty: nothing to do), or a refusal. */
export type Decision = Write[] | Refusal;
export const refusal = (refused: DomainErrorKind, reason: string): Refusal => ({ refused, reason });
export const isRefusal = (d: Decision): d is Refusal => !Array.isArray(d);

/**
 * This process's appends that the World does not show yet. A decision counts them as taken (machines, quota,
 * session ids) and may build on their stream heads, so concurrent commands in one process never collide.
 */
export interface InFlightView {
  /** Whether a write on its way reserves this machine or changes its service (either way: not free to pick). */
  busy(machineId: number): boolean;
  quota(tenantId: number): number;
  /** Machines asked for by the tenant's requests on their way into the queue. */
  waiting(tenantId: number): number;
  /** Whether a write on its way registers this host (by hostKey), address (by addressKey) or tenant (by tenantKey), or gives a tenant this key digest. */
  claims(kind: 'host' | 'ip' | 'key' | 'tenant', value: string): boolean;
  /** Whether a write on its way to this stream says more than the view accounts for (a retirement, say). */
  changing(stream: string): boolean;
  /**
   * The revision a write to this stream must expect, given the one the World knows: after this process's writes
   * in flight when the view accounts for all they say (ids, quota claims and returns), else the World's, so that a decision
   * made without, say, a tenant's retirement in flight conflicts with it and is taken again once it is seen.
   */
  revision(stream: string, known: number): number;
  lastSessionId(): number;
  /** The family a reservation on its way gives a tenant that has none in the World yet (its first machine's), else null. */
  platform(tenantId: number): string | null;
}

/** Nothing in flight: for replays, tests and the simulator. */
export const NOTHING_IN_FLIGHT: InFlightView = { busy: () => false, quota: () => 0, waiting: () => 0, claims: () => false, changing: () => false, revision: (_s, known) => known, lastSessionId: () => 0, platform: () => null };

/** Longest lease a tenant setting or the configured defaults may give: 30 days, in seconds. */
export const MAX_LIFETIME = 30 * 24 * 3600;

export const effective = (t: Tenant, d: Defaults) => ({
  nodeQuota: t.nodeQuota ?? d.nodeQuota,
  sessionLifetime: t.sessionLifetime ?? d.sessionLifetime,
  sessionLifetimeMax: t.sessionLifetimeMax ?? d.sessionLifetimeMax,
});

const iso = (ms: number) => new Date(ms).toISOString();

/** Integer ids: the id sequence stream gets one IdAllocated per id, in the same append as what it names. */
function allocateIds(world: World, kind: 'tenant' | 'machine', count: number, inFlight: InFlightView): { first: number; write: Write } {
  const name = stream.ids(kind);
  const expected = inFlight.revision(name, world.idRevisions.get(kind) ?? -1);
  return {
    first: expected + 2,
    write: { stream: name, expected: expectedAt(expected), events: Array.from({ length: count }, () => ({ type: 'IdAllocated' as const, data: { kind } })) },
  };
}

/**
 * The set of active admins after a change, appended to the `admins` stream at its revision with the change: a set
 * that two instances change at once (each retiring one of the last two admins) conflicts, and the second decides
 * again on what the first did.
 */
function adminsChanged(world: World, admins: number[], now: string, inFlight: InFlightView): Write {
  const expected = inFlight.revision(stream.admins, world.adminsRevision);
  return { stream: stream.admins, expected: expectedAt(expected), events: [{ type: 'ActiveAdminsChanged', data: { admins: admins.sort((a, b) => a - b), at: now } }] };
}

/** The configuration's tenant defaults, recorded when they differ from the last ones the ledger holds (or it holds none). */
export function decideRecordDefaults(world: World, configured: Defaults, now: string, inFlight: InFlightView): Decision {
  const last = world.defaults;
  if (last && last.nodeQuota === configured.nodeQuota && last.sessionLifetime === configured.sessionLifetime && last.sessionLifetimeMax === configured.sessionLifetimeMax) return [];
  const expected = inFlight.revision(stream.defaults, world.defaultsRevision);
  const { nodeQuota, sessionLifetime, sessionLifetimeMax } = configured;
  return [{ stream: stream.defaults, expected: expectedAt(expected), events: [{ type: 'DefaultsSet', data: { nodeQuota, sessionLifetime, sessionLifetimeMax, at: now } }] }];
}

/**
 * What a changed `defaults` section changes since the last start, for the start's warning: each setting's old and new
 * value, and the tenants without a quota of their own (admins too) that now hold more than the new one. Empty on a
 * first start or when nothing changed.
 */
export function defaultsChanges(world: World, configured: Defaults): string[] {
  const last = world.defaults;
  if (!last) return [];
  const changes: string[] = [];
  const said = (name: string, was: number, now: number) => was !== now && changes.push(`${name} ${was} -> ${now}`);
  said('node-quota', last.nodeQuota, configured.nodeQuota);
  said('session-lifetime', last.sessionLifetime, configured.sessionLifetime);
  said('session-lifetime-max', last.sessionLifetimeMax, configured.sessionLifetimeMax);
  if (configured.nodeQuota < last.nodeQuota) {
    const over = [...world.tenants.values()].filter((t) => t.retiredAt === null && t.nodeQuota === null && t.held > configured.nodeQuota);
    if (over.length > 0) changes.push(`now over their quota (they keep what they hold, and get no more until under it): ${over.map((t) => `${t.name} holds ${t.held}`).join(', ')}`);
  }
  if (configured.sessionLifetimeMax < last.sessionLifetimeMax) {
    const longer = [...world.openSessions]
      .map((id) => world.sessions.get(id)!)
      .filter((s) => {
        const tenant = world.tenants.get(s.tenantId);
        return s.status === 'active' && tenant?.sessionLifetimeMax === null && Date.parse(s.expiresAt) > latestExpiryMs(s, tenant, configured);
      });
    if (longer.length > 0) changes.push(`${longer.length} open session(s) keep a lease past the new maximum (sessions ${longer.slice(0, 10).map((s) => s.id).join(', ')}${longer.length > 10 ? ', ...' : ''})`);
  }
  return changes;
}

/** The configuration's pools, recorded whenever they differ from the last ones recorded (a first start records them). */
export function decideRecordPools(world: World, configured: readonly PoolProfile[], now: string, inFlight: InFlightView): Decision {
  const pools = configured.map(({ name, type, arch, platform }) => ({ name, type, arch, platform }));
  const last = world.pools;
  const same = (p: PoolProfile) => {
    const was = last?.get(p.name);
    return was !== undefined && profileChanges(was, p).length === 0;
  };
  if (last && last.size === pools.length && pools.every(same)) return [];
  const expected = inFlight.revision(stream.pools, world.poolsRevision);
  return [{ stream: stream.pools, expected: expectedAt(expected), events: [{ type: 'PoolsConfigured', data: { pools, at: now } }] }];
}

/**
 * Pools whose type, arch or platform the configuration changed since they were last recorded, and that have machines:
 * their machines (a machine never changes pool) now serve requests as another kind or family. One line per pool.
 */
export function poolProfileChanges(world: World, configured: readonly PoolProfile[]): string[] {
  if (!world.pools) return [];
  const changes: string[] = [];
  for (const p of configured) {
    const was = world.pools.get(p.name);
    // Retired machines serve nobody any more: moved, they are no one's concern.
    const machines = world.notRetiredByPool.get(p.name) ?? 0;
    if (!was || machines === 0) continue;
    const moved = profileChanges(was, p).map((k) => `${k} ${was[k]} -> ${p[k]}`);
    if (moved.length > 0) changes.push(`pool ${p.name}: ${moved.join(', ')} (its ${machines} machine(s) now serve as such)`);
  }
  return changes;
}

const KEY_IN_USE = 'that API key is already in use';

/** Every key given to a tenant is also a write to `api-keys` at its revision, so only one instance can give a key at a time. */
function keyAssigned(world: World, tenantId: number, now: string, inFlight: InFlightView): Write {
  const expected = inFlight.revision(stream.apiKeys, world.apiKeysRevision);
  return { stream: stream.apiKeys, expected: expectedAt(expected), events: [{ type: 'ApiKeyAssigned', data: { tenantId, at: now } }] };
}

export function decideRegisterTenant(
  world: World,
  cmd: { name: string; apiKeyDigest: string; isAdmin: boolean; settings: TenantSettings; now: string },
  inFlight: InFlightView = NOTHING_IN_FLIGHT,
): Decision {
  if (world.tenantIdsByName.has(cmd.name)) return refusal('conflict', `tenant ${cmd.name} already exists`);
  const twin = world.tenants.get(world.tenantIdsByKey.get(tenantKey(cmd.name)) ?? -1);
  if (twin) return refusal('conflict', `tenant ${twin.name} already exists (tenant names ignore case)`);
  if (inFlight.claims('tenant', tenantKey(cmd.name))) return refusal('conflict', `tenant ${cmd.name} is being registered right now (tenant names ignore case)`);
  if (world.tenantIdsByDigest.has(cmd.apiKeyDigest) || inFlight.claims('key', cmd.apiKeyDigest)) return refusal('conflict', KEY_IN_USE);
  const ids = allocateIds(world, 'tenant', 1, inFlight);
  return [
    ids.write,
    {
      stream: stream.tenant(cmd.name),
      expected: 'no_stream',
      events: [{ type: 'TenantRegistered', data: { tenantId: ids.first, name: cmd.name, apiKeyDigest: cmd.apiKeyDigest, isAdmin: cmd.isAdmin, ...cmd.settings, at: cmd.now } }],
    },
    keyAssigned(world, ids.first, cmd.now, inFlight),
    ...(cmd.isAdmin ? [adminsChanged(world, [...activeAdmins(world), ids.first], cmd.now, inFlight)] : []),
  ];
}

export function decideUpdateTenant(
  tenant: Tenant,
  /** `keyDigests`: every digest the new key may already be stored under (default: its `apiKeyDigest`). */
  cmd: {
    changes: Partial<TenantSettings & { apiKeyDigest: string }>;
    keyDigests?: readonly string[];
    active?: boolean;
    now: string;
    /** As for decideEndSession (a retirement ends the tenant's sessions); without it, the reconciler's next pass recycles those machines. */
    recyclesInstantly?: (pool: string) => boolean;
  },
  world: World,
  inFlight: InFlightView = NOTHING_IN_FLIGHT,
): Decision {
  // As Duffy v3: a retired tenant can only be reactivated (with or without other changes in the same call). Retiring
  // it again ends what a retirement written before retirements were one append left running (a ledger of 2026-12-03 or older).
  if (tenant.retiredAt !== null && cmd.active !== true) {
    const onlyRetire = cmd.active === false && Object.values(cmd.changes).every((v) => v === undefined);
    return onlyRetire ? withSessionsEnded(world, tenant, [], cmd, inFlight) : refusal('invalid', `tenant ${tenant.name} (id=${tenant.id}) is retired`);
  }
  const events: DuffyEvent[] = [];
  let admins: number[] | undefined;
  const digests = cmd.keyDigests ?? (cmd.changes.apiKeyDigest === undefined ? [] : [cmd.changes.apiKeyDigest]);
  const taken = (d: string) => {
    const owner = world.tenantIdsByDigest.get(d);
    return (owner !== undefined && owner !== tenant.id) || inFlight.claims('key', d);
  };
  // Two tenants with one key: Basic auth could not tell them apart (also when the other change is still on its way).
  if (digests.some(taken)) return refusal('conflict', KEY_IN_USE);
  const changes = Object.fromEntries(
    Object.entries(cmd.changes).filter(([k, v]) => v !== undefined && (tenant as unknown as Record<string, unknown>)[k] !== v),
  );
  if (Object.keys(changes).length > 0) events.push({ type: 'TenantUpdated', data: { tenantId: tenant.id, changes, at: cmd.now } });
  if (cmd.active === false && tenant.retiredAt === null) {
    // Without an active admin nobody could create, change or reactivate tenants again, not even after a restart.
    if (tenant.isAdmin && !anotherActiveAdmin(world, tenant.id, inFlight)) {
      return refusal('conflict', `tenant ${tenant.name} is the last active admin: retiring it would lock every admin out; make another admin first`);
    }
    events.push({ type: 'TenantRetired', data: { tenantId: tenant.id, at: cmd.now } });
    if (tenant.isAdmin) admins = activeAdmins(world).filter((id) => id !== tenant.id);
  }
  if (cmd.active === true && tenant.retiredAt !== null) {
    events.push({ type: 'TenantReactivated', data: { tenantId: tenant.id, at: cmd.now } });
    if (tenant.isAdmin) admins = [...activeAdmins(world), tenant.id];
  }
  if (events.length === 0) return [];
  const change: Write = { stream: stream.tenant(tenant.name), expected: tenant.revision, events };
  const writes = [
    change,
    ...('apiKeyDigest' in changes ? [keyAssigned(world, tenant.id, cmd.now, inFlight)] : []),
    ...(admins ? [adminsChanged(world, admins, cmd.now, inFlight)] : []),
  ];
  return cmd.active === false ? withSessionsEnded(world, tenant, writes, cmd, inFlight) : writes;
}

const retiredReason = (tenant: Tenant) => `tenant ${tenant.name} was retired`;

/**
 * A retirement, the end of every session its tenant holds and the leaving of every request it has waiting, in one
 * append: a crash can no longer leave a retired tenant's sessions running or its requests queued. Each session's quota
 * return joins the tenant's own write (a stream appears once per append).
 */
function withSessionsEnded(world: World, tenant: Tenant, writes: Write[], cmd: { now: string; recyclesInstantly?: (pool: string) => boolean }, inFlight: InFlightView): Write[] {
  // By stream, in first-write order (a Map keeps it), each stream's events gathered in one list of its own: a tenant
  // of hundreds of sessions merges in one pass, its own stream's quota returns appended, not copied per session.
  const merged = new Map(writes.map((w) => [w.stream, { ...w, events: [...w.events] }]));
  const recyclesInstantly = cmd.recyclesInstantly ?? (() => false);
  for (const id of world.openSessions) {
    const s = world.sessions.get(id)!;
    if (s.tenantId !== tenant.id) continue;
    const ending = s.status === 'waiting' ? decideLeaveQueue(s, retiredReason(tenant), cmd.now) : decideEndSession(world, s, { reason: 'tenant-retired', now: cmd.now, recyclesInstantly }, inFlight);
    for (const w of ending) {
      const same = merged.get(w.stream);
      if (same) same.events.push(...w.events);
      else merged.set(w.stream, { ...w, events: [...w.events] });
    }
  }
  return [...merged.values()];
}

/** An admin whose stream has a write in flight may be retiring right now: it does not count (two admins retiring each other at once). */
const anotherActiveAdmin = (world: World, tenantId: number, inFlight: InFlightView) =>
  [...world.tenants.values()].some((t) => t.id !== tenantId && t.isAdmin && t.retiredAt === null && !inFlight.changing(stream.tenant(t.name)));

export type MachineRegistration = { hostname: string; ipaddr: string | null; pool: string; reusable: boolean; data: Record<string, unknown>; state: Machine['state']; hardware?: Hardware; comment?: string };

/** Machines joining the inventory, any number in one append (ids allocated in it too). */
export function decideRegisterMachines(
  world: World,
  pools: readonly PoolProfile[],
  cmd: { machines: MachineRegistration[]; now: string },
  inFlight: InFlightView = NOTHING_IN_FLIGHT,
): Decision {
  const seen = new Map<string, string>();
  const seenIps = new Map<string, string>();
  /** Machines an admin retired for good whose host names are registered again (new hardware under an old name). */
  const replaced = new Map<string, Machine>();
  for (const m of cmd.machines) {
    const knownId = machineIdOfHost(world, m.hostname);
    const known = knownId === undefined ? undefined : world.machines.get(knownId);
    // A registration of the host still on its way: another spelling of it would not conflict on its stream.
    if (known === undefined && inFlight.claims('host', hostKey(m.hostname))) return refusal('conflict', `node ${m.hostname} is being registered right now (host names ignore case and a trailing dot)`);
    const again = known && reRegistration(known, m.hostname, inFlight);
    if (typeof again === 'string') return refusal('conflict', again);
    if (again) replaced.set(m.hostname, known!);
    const as = again ? seen.get(hostKey(m.hostname)) : (known?.hostname ?? seen.get(hostKey(m.hostname)));
    if (as !== undefined) return refusal('conflict', `node ${m.hostname} already exists${as === m.hostname ? '' : ` as ${as} (host names ignore case and a trailing dot)`}`);
    if (!pools.some((p) => p.name === m.pool)) return refusal('invalid', `unknown pool ${m.pool}`);
    const unstorable = unstorableAt({ data: m.data, hardware: m.hardware }, '');
    if (unstorable !== null) return refusal('invalid', `node ${m.hostname}: ${unstorable.at}: ${unstorable.problem}`);
    const badPort = sshPortProblem(m.data);
    if (badPort !== null) return refusal('invalid', `node ${m.hostname}: ${badPort}`);
    if (!REGISTRABLE_STATES.includes(m.state)) return refusal('invalid', `node ${m.hostname}: state ${m.state} belongs to a session; register it as ready (handed out as it is) or unused (provisioned first)`);
    if (m.ipaddr !== null) {
      // As Duffy v3's unique index: two records of one host could be handed to two tenants.
      const at = { ipaddr: m.ipaddr, data: m.data };
      const key = addressKey(at);
      const there = machineAtAddress(world, at);
      const holder = there?.hostname ?? seenIps.get(key);
      // A retired machine still in use keeps its address: the same host under a new name must wait for its release.
      const until = there !== undefined && isRetired(there) ? ', retired but still in use: register it again once its session ended and its release ran' : '';
      if (holder !== undefined) return refusal('conflict', `node ${m.hostname}: address ${m.ipaddr} is node ${holder}'s${until}`);
      if (inFlight.claims('ip', key)) return refusal('conflict', `node ${m.hostname}: address ${m.ipaddr} is being registered right now`);
      seenIps.set(key, m.hostname);
    }
    seen.set(hostKey(m.hostname), m.hostname);
  }
  if (cmd.machines.length === 0) return [];
  const ids = allocateIds(world, 'machine', cmd.machines.length, inFlight);
  // A machine the hours a restore undid used, and this ledger never knew: what it holds is unknown, as for the others.
  const restoredAt = (m: MachineRegistration) => (replaced.has(m.hostname) ? undefined : world.unknownAtRestore.get(hostKey(m.hostname)));
  return [
    ids.write,
    ...cmd.machines.map((m, i): Write => ({
      stream: stream.machine(m.hostname),
      // Its stream goes on after the retired machine's last event (the stream is named by the host).
      expected: replaced.has(m.hostname) ? replaced.get(m.hostname)!.revision : 'no_stream',
      events: [{ type: 'MachineRegistered', data: { machineId: ids.first + i, ...m, ipaddr: m.ipaddr === null ? null : canonicalIp(m.ipaddr), at: cmd.now } }],
    })),
    ...cmd.machines.flatMap((m, i): Write[] => {
      const at = restoredAt(m);
      if (at === undefined) return [];
      const event: DuffyEvent = { type: 'MachineServiceChanged', data: { machineId: ids.first + i, hostname: m.hostname, service: 'maintenance', reason: usedInUndoneHours(at), actor: null, at: cmd.now } };
      return [{ stream: stream.service(m.hostname), expected: 'no_stream', events: [event] }];
    }),
  ];
}

/**
 * Whether a host name may be registered again (as Duffy v3 takes a name again): yes once its machine is retired for
 * good by an admin and nothing of it is under way, under the same spelling (its ledger stream is named by it); a
 * reason why not for a retired one; false for a machine in service (it simply exists).
 */
function reRegistration(known: Machine, hostname: string, inFlight: InFlightView): boolean | string {
  // Through (`done`) yet not retired by an admin: as Duffy v3, its name stays taken; say how to free it.
  if (known.service !== 'retired' && isRetired(known)) return `node ${hostname} already exists, through (done): retire it (PUT {"retired": true}) to register its host name again`;
  if (known.service !== 'retired') return false;
  if (known.hostname !== hostname) return `node ${hostname} was ${known.hostname}, retired: register it again as ${known.hostname} (its ledger stream is named so)`;
  if (known.sessionId !== null || known.job !== null || known.releasingSession !== null || inFlight.busy(known.id)) {
    return `node ${hostname} is retired but its last session or release is still under way: register it again once that is over`;
  }
  return true;
}

/**
 * A request, whole: the session's MachineRequested and SessionStarted, the tenant's QuotaClaimed and one
 * MachineReserved per machine, all in one append. With no capacity and a wait, it is recorded as waiting instead
 * (MachineRequested + RequestQueued, holding nothing). A `waiting` session given here is served from the queue.
 */
export function decideRequestSession(
  world: World,
  pools: readonly PoolProfile[],
  defaults: Defaults,
  cmd: {
    sessionId: number;
    tenantId: number;
    specs: NodeSpec[];
    now: string;
    contextualize: (pool: string) => boolean;
    /** Seconds it may wait in the fair-share queue when nothing is free now (0: refuse at once). */
    waitSeconds?: number;
    waiting?: Session;
    /** The tenant that asks (an admin may ask for another one). */
    askedBy?: number;
  },
  inFlight: InFlightView = NOTHING_IN_FLIGHT,
): Decision {
  const tenant = world.tenants.get(cmd.tenantId);
  // Duffy v3's answers to an admin asking for another tenant.
  if (!tenant) return refusal('invalid', `can't find tenant with id ${cmd.tenantId}`);
  if (tenant.retiredAt !== null) {
    // A tenant's own key passed authentication before a retirement landed: the 403 its next request gets.
    if (cmd.askedBy === tenant.id) return refusal('forbidden', `tenant ${tenant.name} is retired`);
    return refusal('invalid', `tenant '${tenant.name}' isn't active`);
  }
  if (cmd.specs.length === 0) return refusal('invalid', 'nodes_specs must not be empty');
  // The quota check below must never compare with a missing number, whatever reached the domain.
  const bad = cmd.specs.find((x) => typeof x !== 'object' || x === null || !Number.isSafeInteger(x.quantity) || x.quantity < 1);
  if (bad !== undefined) return refusal('invalid', 'every node spec needs a quantity that is a positive integer');
  const wanted = machinesAsked(cmd.specs);
  const limits = effective(tenant, defaults);
  const held = claimedBy(tenant) + inFlight.quota(tenant.id);
  // What the tenant's requests in the queue wait for counts too (they were let in within the quota): else a request
  // served at once took their room, and they timed out against their own tenant's quota. One served from the queue
  // is among them, and was let in with them.
  const waiting = cmd.waiting ? 0 : tenant.waiting + inFlight.waiting(tenant.id);
  if (held + waiting + wanted > limits.nodeQuota) {
    const queued = waiting > 0 ? ` and ${waiting} more waiting,` : '';
    return refusal('quota', `quota exceeded: tenant ${tenant.name} has ${held} of ${limits.nodeQuota} nodes${queued} and asked for ${wanted} more`);
  }
  const unknown = cmd.specs.find((x) => x.pool !== undefined && !pools.some((p) => p.name === x.pool));
  if (unknown) return refusal('invalid', `can't reserve nodes: unknown pool ${unknown.pool}`);
  // A spec that names a pool and also a type, arch or platform the pool is not asks for nothing that exists.
  for (const x of cmd.specs) {
    const p = x.pool === undefined ? undefined : pools.find((q) => q.name === x.pool)!;
    const clash = p && (['type', 'arch', 'platform'] as const).find((k) => x[k] !== undefined && x[k] !== p[k]);
    if (p && clash) return refusal('invalid', `can't reserve nodes: pool ${p.name} is ${p.type} ${p.arch} ${p.platform}, not ${clash} ${x[clash]}`);
    // Pools change only with the configuration: a spec no pool offers would wait for nothing.
    if (!p && eligiblePools(pools, x).length === 0) return refusal('invalid', `can't reserve nodes: no pool offers ${describeSpec({ ...x, hardware: undefined })}`);
  }
  const nowMs = Date.parse(cmd.now);
  const overflow = mayOverflow(cmd, nowMs);
  // A new tenant's family is the least crowded one: counted only when a first reservation by type asks (O(tenants)).
  let crowded: ((platform: string, arch: string) => number) | undefined;
  // A first reservation of this tenant still in flight has chosen its family already (two first requests at once).
  const tenantPlatform = tenant.platform ?? inFlight.platform(tenant.id);
  const crowding =
    tenantPlatform === null
      ? (platform: string, arch: string) =>
          (crowded ??= familyCrowding(
            pools.map((p) => ({ ...p, machines: world.notRetiredByPool.get(p.name) ?? 0 })),
            [...world.tenants.values()].filter((t) => t.retiredAt === null).map((t) => t.platform ?? inFlight.platform(t.id)),
          ))(platform, arch)
      : undefined;
  const plan = planAllocation({ specs: cmd.specs, pools, tenantPlatform, overflow, crowding, free: (pool) => freeMachines(world, pool, inFlight.busy) });
  // The lease starts when machines are handed over (for a waiting request: now), within the tenant's maximum.
  const expiresAt = iso(nowMs + Math.min(limits.sessionLifetime, limits.sessionLifetimeMax) * 1000);
  const s = stream.session(cmd.sessionId);
  const tenantStream = stream.tenant(tenant.name);
  const requested: DuffyEvent = { type: 'MachineRequested', data: { sessionId: cmd.sessionId, tenantId: tenant.id, tenant: tenant.name, specs: cmd.specs, expiresAt, at: cmd.now } };
  if (!plan.ok) {
    const reason = `can't reserve nodes: ${plan.reason}`;
    if (cmd.waiting) return refusal('capacity', reason);
    // Waiting, or asking again, helps only if machines can come free: not for more than the pools will ever have.
    // Invalid for this farm, not out of capacity: a script that asks again when the farm is busy must not. (A request
    // that cannot wait is told what is free now; one that would wait, why waiting cannot help.)
    const never = neverEnough(world, pools, cmd.specs);
    if (!cmd.waitSeconds) return refusal(never ? 'invalid' : 'capacity', reason);
    if (never) return refusal('invalid', `can't reserve nodes: ${never}`);
    return [
      {
        stream: s,
        expected: 'no_stream',
        events: [requested, { type: 'RequestQueued', data: { sessionId: cmd.sessionId, reason: plan.reason, waitUntil: iso(nowMs + cmd.waitSeconds * 1000), at: cmd.now } }],
      },
      // At the tenant's revision: the bound above holds across instances too (they conflict, and decide again).
      {
        stream: tenantStream,
        expected: inFlight.revision(tenantStream, tenant.revision),
        events: [{ type: 'QueueSpaceClaimed', data: { tenantId: tenant.id, sessionId: cmd.sessionId, count: wanted, at: cmd.now } }],
      },
    ];
  }
  const machineIds = plan.picks.map((p) => p.machine.id);
  const started: DuffyEvent = { type: 'SessionStarted', data: { sessionId: cmd.sessionId, machineIds, at: cmd.now, expiresAt } };
  return [
    cmd.waiting ? { stream: s, expected: cmd.waiting.revision, events: [started] } : { stream: s, expected: 'no_stream', events: [requested, started] },
    {
      stream: tenantStream,
      expected: inFlight.revision(tenantStream, tenant.revision),
      events: [{ type: 'QuotaClaimed', data: { tenantId: tenant.id, sessionId: cmd.sessionId, count: wanted, at: cmd.now } }],
    },
    ...plan.picks.map((p) => decideReserve(p, cmd.sessionId, tenant.id, cmd.contextualize(p.machine.pool), cmd.now)),
  ];
}

/**
 * Why no wait can serve these specs, or undefined when they could all be served together some day: a spec that asks
 * for more machines than its pools have that are not retired and meet its hardware (those in maintenance or
 * quarantine may come back, so they count), or specs that fit alone but not together (they share pools).
 */
export function neverEnough(world: World, pools: readonly PoolProfile[], specs: readonly NodeSpec[]): string | undefined {
  const ever = specs.map((x) => eligiblePools(pools, x).map((p) => ({ pool: p.name, machines: everFor(world, p.name, x) })));
  for (const [i, x] of specs.entries()) {
    const all = ever[i].reduce((n, e) => n + e.machines, 0);
    if (x.quantity > all) return `${describeSpec(x)} has ${all} machine(s) that are not retired and ${x.quantity} were asked for, so waiting cannot help`;
  }
  if (specs.length < 2) return undefined;
  const wanted = machinesAsked(specs);
  const most = mostServed(specs, ever, world);
  return most < wanted ? `the ${specs.length} specs together ask for ${wanted} machines and their pools have at most ${most} for them that are not retired, so waiting cannot help` : undefined;
}

/**
 * Why a waiting request can no longer be served, whatever capacity frees: its tenant retired, its quota lowered under
 * it, or its pools' machines retired under it; with the refusal a new request for it would get.
 */
export function neverServable(world: World, defaults: Defaults, pools: readonly PoolProfile[], s: { tenantId: number; specs: readonly NodeSpec[] }): { kind: DomainErrorKind; reason: string } | undefined {
  const tenant = world.tenants.get(s.tenantId);
  if (tenant === undefined) return undefined;
  if (tenant.retiredAt !== null) return { kind: 'forbidden', reason: retiredReason(tenant) };
  const asked = machinesAsked(s.specs);
  const quota = effective(tenant, defaults).nodeQuota;
  if (asked > quota) return { kind: 'quota', reason: `tenant ${tenant.name}'s quota is now ${quota}, fewer than the ${asked} nodes asked for` };
  const none = neverEnough(world, pools, s.specs);
  return none === undefined ? undefined : { kind: 'invalid', reason: none };
}

/**
 * The refusal for a request that left the queue unserved, as things stand when it is answered: what a new request
 * for it would get. Its kind and its words agree, even when its tenant was retired or its quota lowered after it left.
 */
export function refusalAfterWait(world: World, defaults: Defaults, pools: readonly PoolProfile[], s: Session): { kind: DomainErrorKind; message: string } {
  const never = neverServable(world, defaults, pools, s);
  const why = never?.reason ?? s.rejection ?? s.queue?.reason ?? 'no capacity';
  const kind = never?.kind ?? 'capacity';
  // Scripts match `quota exceeded` as a new request's quota refusal says it.
  return { kind, message: `${kind === 'quota' ? 'quota exceeded' : "can't reserve nodes"}: ${why}` };
}

/** A pool's machines that are not retired and meet the spec's hardware (a scan of the pool only when it has some). */
function everFor(world: World, pool: string, x: NodeSpec): number {
  if (!hasHardware(x)) return world.notRetiredByPool.get(pool) ?? 0;
  let n = 0;
  for (const m of world.machinesByPool.get(pool) ?? []) if (!isRetired(m) && unmet(m.hardware, x.hardware).length === 0) n++;
  return n;
}

/**
 * The most machines the specs can get at once: a maximum flow from each spec (its quantity) through the pools it may
 * draw from (what each can give it) to the pools (what they have that is not retired). A machine meeting two specs'
 * hardware counts for both, so it never refuses what could be served.
 */
function mostServed(specs: readonly NodeSpec[], ever: ReadonlyArray<ReadonlyArray<{ pool: string; machines: number }>>, world: World): number {
  const poolIds = new Map<string, number>();
  for (const e of ever.flat()) if (!poolIds.has(e.pool)) poolIds.set(e.pool, specs.length + 1 + poolIds.size);
  const sink = specs.length + 1 + poolIds.size;
  const cap = Array.from({ length: sink + 1 }, () => new Array<number>(sink + 1).fill(0));
  specs.forEach((x, i) => {
    cap[0][i + 1] = x.quantity;
    for (const e of ever[i]) cap[i + 1][poolIds.get(e.pool)!] = e.machines;
  });
  for (const [pool, id] of poolIds) cap[id][sink] = world.notRetiredByPool.get(pool) ?? 0;
  // Edmonds-Karp: a few dozen nodes (at most 32 specs and the pools they name).
  let flow = 0;
  for (;;) {
    const from = new Array<number>(sink + 1).fill(-1);
    from[0] = 0;
    const queue = [0];
    while (queue.length && from[sink] < 0) {
      const u = queue.shift()!;
      for (let v = 0; v <= sink; v++) {
        if (from[v] >= 0 || cap[u][v] <= 0) continue;
        from[v] = u;
        queue.push(v);
      }
    }
    if (from[sink] < 0) return flow;
    let push = Infinity;
    for (let v = sink; v !== 0; v = from[v]) push = Math.min(push, cap[from[v]][v]);
    for (let v = sink; v !== 0; v = from[v]) {
      cap[from[v]][v] -= push;
      cap[v][from[v]] += push;
    }
    flow += push;
  }
}

/** One picked machine reserved for a session, at the machine's revision (invariant 1). */
export function decideReserve(p: Pick, sessionId: number, tenantId: number, contextualize: boolean, now: string): Write {
  return {
    stream: stream.machine(p.machine.hostname),
    expected: p.machine.revision,
    events: [
      {
        type: 'MachineReserved',
        data: {
          machineId: p.machine.id,
          hostname: p.machine.hostname,
          sessionId,
          tenantId,
          pool: p.machine.pool,
          platform: p.platform,
          affinity: p.affinity,
          contextualize,
          ...(p.machine.state === 'unused' ? { provision: true } : {}),
          at: now,
        },
      },
    ],
  };
}

/** When a waiting request may be served from another family (soft affinity): once it has waited its share, in ms. */
export function overflowAt(queue: { since: string; until: string }): number {
  const since = Date.parse(queue.since);
  return since + OVERFLOW_AFTER_SHARE_OF_WAIT * (Date.parse(queue.until) - since);
}

/** Soft affinity: another family may serve a request that cannot wait at once, a waiting one once it has waited its share. */
export function mayOverflow(cmd: { waiting?: Session; waitSeconds?: number }, nowMs: number): boolean {
  const q = cmd.waiting?.queue;
  return q ? nowMs >= overflowAt(q) : !cmd.waitSeconds;
}

/**
 * Machines a request may take (see `isFree`: never one an admin took out of service), from the World's index in
 * the policy's order: taking k of them costs O(k log n). `busy` (promised to a request still being written) is
 * skipped on the way; only the count has to look at every free machine then, and the policy asks for it only to
 * place a tenant's first request or to weigh an overflow.
 */
export function freeMachines(world: World, pool: string, busy: (id: number) => boolean): FreePool & Iterable<Machine> {
  function* inOrder() {
    for (const m of world.free.inOrder(pool)) if (!busy(m.id)) yield m;
  }
  return {
    size: () => {
      let n = 0;
      for (const m of world.free.inOrder(pool)) if (!busy(m.id)) n += 1;
      return n;
    },
    inOrder,
    [Symbol.iterator]: inOrder,
  };
}

/** Who may see or change a session: its tenant, or an admin. Others get 404, never its data. */
export function visibleSessionOrRefusal(world: World, sessionId: number, actor: Tenant): Session | Refusal {
  const s = world.sessions.get(sessionId);
  const neverShown = s?.status === 'requested' || (s?.status === 'rejected' && !s.wasQueued);
  if (!s || neverShown || (s.tenantId !== actor.id && !actor.isAdmin)) return refusal('not_found', `session ${sessionId} not found`);
  return s;
}

/** At the edge (HTTP, the application), a refusal becomes the DomainError that maps to its status. */
export const raise = (r: Refusal): never => refuse(r.refused, r.reason);

/** The same, for the API's reads: a refusal is thrown as the DomainError it maps to a status. */
export function visibleSession(world: World, sessionId: number, actor: Tenant): Session {
  const s = visibleSessionOrRefusal(world, sessionId, actor);
  return 'refused' in s ? raise(s) : s;
}

/**
 * Ending a session, whole: the session's end, every machine it holds released (and back in service at once where
 * nothing needs undoing on it), its quota returned; one append. Ending a session that is over writes nothing.
 */
export function decideEndSession(
  world: World,
  session: Session,
  cmd: { reason: ReleaseReason; now: string; detail?: string; recyclesInstantly: (pool: string) => boolean },
  inFlight: InFlightView = NOTHING_IN_FLIGHT,
): Write[] {
  if (session.status !== 'active') return [];
  const { reason, now } = cmd;
  // An expiry decided from an older view of the lease: the session was extended meanwhile.
  if (reason === 'expired' && Date.parse(session.expiresAt) > Date.parse(now)) return [];
  const ended: DuffyEvent =
    reason === 'expired'
      ? { type: 'SessionExpired', data: { sessionId: session.id, at: now } }
      : reason === 'failed'
        ? { type: 'SessionFailed', data: { sessionId: session.id, reason: cmd.detail ?? 'hand-over failed', at: now } }
        : { type: 'SessionReleased', data: { sessionId: session.id, reason, at: now } };
  const writes: Write[] = [{ stream: stream.session(session.id), expected: session.revision, events: [ended] }];
  for (const id of session.machineIds) {
    const m = world.machines.get(id);
    if (!m || m.sessionId !== session.id) continue;
    writes.push({
      stream: stream.machine(m.hostname),
      expected: m.revision,
      events: [
        { type: 'MachineReleased', data: { machineId: m.id, sessionId: session.id, reason, at: now } },
        // Only a machine handed over: one still being provisioned goes back `unused` once its run is over (dueWork).
        ...(cmd.recyclesInstantly(m.pool) && m.state === 'deployed' ? [recycled(m, 'reuse', now)] : []),
      ],
    });
  }
  const tenant = world.tenants.get(session.tenantId);
  const count = tenant?.claims.get(session.id);
  if (tenant && count !== undefined) {
    const tenantStream = stream.tenant(tenant.name);
    writes.push({
      stream: tenantStream,
      expected: inFlight.revision(tenantStream, tenant.revision),
      events: [{ type: 'QuotaReturned', data: { tenantId: tenant.id, sessionId: session.id, count, at: now } }],
    });
  }
  return writes;
}

/**
 * The latest expiry a session's lease may reach but by an admin: its start plus the tenant's maximum lifetime. The
 * lease starts when the machines are handed over (Duffy v3, which never queues, says created_at): a request that
 * waited in the queue gets its whole lease, and a "+1h" never takes back the time it waited.
 */
export const latestExpiryMs = (session: Session, tenant: Tenant, defaults: Defaults) =>
  Date.parse(session.startedAt ?? session.createdAt) + effective(tenant, defaults).sessionLifetimeMax * 1000;

/**
 * The latest a tenant may move its lease to: its maximum lifetime, or the lease it has when that is later (an admin's
 * grant, a maximum lowered since: a tenant's "+1h" keeps it, where v3 would cut it back to the maximum). The decider
 * clamps to it; `audit replay` holds every tenant's extension to it (rule `lease`).
 */
export const tenantExpiryCeilingMs = (session: Session, tenant: Tenant, defaults: Defaults) =>
  Math.max(latestExpiryMs(session, tenant, defaults), Date.parse(session.expiresAt));

/** Only an active session's lease can be extended. */
export const inactive = (sessionId: number): Refusal => refusal('invalid', `session ${sessionId} is retired`);

/**
 * Duffy v3's extend: a signed duration (`+2h`, `+1h30m`, `-30m`, `+1w`) moves the session's current expiry; an ISO
 * time sets it. Either way the result is clamped to no earlier than created_at (an expiry in the past ends the
 * session at the next pass) and, but for an admin, no later than the lease's start + the tenant's maximum lifetime, or
 * than the current expiry when that is later (an admin's grant, a maximum lowered since).
 */
export function decideExtendSession(session: Session, tenant: Tenant, defaults: Defaults, expiresAt: string, now: string, byAdmin = false): Decision {
  if (session.status === 'waiting' || session.status === 'requested') {
    return refusal('invalid', `session ${session.id} is waiting for machines: its lease starts when it is served, and can be extended then`);
  }
  if (session.status !== 'active') return inactive(session.id);
  const target = parseExpiry(expiresAt, Date.parse(session.expiresAt));
  if (typeof target !== 'number') return target;
  const created = Date.parse(session.createdAt);
  const max = byAdmin ? Infinity : tenantExpiryCeilingMs(session, tenant, defaults);
  const bounded = Math.min(Math.max(target, created), max);
  // Only an admin is not clamped: even then a time must stay one that can be written down (ISO 8601, 4-digit year).
  if (!(bounded < LATEST_EXPIRY)) return refusal('invalid', 'expires_at must be before the year 10000');
  const clamped = iso(bounded);
  // Nothing changes: nothing to record (every "+0s" would add an event).
  if (Date.parse(clamped) === Date.parse(session.expiresAt)) return [];
  return [{ stream: stream.session(session.id), expected: session.revision, events: [{ type: 'SessionExtended', data: { sessionId: session.id, expiresAt: clamped, at: now } }] }];
}

const LATEST_EXPIRY = Date.UTC(10000, 0, 1);

/** A signed duration relative to `baseMs` (the current expiry), or an ISO 8601 time. */
export function parseExpiry(value: string, baseMs: number): number | Refusal {
  const delta = parseDuration(value, { signed: true });
  if (delta !== undefined) return baseMs + delta * 1000;
  const abs = parseIsoTime(value) ?? parseUnixTime(value);
  if (abs === undefined) return refusal('invalid', `expires_at must be like "+2h", "+30m", "-1h" or an ISO 8601 time, got ${JSON.stringify(value)}`);
  return abs;
}

/**
 * A string of digits as Duffy v3 (pydantic) reads it in `expires_at`: a Unix time, in seconds, or in milliseconds above
 * 2e10. A signed one ("+3600") stays refused: pydantic reads it as a 1970 time too, which would end the session.
 */
function parseUnixTime(value: string): number | undefined {
  if (!/^\d{1,20}(?:\.\d{1,9})?$/.test(value.trim())) return undefined;
  const n = Number(value);
  // Past year 9999 it is refused where every expiry is (LATEST_EXPIRY).
  return Math.floor(n > 2e10 ? n : n * 1000);
}

const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(?:([Zz])|([+-])(\d{2}):?(\d{2}))?)?$/;

/**
 * An ISO 8601 time as Duffy v3 (pydantic) reads one: `T`, `t` or a space between date and time, seconds optional, a date
 * alone is its midnight, and a time without an offset is UTC. Date.parse would read that last one in the server's
 * own time zone (ECMA-262 21.4.3.2), so the same request would move a lease by hours depending on the host's TZ.
 */
export function parseIsoTime(value: string): number | undefined {
  const m = ISO_TIME.exec(value.trim());
  if (!m) return undefined;
  const [y, mo, d, h = 0, mi = 0, s = 0] = m.slice(1, 7).map((x) => Number(x ?? 0));
  const ms = Math.floor(Number(`0.${m[7] ?? 0}`) * 1000);
  const offset = m[9] ? (m[9] === '-' ? -1 : 1) * (Number(m[10]) * 60 + Number(m[11])) : 0;
  const utc = Date.UTC(y, mo - 1, d, h, mi, s, ms);
  // Date.UTC rolls over (Feb 30 -> Mar 2, 24:00 -> next day): an out-of-range field is no time at all.
  const back = new Date(Date.UTC(y, mo - 1, d));
  if (back.getUTCFullYear() !== y || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d) return undefined;
  if (h > 23 || mi > 59 || s > 59 || Number(m[10] ?? 0) > 23 || Number(m[11] ?? 0) > 59) return undefined;
  return utc - offset * 60_000;
}

/** The state a released machine returns to: retired if not reusable, powered off (unused) after shutdown, else ready. */
function recycledState(machine: Machine, policy: RecyclePolicy): MachineState {
  return !machine.reusable ? 'done' : policy === 'shutdown' ? 'unused' : 'ready';
}

/** MachineRecycled, with the run of the release playbook when there was one. */
export function recycled(machine: Machine, policy: RecyclePolicy, now: string, run?: PlaybookRun): DuffyEvent {
  return { type: 'MachineRecycled', data: { machineId: machine.id, policy, state: recycledState(machine, policy), ...(run ? { run } : {}), at: now } };
}

/** Back into service after release, where no playbook is needed. */
export function decideRecycle(machine: Machine, policy: RecyclePolicy, now: string): Write | null {
  // One released before it was handed over is returned as it was, after its run (dueWork), not recycled under it.
  if (machine.state !== 'deprovisioning' || machine.untouchedReturn !== null) return null;
  return { stream: stream.machine(machine.hostname), expected: machine.revision, events: [recycled(machine, policy, now)] };
}

/** A waiting request leaves the queue unserved: its time is up, or its tenant cancelled it. */
export function decideLeaveQueue(session: Session, reason: string, now: string): Write[] {
  if (session.status !== 'waiting') return [];
  return [{ stream: stream.session(session.id), expected: session.revision, events: [{ type: 'SessionRejected', data: { sessionId: session.id, reason, at: now } }] }];
}
