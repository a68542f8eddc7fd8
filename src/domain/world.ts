import { type Defaults, type DuffyEvent, type Hardware, type MachineService, type MachineState, type NodeSpec, type PlaybookAction, type PoolProfile, type ReleaseReason, type TenantSettings, machinesAsked } from './events.js';
import { FreeIndex, LeaseIndex, WorkIndex, isFree } from './indexes.js';
import { IdSet } from './ordered-set.js';
import { instant } from './instant.js';
import { HOUR_MS, MINUTE_MS, type MachineTimeBuckets, addHold, machineTimeMs } from './machine-time.js';

export { isFree };

/**
 * The state every decision reads: all tenants, machines and sessions folded from the ledger.
 * `evolve` mutates the World it is given (a fold over millions of events must not copy maps);
 * it does no I/O and reads no clock, so a replay from position 0 always yields the same World.
 */
export interface Tenant extends TenantSettings {
  id: number;
  name: string;
  apiKeyDigest: string;
  isAdmin: boolean;
  createdAt: string;
  retiredAt: string | null;
  revision: number;
  /** Machines claimed against the quota, per session (invariant 3). */
  claims: Map<number, number>;
  /** The sum of `claims`, kept as they change: the quota check reads it on every request. */
  held: number;
  /** Machines asked for by its requests waiting in the queue: with `held`, what it may queue is bounded by its quota. */
  waiting: number;
  /** Platform family of the tenant's first allocation (invariant 7). */
  platform: string | null;
  /** Recent machine time, for fair-share queueing (see `recentMachineTimeMs`). */
  usage: TenantUsage;
}

/** The fair queue weighs each tenant's machine time over the last hour, to the minute. */
export const FAIR_SHARE_WINDOW_MS = HOUR_MS;

export interface TenantUsage {
  /** Machines held now: machine id -> start of the hold (ms since epoch). */
  open: Map<number, number>;
  /** Ended holds' machine time per minute, over the fair-share window. */
  ended: MachineTimeBuckets;
}

export const noUsage = (): TenantUsage => ({ open: new Map(), ended: {} });

/** A tenant's machine time (ms) in the `windowMs` up to `now`, to the minute, holds still open included. */
export function recentMachineTimeMs(t: Tenant, now: number, windowMs = FAIR_SHARE_WINDOW_MS): number {
  return machineTimeMs(t.usage.ended, t.usage.open.values(), now, windowMs, MINUTE_MS);
}

export interface Machine {
  id: number;
  hostname: string;
  ipaddr: string | null;
  pool: string;
  reusable: boolean;
  data: Record<string, unknown>;
  hardware: Hardware;
  comment: string | null;
  state: MachineState;
  createdAt: string;
  retiredAt: string | null;
  revision: number;
  sessionId: number | null;
  tenantId: number | null;
  reservedAt: string | null;
  /** Wear: how often and how long the machine has been in use (invariant 8). */
  allocations: number;
  busyMs: number;
  lastUsedAt: string | null;
  /**
   * Playbook failures in a row. A whole hand-over (provisioned, and contextualized when it asks for that) or a
   * health check that works ends the row; a release that works ends it only when no hand-over in the row failed (a
   * hand-over that fails every time is always followed by a release that works).
   */
  failures: number;
  /** A failed hand-over (provision or contextualize) is in the row. */
  handOverFailed: boolean;
  /** Failed provision, contextualize, release or artifact runs (health checks are counted apart). */
  provisioningFailures: number;
  quarantines: number;
  /** Set while quarantined: when and why. */
  quarantine: { at: string; reason: string } | null;
  /** Failed health checks since the current quarantine began. */
  healthCheckFailures: number;
  /** An admin's word: a machine not `in-service` is never handed out (see freeMachines). */
  service: MachineService;
  serviceReason: string | null;
  serviceChangedAt: string | null;
  /** Revision of the machine's service-<hostname> stream (-1: none yet). */
  serviceRevision: number;
  /** The playbook run somebody claimed on this machine, until its outcome is recorded. */
  job: { action: PlaybookAction; instance: string; deadline: string } | null;
  /** Set when artifacts were collected (or tried) for the session being released. */
  artifactsCollectedFor: number | null;
  /** The session whose release is in progress (set by MachineReleased, cleared by MachineRecycled). */
  releasingSession: number | null;
  lastHealthCheckAt: string | null;
  /** From the reservation: the hand-over runs the contextualize playbook. */
  contextualizeOnHandover: boolean;
  /** A contextualize playbook was started for the current reservation: a key may be on it. */
  contextualizeStarted: boolean;
  /**
   * Released before it was ever handed over: nothing of the session is on it, so it goes back as this state
   * (`unused`: never provisioned; `ready`: provisioned, never given a key) without a release playbook.
   */
  untouchedReturn: 'unused' | 'ready' | null;
  /** Its last run of several machines timed out: its next run is its own, so a timeout there is its own. */
  runAlone: boolean;
}

export type SessionStatus = 'requested' | 'waiting' | 'active' | 'rejected' | 'released' | 'expired';

/** What a new session holds until it has machines or artifacts: one list shared by all, replaced on change. */
const NONE: never[] = Object.freeze([]) as never[];

/**
 * A session. Built by a constructor, not an object literal: V8 sees literal sessions outlive a scavenge (the World
 * keeps the last RETAINED_ENDED ended ones), allocates them straight in the old space, and every one dies there.
 */
export class Session {
  id: number;
  tenantId: number;
  specs: NodeSpec[];
  createdAt: string;
  expiresAt: string;
  /** When its machines were handed over and its lease began (later than createdAt for a request that waited). */
  startedAt: string | null;
  retiredAt: string | null;
  status: SessionStatus;
  releaseReason: ReleaseReason | null;
  rejection: string | null;
  /** Machines handed to it (a machine that failed its hand-over leaves this list). */
  machineIds: number[];
  /** Machines whose hand-over failed for it: never reserved for it again. */
  lostMachineIds: number[];
  /** Files collected from its machines before release, relative to the data dir. */
  artifacts: string[];
  /** Per machine whose collection failed or left files out: `host: why` (the tenant is told its files are not all there). */
  artifactsIncomplete: string[];
  failure: string | null;
  /** While waiting for capacity: why, and until when. */
  queue: { reason: string; until: string; since: string } | null;
  /** It waited in the queue at some point: the tenant has seen its id, so it stays visible once rejected. */
  wasQueued: boolean;
  revision: number;

  constructor(id: number, tenantId: number, specs: NodeSpec[], createdAt: string, expiresAt: string, revision: number) {
    // The fields in their declared order (documents and their JSON keep it).
    this.id = id;
    this.tenantId = tenantId;
    this.specs = specs;
    this.createdAt = createdAt;
    this.expiresAt = expiresAt;
    this.startedAt = null;
    this.retiredAt = null;
    this.status = 'requested';
    this.releaseReason = null;
    this.rejection = null;
    this.machineIds = NONE;
    this.lostMachineIds = NONE;
    this.artifacts = NONE;
    this.artifactsIncomplete = NONE;
    this.failure = null;
    this.queue = null;
    this.wasQueued = false;
    this.revision = revision;
  }
}

export interface World {
  tenants: Map<number, Tenant>;
  tenantIdsByName: Map<string, number>;
  /** By `tenantKey`: "Admin" beside "admin" would read as one tenant in lists, logs and audits. */
  tenantIdsByKey: Map<string, number>;
  tenantIdsByDigest: Map<string, number>;
  machines: Map<number, Machine>;
  /** Keyed by hostKey(hostname): two spellings of one host are one machine. */
  machineIdsByHostname: Map<string, number>;
  /**
   * Host names (hostKey) a restore found used in the hours it undid that this ledger does not know, with that
   * restore's time: registered again (the configuration still lists them), they start in maintenance.
   */
  unknownAtRestore: Map<string, string>;
  /** Keyed by hostIp(ipaddr): the machines that have had that address (a new one may not take an address in use). */
  machineIdsByIp: Map<string, number[]>;
  /** Machines per pool: a decision looks only at the pools it may draw from. */
  machinesByPool: Map<string, Machine[]>;
  /** Machines per pool that are not retired: the most a request that waits could ever get there. */
  notRetiredByPool: Map<string, number>;
  sessions: Map<number, Session>;
  /** Ids of sessions still requested, waiting or active: what the per-event work looks at, not every session ever. */
  openSessions: IdSet;
  /** Free machines per pool in the policy's order (see `freeMachines`). */
  free: FreeIndex;
  /** Machines that may need a playbook, and ready idle machines per pool (the provisioner's pass). */
  work: WorkIndex;
  /** Active sessions by expiry (the lease reaper). */
  leases: LeaseIndex;
  /**
   * Ended sessions, oldest first. Past the last RETAINED_ENDED of them, a session that holds nothing any more
   * (no machine, no quota) leaves the World: history is served from the read models and the ledger.
   */
  ended: number[];
  /** The highest session id given so far (by requests, or by the lost hours a restore replaced): the next request takes the one after it. */
  lastSessionId: number;
  /** Last revision of each id sequence stream (ids-tenant, ids-machine): the next id is that revision + 2. */
  idRevisions: Map<string, number>;
  /** Last revision of the `admins` stream (-1: none yet), where every change to the set of active admins is checked. */
  adminsRevision: number;
  apiKeysRevision: number;
  /** Last revision of the `restores` stream (-1: none yet). */
  restoresRevision: number;
  /** The tenant defaults last recorded (DefaultsSet), null on a ledger that holds none; and the `defaults` stream's revision. */
  defaults: Defaults | null;
  defaultsRevision: number;
  /** The pools last recorded (PoolsConfigured), by name; null on a ledger that holds none; and the `pools` stream's revision. */
  pools: Map<string, PoolProfile> | null;
  poolsRevision: number;
  position: bigint;
  /**
   * Whether tenants' recent machine time (`usage`, for the fair queue) is kept: the `entities` projection shows none,
   * and summing it was about 4 % of a rebuild's main thread.
   */
  keepsUsage: boolean;
}

/** A machine as registered: identity from its registration, every counter and link at zero. */
export function newMachine(m: Pick<Machine, 'id' | 'hostname' | 'ipaddr' | 'pool' | 'reusable' | 'data' | 'state' | 'createdAt' | 'revision'> & { hardware?: Hardware; comment?: string }): Machine {
  // Written out field by field: every Machine gets one hidden class, which the hot decision loops depend on.
  return {
    id: m.id,
    hostname: m.hostname,
    ipaddr: m.ipaddr,
    pool: m.pool,
    reusable: m.reusable,
    data: m.data,
    hardware: m.hardware ?? {},
    comment: m.comment ?? null,
    state: m.state,
    createdAt: m.createdAt,
    retiredAt: null,
    revision: m.revision,
    sessionId: null,
    tenantId: null,
    reservedAt: null,
    allocations: 0,
    busyMs: 0,
    lastUsedAt: null,
    failures: 0,
    handOverFailed: false,
    provisioningFailures: 0,
    quarantines: 0,
    quarantine: null,
    healthCheckFailures: 0,
    service: 'in-service',
    serviceReason: null,
    serviceChangedAt: null,
    serviceRevision: -1,
    job: null,
    artifactsCollectedFor: null,
    releasingSession: null,
    lastHealthCheckAt: null,
    contextualizeOnHandover: false,
    contextualizeStarted: false,
    untouchedReturn: null,
    runAlone: false,
  };
}

/** Retired for good: by an admin, or recycled as `done`. */
export const isRetired = (m: Machine) => m.retiredAt !== null || m.service === 'retired';

function countRetirement(world: World, m: Machine, wasRetired: boolean): void {
  const now = isRetired(m);
  if (now !== wasRetired) world.notRetiredByPool.set(m.pool, (world.notRetiredByPool.get(m.pool) ?? 0) + (now ? -1 : 1));
}

export function emptyWorld(options: { keepsUsage?: boolean } = {}): World {
  return {
    tenants: new Map(),
    tenantIdsByName: new Map(),
    tenantIdsByKey: new Map(),
    tenantIdsByDigest: new Map(),
    machines: new Map(),
    machineIdsByHostname: new Map(),
    unknownAtRestore: new Map(),
    machineIdsByIp: new Map(),
    machinesByPool: new Map(),
    notRetiredByPool: new Map(),
    sessions: new Map(),
    openSessions: new IdSet(),
    free: new FreeIndex(),
    work: new WorkIndex(),
    leases: new LeaseIndex(),
    ended: [],
    lastSessionId: 0,
    idRevisions: new Map(),
    adminsRevision: -1,
    apiKeysRevision: -1,
    restoresRevision: -1,
    defaults: null,
    pools: null,
    poolsRevision: -1,
    defaultsRevision: -1,
    position: 0n,
    keepsUsage: options.keepsUsage ?? true,
  };
}

/** A DNS name (RFC 1123): labels of 1-63 letters, digits or inner hyphens, 253 characters in all, a trailing dot allowed. */
export const HOST_NAME = /^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
/** A tenant name as new names are compared with it: without case (logins stay exact, as in Duffy v3). */
export const tenantKey = (name: string) => name.toLowerCase();
/** A host name as DNS compares it: case does not matter, nor a trailing dot. */
export const hostKey = (hostname: string) => hostname.toLowerCase().replace(/\.$/, '');
/** The machine of that host name, however it is spelled. */
export const machineIdOfHost = (world: World, hostname: string) => world.machineIdsByHostname.get(hostKey(hostname));

/**
 * An address in its one spelling: an IPv6 address as RFC 5952 writes it (the WHATWG URL parser's form:
 * `2001:0DB8:0::0001` is `2001:db8::1`). Duffy v3 stores and answers the address as pydantic's IPvAnyAddress reads
 * it, and its unique index compares that: no spelling makes one machine's address look like another's.
 */
export const canonicalIp = (ipaddr: string) => {
  const a = ipaddr.toLowerCase();
  if (!a.includes(':')) return a;
  try {
    return new URL(`http://[${a}]/`).hostname.slice(1, -1);
  } catch {
    return a;
  }
};

/**
 * An address as the network reaches it, for uniqueness: its canonical form, and an IPv4-mapped IPv6 address
 * (`::ffff:10.0.0.1`, which URL parsing writes `::ffff:a00:1`) as the IPv4 address it reaches (a socket connecting to
 * one connects to the other: the same host under two spellings was registered, and handed out, twice).
 */
export const hostIp = (ipaddr: string) => {
  const a = canonicalIp(ipaddr);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(a);
  if (!mapped) return a;
  const [hi, lo] = [parseInt(mapped[1], 16), parseInt(mapped[2], 16)];
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
};

/**
 * The machine already at this address, if any: as Duffy v3's unique index on `ipaddr`, one not retired and not being
 * provisioned or failed (those may be given a new address). Machines behind one address on distinct ssh ports
 * (node data `ssh_port`, 22 when not given: the remote driver's) are distinct hosts. A retired machine that a session
 * still holds (draining), or whose release or another playbook run is still under way, keeps its address until that
 * is over: a new node registered there (the same host under a new name) would be handed to another tenant while the
 * first still uses it, and the old one's release would then wipe it under the new tenant.
 */
export function machineAtAddress(world: World, at: { ipaddr: string; data: Record<string, unknown> }): Machine | undefined {
  // Parsed once: an IPv6 address's canonical form goes through the URL parser.
  const address = hostIp(at.ipaddr);
  for (const id of world.machineIdsByIp.get(address) ?? []) {
    const m = world.machines.get(id);
    if (!m || m.ipaddr === null || hostIp(m.ipaddr) !== address || sshPort(m.data) !== sshPort(at.data)) continue;
    if (!isRetired(m) && m.state !== 'provisioning' && m.state !== 'failed') return m;
    if (isRetired(m) && (m.sessionId !== null || m.releasingSession !== null || m.job !== null)) return m;
  }
  return undefined;
}

/** An address as compared for uniqueness: the address and the ssh port (22 when not given). */
export const addressKey = (at: { ipaddr: string; data: Record<string, unknown> }) => `${hostIp(at.ipaddr)}:${sshPort(at.data)}`;

/**
 * The port the playbooks connect to, read as they read it (`ssh_port | default(22, true) | int`): a falsy value is
 * 22, and "022", " 22", "22.0" or "+22" are all 22, so no spelling makes one host look like two. Registration takes
 * only a whole number or digits (sshPortProblem); this also reads what a ledger holds from before that rule.
 */
function sshPort(data: Record<string, unknown>): number {
  const v = data.ssh_port;
  if (!v) return 22;
  if (typeof v === 'boolean') return 1;
  if (typeof v === 'number') return Math.trunc(v);
  // Jinja's int: Python's int() of the text, else int(float()) of it, else 0 (never hex: `0x16` is 0).
  const text = String(v).trim().replace(/_/g, '');
  if (/^[+-]?\d+$/.test(text)) return Number.parseInt(text, 10);
  return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(text) ? Math.trunc(Number(text)) : 0;
}

/**
 * Why node data's `ssh_port` cannot be registered, or null: a whole number 1-65535, or those digits as text; or none
 * (absent, null, 0 or "": the playbooks' default, 22).
 */
export function sshPortProblem(data: Record<string, unknown>): string | null {
  const v = data.ssh_port;
  if (v === undefined || v === null || v === 0 || v === '') return null;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^[0-9]{1,5}$/.test(v) ? Number(v) : NaN;
  return Number.isInteger(n) && n >= 1 && n <= 65535 ? null : `data.ssh_port must be a port number, 1-65535 (not ${JSON.stringify(v)})`;
}

function indexIp(world: World, ipaddr: string | null, machineId: number): void {
  if (ipaddr === null) return;
  const key = hostIp(ipaddr);
  const ids = world.machineIdsByIp.get(key);
  if (!ids) world.machineIdsByIp.set(key, [machineId]);
  else if (!ids.includes(machineId)) ids.push(machineId);
}

/** Whether every machine a session asked for is held by it and deployed: until then its caller waits for the answer. */
export function handedOver(world: World, s: Session): boolean {
  const wanted = machinesAsked(s.specs);
  const held = s.machineIds.filter((id) => world.machines.get(id)?.sessionId === s.id);
  return held.length === wanted && held.every((id) => world.machines.get(id)!.state === 'deployed');
}

/** The statuses of a session that has not ended. */
export const LIVE_STATUSES: readonly SessionStatus[] = ['requested', 'waiting', 'active'];
export const sessionIsLive = (s: Session) => LIVE_STATUSES.includes(s.status);
export const claimedBy = (t: Tenant) => t.held;
/** Ids of the active admins, ascending (a scan: only admin changes and the audit replay of them ask). */
export const activeAdmins = (world: World): number[] =>
  [...world.tenants.values()].filter((t) => t.isAdmin && t.retiredAt === null).map((t) => t.id).sort((a, b) => a - b);

/** Ended sessions the World keeps whatever they hold: what a client just ended stays readable. */
export const RETAINED_ENDED = 1_000;

/**
 * Fold one recorded event into the World. An unknown type changes nothing here (the audit replay and the projections
 * fold whatever a ledger holds); the Ledger refuses one before it gets here (`folded`: a start stops on it).
 */
export function evolve(world: World, event: DuffyEvent & { revision: number; position?: bigint }): World {
  // Every index follows the entity the event touches: out before the change, in again after it.
  const data = event.data as { machineId?: number; sessionId?: number | null };
  const before = data.machineId === undefined ? undefined : world.machines.get(data.machineId);
  if (before) unfile(world, before);
  // Only Session* events start, extend or end a lease.
  const leased = data.sessionId !== undefined && data.sessionId !== null && event.type.startsWith('Session') ? data.sessionId : undefined;
  if (leased !== undefined) unlease(world, leased);
  apply(world, event);
  const m = data.machineId === undefined ? undefined : world.machines.get(data.machineId);
  if (m) file(world, m);
  if (leased !== undefined) lease(world, leased);
  if (world.ended.length > RETAINED_ENDED) forgetSettled(world);
  return world;
}

/** Files a machine in the indexes under its current fields (they must not change until `unfile`). */
export function file(world: World, m: Machine): void {
  world.free.add(m);
  world.work.add(m);
}

/** Takes a machine out of the indexes, before anything changes it. */
export function unfile(world: World, m: Machine): void {
  world.free.remove(m);
  world.work.remove(m);
}

/** Files an active session's lease under its current expiry (which must not change until `unlease`). */
function lease(world: World, sessionId: number): void {
  const s = world.sessions.get(sessionId);
  if (s && s.status === 'active') world.leases.add(s.id, s.expiresAt);
}

function unlease(world: World, sessionId: number): void {
  const s = world.sessions.get(sessionId);
  if (s && s.status === 'active') world.leases.remove(s.id, s.expiresAt);
}

/** An ended session still holds a quota claim or a machine (reserved, or releasing for it): events will still change it. */
export function holdsSomething(world: World, s: Session): boolean {
  return (
    world.tenants.get(s.tenantId)?.claims.has(s.id) === true ||
    s.machineIds.some((mid) => {
      const m = world.machines.get(mid);
      return m !== undefined && (m.sessionId === s.id || m.releasingSession === s.id);
    })
  );
}

/**
 * Drops the oldest ended sessions that hold nothing, past the last RETAINED_ENDED, looking at `tries` of them at most;
 * one still holding something (or one `keep` names) waits its turn at the back.
 */
export function forgetSettled(world: World, tries = 2, keep: (id: number) => boolean = () => false): void {
  for (let n = 0; n < tries && world.ended.length > RETAINED_ENDED; n++) {
    const id = world.ended.shift()!;
    const s = world.sessions.get(id);
    if (!s) continue;
    if (holdsSomething(world, s) || keep(id)) world.ended.push(id);
    else forget(world, s);
  }
}

/**
 * A Duffy before 2026-12-02 said files collected but not named in the event (`unnamed` since) in `leftOut`, joined
 * after what the limit left out by `; `: such files were collected, so they are no loss the tenant must be told of.
 */
const UNNAMED_NOTE = /(?:^|; )\d+ more file\(s\) collected, not named here \(their names pass \d+ characters\): the session's artifacts list them$/;
function withoutUnnamedNote(leftOut: string | undefined): string | undefined {
  return leftOut?.replace(UNNAMED_NOTE, '') || undefined;
}

/**
 * Takes a settled session out of the World, and its lists out of the session. The sessions Map replaces its hash table
 * as sessions come and go; V8 keeps a replaced table, still pointing at its sessions, until the next full collection,
 * so what a forgotten session points to was promoted rather than dying young (P7: promoted bytes 43 -> 8 MB).
 */
function forget(world: World, s: Session): void {
  world.sessions.delete(s.id);
  s.specs = NONE;
  s.machineIds = NONE;
  s.lostMachineIds = NONE;
  s.artifacts = NONE;
  s.artifactsIncomplete = NONE;
}

/**
 * The entities' part of `evolve`: tenants, machines and sessions change, the indexes do not. The `entities`
 * projection folds documents with it, one event at a time, without a whole World (see entities.projection.ts).
 */
export function apply(world: World, event: DuffyEvent & { revision: number; position?: bigint }): World {
  const { revision } = event;
  if (event.position !== undefined) world.position = event.position;
  switch (event.type) {
    case 'IdAllocated':
      world.idRevisions.set(event.data.kind, revision);
      return world;
    case 'CheckpointPublished':
      return world;
    case 'LedgerRestored':
      world.restoresRevision = revision;
      // The ids the lost hours gave stay given: clients may still hold them.
      if (event.data.sessionIdsUpTo > world.lastSessionId) world.lastSessionId = event.data.sessionIdsUpTo;
      for (const h of event.data.machines) if (!world.machineIdsByHostname.has(hostKey(h))) world.unknownAtRestore.set(hostKey(h), event.data.at);
      return world;
    case 'ActiveAdminsChanged':
      world.adminsRevision = revision;
      return world;
    case 'ApiKeyAssigned':
      world.apiKeysRevision = revision;
      return world;
    case 'DefaultsSet': {
      const { nodeQuota, sessionLifetime, sessionLifetimeMax } = event.data;
      world.defaults = { nodeQuota, sessionLifetime, sessionLifetimeMax };
      world.defaultsRevision = revision;
      return world;
    }
    case 'PoolsConfigured':
      world.pools = new Map(event.data.pools.map((p) => [p.name, p]));
      world.poolsRevision = revision;
      return world;
    case 'TenantRegistered': {
      const d = event.data;
      world.tenants.set(d.tenantId, {
        id: d.tenantId,
        name: d.name,
        apiKeyDigest: d.apiKeyDigest,
        isAdmin: d.isAdmin,
        sshKey: d.sshKey,
        nodeQuota: d.nodeQuota,
        sessionLifetime: d.sessionLifetime,
        sessionLifetimeMax: d.sessionLifetimeMax,
        createdAt: d.at,
        retiredAt: null,
        revision,
        claims: new Map(),
        held: 0,
        waiting: 0,
        platform: null,
        usage: noUsage(),
      });
      world.tenantIdsByName.set(d.name, d.tenantId);
      if (!world.tenantIdsByKey.has(tenantKey(d.name))) world.tenantIdsByKey.set(tenantKey(d.name), d.tenantId);
      world.tenantIdsByDigest.set(d.apiKeyDigest, d.tenantId);
      return world;
    }
    case 'TenantUpdated': {
      const t = world.tenants.get(event.data.tenantId);
      if (!t) return world;
      const { apiKeyDigest, ...settings } = event.data.changes;
      if (apiKeyDigest !== undefined) {
        world.tenantIdsByDigest.delete(t.apiKeyDigest);
        world.tenantIdsByDigest.set(apiKeyDigest, t.id);
        t.apiKeyDigest = apiKeyDigest;
      }
      Object.assign(t, settings);
      t.revision = revision;
      return world;
    }
    case 'TenantRetired':
    case 'TenantReactivated': {
      const t = world.tenants.get(event.data.tenantId);
      if (!t) return world;
      t.retiredAt = event.type === 'TenantRetired' ? event.data.at : null;
      t.revision = revision;
      return world;
    }
    case 'QueueSpaceClaimed': {
      // What it waits for is counted from RequestQueued (`waiting`); this event only takes the tenant's revision.
      const t = world.tenants.get(event.data.tenantId);
      if (t) t.revision = revision;
      return world;
    }
    case 'QuotaClaimed':
    case 'QuotaReturned': {
      const t = world.tenants.get(event.data.tenantId);
      if (!t) return world;
      t.held -= t.claims.get(event.data.sessionId) ?? 0;
      if (event.type === 'QuotaClaimed') t.claims.set(event.data.sessionId, event.data.count);
      // The last claim returned: a new, young map rather than an emptied old one, whose table V8 would reallocate in
      // the old space on this delete and the next set (garbage there on every claim of a tenant with one session).
      else if (t.claims.size === 1 && t.claims.has(event.data.sessionId)) t.claims = new Map();
      else t.claims.delete(event.data.sessionId);
      t.held += t.claims.get(event.data.sessionId) ?? 0;
      t.revision = revision;
      return world;
    }
    case 'MachineRegistered': {
      const d = event.data;
      // A host name registered again after its machine was retired: the new machine takes the name, and goes on
      // with its service stream (the old one keeps its id and history).
      const previousId = world.machineIdsByHostname.get(hostKey(d.hostname));
      const previous = previousId === undefined ? undefined : world.machines.get(previousId);
      world.machines.set(d.machineId, newMachine({ id: d.machineId, hostname: d.hostname, ipaddr: d.ipaddr, pool: d.pool, reusable: d.reusable, data: d.data, hardware: d.hardware, comment: d.comment, state: d.state, createdAt: d.at, revision }));
      if (previous) world.machines.get(d.machineId)!.serviceRevision = previous.serviceRevision;
      world.machineIdsByHostname.set(hostKey(d.hostname), d.machineId);
      world.unknownAtRestore.delete(hostKey(d.hostname));
      indexIp(world, d.ipaddr, d.machineId);
      const inPool = world.machinesByPool.get(d.pool) ?? [];
      inPool.push(world.machines.get(d.machineId)!);
      world.machinesByPool.set(d.pool, inPool);
      const m = world.machines.get(d.machineId)!;
      // Registered `done` (Duffy v3's word for a node that is through): retired from the start, as a recycle to done retires.
      if (d.state === 'done') m.retiredAt = d.at;
      else world.notRetiredByPool.set(d.pool, (world.notRetiredByPool.get(d.pool) ?? 0) + 1);
      return world;
    }
    case 'MachineReserved': {
      const m = world.machines.get(event.data.machineId);
      if (!m) return world;
      m.sessionId = event.data.sessionId;
      m.tenantId = event.data.tenantId;
      m.reservedAt = event.data.at;
      m.contextualizeOnHandover = event.data.contextualize;
      m.contextualizeStarted = false;
      m.untouchedReturn = null;
      m.state = event.data.provision ? 'provisioning' : event.data.contextualize ? 'contextualizing' : 'deployed';
      m.allocations += 1;
      m.lastUsedAt = event.data.at;
      m.revision = revision;
      const t = world.tenants.get(event.data.tenantId);
      if (t && t.platform === null) t.platform = event.data.platform;
      if (world.keepsUsage) t?.usage.open.set(m.id, instant(event.data.at));
      const s = world.sessions.get(event.data.sessionId);
      // Copied, not pushed: a new session shares one empty list (see Session).
      if (s && s.tenantId === event.data.tenantId && !s.machineIds.includes(m.id)) s.machineIds = [...s.machineIds, m.id];
      return world;
    }
    case 'MachineReservationCancelled':
    case 'MachineReleased': {
      const m = world.machines.get(event.data.machineId);
      if (!m) return world;
      const untouched = m.state === 'provisioning' ? 'unused' : m.state === 'contextualizing' && !m.contextualizeStarted ? 'ready' : null;
      closeUsage(world, m, event.data.at);
      if (m.reservedAt) m.busyMs += Math.max(0, instant(event.data.at) - instant(m.reservedAt));
      // The tenant never had it, no allocation either: a session that failed (before its hand-over: a restart, a
      // caller gone, a timeout), or one ended (expired, done, cancelled) while its hand-over was still to run.
      const handingOver = m.state === 'provisioning' || m.state === 'contextualizing';
      if (m.reservedAt && ((event.type === 'MachineReleased' && event.data.reason === 'failed') || handingOver)) m.allocations = Math.max(0, m.allocations - 1);
      m.lastUsedAt = event.data.at;
      m.sessionId = null;
      m.tenantId = null;
      m.reservedAt = null;
      if (event.type === 'MachineReleased') {
        m.state = 'deprovisioning';
        m.releasingSession = event.data.sessionId;
        m.untouchedReturn = untouched;
      } else if (m.state === 'contextualizing' || m.state === 'deployed') {
        // Cancelled before the tenant got it. A key may already be on it: run the release playbook.
        m.state = m.state === 'deployed' ? 'ready' : 'deprovisioning';
        if (m.state === 'deprovisioning') m.untouchedReturn = untouched;
      } else if (m.state === 'provisioning') {
        m.state = 'unused';
      }
      // A hand-over's run may still be going on (another instance's, on a shared store): its claim stays until its
      // outcome, the release's own claim or its deadline, so no one starts the release over it.
      if (m.state !== 'deprovisioning') m.job = null;
      m.revision = revision;
      return world;
    }
    case 'PlaybookStarted': {
      const m = world.machines.get(event.data.machineId);
      if (!m) return world;
      m.job = { action: event.data.action, instance: event.data.instance, deadline: event.data.deadline };
      if (event.data.action === 'provision' && m.state === 'unused') m.state = 'provisioning';
      if (event.data.action === 'health_check') m.lastHealthCheckAt = event.data.at;
      if (event.data.action === 'contextualize') m.contextualizeStarted = true;
      m.revision = revision;
      return world;
    }
    case 'MachineProvisioned':
    case 'MachineContextualized':
    case 'ArtifactsCollected':
    case 'MachineReturnedToService': {
      const m = world.machines.get(event.data.machineId);
      if (!m) return world;
      m.job = null;
      m.runAlone = false;
      m.revision = revision;
      if (event.type === 'ArtifactsCollected') {
        m.artifactsCollectedFor = event.data.sessionId;
        const s = event.data.sessionId === null ? undefined : world.sessions.get(event.data.sessionId);
        if (!s) return world;
        s.artifacts = [...s.artifacts, ...event.data.files];
        const { error } = event.data;
        const leftOut = withoutUnnamedNote(event.data.leftOut);
        const why = error !== null ? `collection failed (${error}): only files copied before that are there` : leftOut;
        if (why) s.artifactsIncomplete = [...s.artifactsIncomplete, `${m.hostname}: ${why}`];
        return world;
      }
      // A provision that a contextualize follows is half a hand-over: the row ends when that works too.
      if (event.type !== 'MachineProvisioned' || m.sessionId === null || !m.contextualizeOnHandover) {
        m.failures = 0;
        m.handOverFailed = false;
      }
      if (event.type === 'MachineProvisioned') {
        m.ipaddr = event.data.ipaddr ?? m.ipaddr;
        // The old address stays listed: machineAtAddress compares with the machine's address now.
        indexIp(world, m.ipaddr, m.id);
        m.state = m.sessionId === null ? 'ready' : m.contextualizeOnHandover ? 'contextualizing' : 'deployed';
      } else if (event.type === 'MachineContextualized') {
        m.state = 'deployed';
      } else {
        const wasRetired = isRetired(m);
        m.state = 'unused';
        m.retiredAt = null;
        m.quarantine = null;
        countRetirement(world, m, wasRetired);
      }
      return world;
    }
    case 'MachineServiceChanged': {
      const m = world.machines.get(event.data.machineId);
      if (!m) return world;
      const wasRetired = isRetired(m);
      // Its own stream: the machine stream's revision (which reservations and playbook outcomes guard) is untouched.
      m.serviceRevision = revision;
      m.service = event.data.service;
      countRetirement(world, m, wasRetired);
      m.serviceReason = event.data.reason;
      m.serviceChangedAt = event.data.at;
      if (event.data.service === 'in-service' && m.state === 'failed') {
        // An admin's word overrides the health check: out of quarantine, provisioned before its next use.
        m.state = 'unused';
        m.failures = 0;
        m.handOverFailed = false;
        m.quarantine = null;
        m.healthCheckFailures = 0;
      }
      return world;
    }
    case 'MachineHardwareSet': {
      const m = world.machines.get(event.data.machineId);
      if (!m) return world;
      m.serviceRevision = revision;
      m.hardware = { ...event.data.hardware };
      return world;
    }
    case 'ProvisioningFailed': {
      const m = world.machines.get(event.data.machineId);
      if (!m) return world;
      m.job = null;
      m.runAlone = false;
      m.failures += 1;
      const { action, sessionId } = event.data;
      if (action === 'provision' || action === 'contextualize') m.handOverFailed = true;
      if (action === 'health_check') m.healthCheckFailures += 1;
      else m.provisioningFailures += 1;
      m.revision = revision;
      if (sessionId !== null && m.sessionId === sessionId && (action === 'provision' || action === 'contextualize')) {
        // The hand-over failed: the machine leaves the session, which gets another one or fails.
        closeUsage(world, m, event.data.at);
        const s = world.sessions.get(sessionId);
        if (s) {
          s.machineIds = s.machineIds.filter((id) => id !== m.id);
          s.lostMachineIds = [...(s.lostMachineIds ?? NONE), m.id];
        }
        if (m.reservedAt) m.busyMs += Math.max(0, instant(event.data.at) - instant(m.reservedAt));
        // The tenant never got it: a failed attempt is no allocation (wear counts what was used).
        m.allocations = Math.max(0, m.allocations - 1);
        m.sessionId = null;
        m.tenantId = null;
        m.reservedAt = null;
        // Its disk may hold half a hand-over: a provision starts from scratch, a contextualize is undone by release.
        m.state = action === 'provision' ? 'unused' : 'deprovisioning';
      } else if (action === 'provision') {
        m.state = 'unused';
      }
      return world;
    }
    case 'EnvironmentFault': {
      // Not the machine's failure: the claim ends, counters stay, and the work is due again.
      const m = world.machines.get(event.data.machineId);
      if (!m) return world;
      const { action, spawned } = event.data;
      m.job = null;
      m.revision = revision;
      if (action === 'contextualize' && !spawned) {
        m.contextualizeStarted = false;
        // Recorded after its session already released the machine: that release needs no playbook after all.
        if (m.state === 'deprovisioning' && m.releasingSession === event.data.sessionId && m.untouchedReturn === null) m.untouchedReturn = 'ready';
      }
      if (action === 'provision' && m.sessionId === null && m.state === 'provisioning') m.state = 'unused';
      // The check did not happen: due again as soon as Duffy can run it.
      if (action === 'health_check') m.lastHealthCheckAt = null;
      return world;
    }
    case 'PlaybookTimedOutInBatch':
    case 'PlaybookFailedInBatch': {
      // Nobody is blamed yet: the claim ends, and the machine's next run is its own.
      const m = world.machines.get(event.data.machineId);
      if (!m) return world;
      m.job = null;
      m.runAlone = true;
      m.revision = revision;
      if (event.data.action === 'provision' && m.sessionId === null && m.state === 'provisioning') m.state = 'unused';
      if (event.data.action === 'health_check') m.lastHealthCheckAt = null;
      return world;
    }
    case 'MachineQuarantined': {
      const m = world.machines.get(event.data.machineId);
      if (!m) return world;
      m.untouchedReturn = null;
      m.runAlone = false;
      m.state = 'failed';
      m.job = null;
      // A release that kept failing is over: the machine no longer drains for that session (the health check returns it).
      m.releasingSession = null;
      m.quarantines += 1;
      m.quarantine = { at: event.data.at, reason: event.data.reason };
      m.healthCheckFailures = 0;
      m.revision = revision;
      return world;
    }
    case 'MachineRecycled': {
      const m = world.machines.get(event.data.machineId);
      if (!m) return world;
      m.state = event.data.state;
      m.job = null;
      if (event.data.run && !m.handOverFailed) m.failures = 0;
      m.releasingSession = null;
      m.artifactsCollectedFor = null;
      m.untouchedReturn = null;
      m.runAlone = false;
      if (event.data.state === 'done') {
        const wasRetired = isRetired(m);
        m.retiredAt = event.data.at;
        countRetirement(world, m, wasRetired);
      }
      m.revision = revision;
      return world;
    }
    case 'MachineRequested': {
      const d = event.data;
      world.sessions.set(d.sessionId, new Session(d.sessionId, d.tenantId, d.specs, d.at, d.expiresAt, revision));
      if (d.sessionId > world.lastSessionId) world.lastSessionId = d.sessionId;
      world.openSessions.add(d.sessionId);
      return world;
    }
    case 'RequestQueued':
    case 'ReplacementReserved':
    case 'SessionStarted':
    case 'SessionRejected':
    case 'SessionExtended':
    case 'SessionReleased':
    case 'SessionFailed':
    case 'SessionExpired': {
      const s = world.sessions.get(event.data.sessionId);
      if (!s) return world;
      s.revision = revision;
      const wasWaiting = s.status === 'waiting';
      if (event.type === 'RequestQueued') {
        s.status = 'waiting';
        s.wasQueued = true;
        s.queue = { reason: event.data.reason, until: event.data.waitUntil, since: event.data.at };
      } else if (event.type === 'SessionStarted') {
        s.status = 'active';
        s.queue = null;
        s.machineIds = event.data.machineIds;
        s.startedAt = event.data.at;
        if (event.data.expiresAt) s.expiresAt = event.data.expiresAt;
      } else if (event.type === 'SessionRejected') {
        s.status = 'rejected';
        s.queue = null;
        s.rejection = event.data.reason;
        s.retiredAt = event.data.at;
      } else if (event.type === 'SessionExtended') {
        s.expiresAt = event.data.expiresAt;
      } else if (event.type === 'ReplacementReserved') {
        // Its MachineReserved events carry the machines; this one only moves the session's revision.
      } else if (event.type === 'SessionFailed') {
        s.status = 'released';
        s.releaseReason = 'failed';
        s.failure = event.data.reason;
        s.retiredAt = event.data.at;
      } else {
        s.status = event.type === 'SessionExpired' ? 'expired' : 'released';
        s.releaseReason = event.type === 'SessionExpired' ? 'expired' : event.data.reason;
        s.retiredAt = event.data.at;
      }
      if (wasWaiting !== (s.status === 'waiting')) {
        const t = world.tenants.get(s.tenantId);
        if (t) t.waiting += (wasWaiting ? -1 : 1) * machinesAsked(s.specs);
      }
      if (!sessionIsLive(s) && world.openSessions.delete(s.id)) world.ended.push(s.id);
      return world;
    }
    default: {
      // Compile-time check that every event type has a case above; at run time an unknown type changes nothing.
      const unhandled: never = event;
      void unhandled;
      return world;
    }
  }
}

function closeUsage(world: World, m: Machine, at: string): void {
  if (!world.keepsUsage) return;
  const t = m.tenantId === null ? undefined : world.tenants.get(m.tenantId);
  const start = t?.usage.open.get(m.id);
  if (t === undefined || start === undefined) return;
  t.usage.open.delete(m.id);
  addHold(t.usage.ended, start, instant(at), MINUTE_MS, FAIR_SHARE_WINDOW_MS / MINUTE_MS + 1);
}
