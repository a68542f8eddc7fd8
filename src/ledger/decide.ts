import { type ExpectedRevision } from '../eventstore/event-store.port.js';
import { type Pick, type PoolProfile, planAllocation } from '../scheduling/policy.js';
import { refuse } from './errors.js';
import { type DuffyEvent, type MachineState, type NodeSpec, type PlaybookRun, type RecyclePolicy, type ReleaseReason, type TenantSettings, stream } from './events.js';
import { type Machine, type Session, type Tenant, type World, claimedBy, sessionIsLive } from './world.js';

/**
 * Deciders: (World, command, now) -> the writes that record the decision, or a DomainError.
 * Pure: no I/O, no clock (time comes in the command), no Nest. Each write carries the expected revision
 * of the stream it guards, so a stale decision fails at append time and is taken again on fresh state.
 */
export interface Write {
  stream: string;
  expected: ExpectedRevision;
  events: DuffyEvent[];
}

export interface Defaults {
  nodeQuota: number;
  sessionLifetime: number;
  sessionLifetimeMax: number;
}

export const effective = (t: Tenant, d: Defaults) => ({
  nodeQuota: t.nodeQuota ?? d.nodeQuota,
  sessionLifetime: t.sessionLifetime ?? d.sessionLifetime,
  sessionLifetimeMax: t.sessionLifetimeMax ?? d.sessionLifetimeMax,
});

const iso = (ms: number) => new Date(ms).toISOString();

export function decideRegisterTenant(
  world: World,
  cmd: { tenantId: number; name: string; apiKeyDigest: string; isAdmin: boolean; settings: TenantSettings; now: string },
): Write {
  if (world.tenantIdsByName.has(cmd.name)) refuse('conflict', `tenant ${cmd.name} already exists`);
  return {
    stream: stream.tenant(cmd.name),
    expected: 'no_stream',
    events: [
      {
        type: 'TenantRegistered',
        data: { tenantId: cmd.tenantId, name: cmd.name, apiKeyDigest: cmd.apiKeyDigest, isAdmin: cmd.isAdmin, ...cmd.settings, at: cmd.now },
      },
    ],
  };
}

export function decideUpdateTenant(
  tenant: Tenant,
  cmd: { changes: Partial<TenantSettings & { apiKeyDigest: string }>; active?: boolean; now: string },
): Write | null {
  const events: DuffyEvent[] = [];
  const changes = Object.fromEntries(
    Object.entries(cmd.changes).filter(([k, v]) => v !== undefined && (tenant as unknown as Record<string, unknown>)[k] !== v),
  );
  if (Object.keys(changes).length > 0) events.push({ type: 'TenantUpdated', data: { tenantId: tenant.id, changes, at: cmd.now } });
  if (cmd.active === false && tenant.retiredAt === null) events.push({ type: 'TenantRetired', data: { tenantId: tenant.id, at: cmd.now } });
  if (cmd.active === true && tenant.retiredAt !== null) events.push({ type: 'TenantReactivated', data: { tenantId: tenant.id, at: cmd.now } });
  return events.length ? { stream: stream.tenant(tenant.name), expected: tenant.revision, events } : null;
}

export function decideRegisterMachine(
  world: World,
  pools: readonly PoolProfile[],
  cmd: { machineId: number; hostname: string; ipaddr: string | null; pool: string; reusable: boolean; data: Record<string, unknown>; state: Machine['state']; now: string },
): Write {
  if (world.machineIdsByHostname.has(cmd.hostname)) refuse('conflict', `node ${cmd.hostname} already exists`);
  if (!pools.some((p) => p.name === cmd.pool)) refuse('invalid', `unknown pool ${cmd.pool}`);
  const { now, ...data } = cmd;
  return { stream: stream.machine(cmd.hostname), expected: 'no_stream', events: [{ type: 'MachineRegistered', data: { ...data, at: now } }] };
}

export interface RequestPlan {
  requested: Write;
  claim: Write;
  reserves: Write[];
  machineIds: number[];
  started: Write;
}

/**
 * A request becomes: the session's MachineRequested, the tenant's QuotaClaimed, one MachineReserved per machine
 * (all guarded by revisions, written together), then SessionStarted once all of them are durable.
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
    /** Machines and quota already promised to requests still being written in this process. */
    busy: (machineId: number) => boolean;
    pendingQuota: number;
  },
): RequestPlan {
  const tenant = world.tenants.get(cmd.tenantId) ?? refuse('not_found', `tenant ${cmd.tenantId} not found`);
  if (tenant.retiredAt !== null) refuse('forbidden', `tenant ${tenant.name} is retired`);
  if (cmd.specs.length === 0) refuse('invalid', 'nodes_specs must not be empty');
  const wanted = cmd.specs.reduce((n, s) => n + s.quantity, 0);
  const limits = effective(tenant, defaults);
  const held = claimedBy(tenant) + cmd.pendingQuota;
  if (held + wanted > limits.nodeQuota) {
    refuse('quota', `quota exceeded: tenant ${tenant.name} has ${held} of ${limits.nodeQuota} nodes and asked for ${wanted} more`);
  }
  for (const spec of cmd.specs) {
    if (spec.pool !== undefined && !pools.some((p) => p.name === spec.pool)) refuse('not_found', `can't reserve nodes: unknown pool ${spec.pool}`);
  }
  const plan = planAllocation({
    specs: cmd.specs,
    pools,
    tenantPlatform: tenant.platform,
    free: (pool) => freeMachines(world, pool, cmd.busy),
  });
  if (!plan.ok) refuse('capacity', `can't reserve nodes: ${plan.reason}`);
  const picks = plan.ok ? plan.picks : [];
  const expiresAt = iso(Date.parse(cmd.now) + limits.sessionLifetime * 1000);
  const s = stream.session(cmd.sessionId);
  return {
    requested: {
      stream: s,
      expected: 'no_stream',
      events: [{ type: 'MachineRequested', data: { sessionId: cmd.sessionId, tenantId: tenant.id, tenant: tenant.name, specs: cmd.specs, expiresAt, at: cmd.now } }],
    },
    claim: {
      stream: stream.tenant(tenant.name),
      expected: tenant.revision,
      events: [{ type: 'QuotaClaimed', data: { tenantId: tenant.id, sessionId: cmd.sessionId, count: wanted, at: cmd.now } }],
    },
    reserves: picks.map((p) => decideReserve(p, cmd.sessionId, tenant.id, cmd.contextualize(p.machine.pool), cmd.now)),
    machineIds: picks.map((p) => p.machine.id),
    started: { stream: s, expected: 0, events: [{ type: 'SessionStarted', data: { sessionId: cmd.sessionId, machineIds: picks.map((p) => p.machine.id), at: cmd.now } }] },
  };
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

/** Machines a request may take: ready ones, and unused ones that get provisioned on demand; never one an admin took out of service. */
export function* freeMachines(world: World, pool: string, busy: (id: number) => boolean): Iterable<Machine> {
  for (const m of world.machinesByPool.get(pool) ?? []) {
    if ((m.state === 'ready' || m.state === 'unused') && m.job === null && m.retiredAt === null && m.sessionId === null && m.service === 'in-service' && !busy(m.id)) yield m;
  }
}

/** Undo what part of a request got written: the request failed, nobody may be left holding anything. */
export function decideAbandonRequest(world: World, sessionId: number, reason: string, now: string): Write[] {
  const writes: Write[] = [];
  const session = world.sessions.get(sessionId);
  for (const m of world.machines.values()) {
    if (m.sessionId === sessionId) {
      writes.push({
        stream: stream.machine(m.hostname),
        expected: m.revision,
        events: [{ type: 'MachineReservationCancelled', data: { machineId: m.id, sessionId, reason, at: now } }],
      });
    }
  }
  for (const t of world.tenants.values()) {
    const count = t.claims.get(sessionId);
    if (count !== undefined) {
      writes.push({ stream: stream.tenant(t.name), expected: t.revision, events: [{ type: 'QuotaReturned', data: { tenantId: t.id, sessionId, count, at: now } }] });
    }
  }
  if (session && session.status === 'requested') {
    writes.push({ stream: stream.session(sessionId), expected: session.revision, events: [{ type: 'SessionRejected', data: { sessionId, reason, at: now } }] });
  }
  return writes;
}

/** Who may see or change a session: its tenant, or an admin. Others get 404, never its data. */
export function visibleSession(world: World, sessionId: number, actor: Tenant): Session {
  const s = world.sessions.get(sessionId);
  const neverShown = s?.status === 'requested' || (s?.status === 'rejected' && !s.wasQueued);
  if (!s || neverShown || (s.tenantId !== actor.id && !actor.isAdmin)) {
    return refuse('not_found', `session ${sessionId} not found`);
  }
  return s;
}

/** Ending a session: the session's own event first; the machines and the quota follow (see decideSettleSession). */
export function decideEndSession(session: Session, reason: ReleaseReason, now: string, detail?: string): Write | null {
  if (session.status !== 'active') return null;
  const event: DuffyEvent =
    reason === 'expired'
      ? { type: 'SessionExpired', data: { sessionId: session.id, at: now } }
      : reason === 'failed'
        ? { type: 'SessionFailed', data: { sessionId: session.id, reason: detail ?? 'hand-over failed', at: now } }
        : { type: 'SessionReleased', data: { sessionId: session.id, reason, at: now } };
  return { stream: stream.session(session.id), expected: session.revision, events: [event] };
}

/**
 * A session that is over but still holds machines or quota (just ended, or the process died half-way):
 * release every machine it holds and return its quota. Repeating it writes nothing new.
 */
export function decideSettleSession(world: World, session: Session, now: string, recyclesInstantly: (pool: string) => boolean = () => false): Write[] {
  if (sessionIsLive(session)) return [];
  const reason: ReleaseReason = session.releaseReason ?? 'done';
  const writes: Write[] = [];
  for (const id of session.machineIds) {
    const m = world.machines.get(id);
    if (m && m.sessionId === session.id) {
      writes.push({
        stream: stream.machine(m.hostname),
        expected: m.revision,
        events:
          session.status === 'rejected'
            ? [{ type: 'MachineReservationCancelled', data: { machineId: m.id, sessionId: session.id, reason: session.rejection ?? 'rejected', at: now } }]
            : [
                { type: 'MachineReleased', data: { machineId: m.id, sessionId: session.id, reason, at: now } },
                // Nothing to undo on it: back in service in the same write.
                ...(recyclesInstantly(m.pool)
                  ? [recycled(m, 'reuse', now)]
                  : []),
              ],
      });
    }
  }
  const tenant = world.tenants.get(session.tenantId);
  const count = tenant?.claims.get(session.id);
  if (tenant && count !== undefined) {
    writes.push({ stream: stream.tenant(tenant.name), expected: tenant.revision, events: [{ type: 'QuotaReturned', data: { tenantId: tenant.id, sessionId: session.id, count, at: now } }] });
  }
  return writes;
}

/** `+2h`, `+30m`, `+90s`, `+1d` or an ISO time; clamped to created_at + the tenant's maximum lifetime. */
export function decideExtendSession(session: Session, tenant: Tenant, defaults: Defaults, expiresAt: string, now: string): Write {
  if (session.status !== 'active') refuse('invalid', `session ${session.id} is not active`);
  const target = parseExpiry(expiresAt, Date.parse(now));
  const max = Date.parse(session.createdAt) + effective(tenant, defaults).sessionLifetimeMax * 1000;
  const clamped = iso(Math.min(target, max));
  return { stream: stream.session(session.id), expected: session.revision, events: [{ type: 'SessionExtended', data: { sessionId: session.id, expiresAt: clamped, at: now } }] };
}

export function parseExpiry(value: string, nowMs: number): number {
  const rel = /^\+(\d{1,7})([smhd])$/.exec(value.trim());
  if (rel) return nowMs + Number(rel[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[rel[2] as 's' | 'm' | 'h' | 'd'] * 1000;
  const abs = Date.parse(value);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(value) || Number.isNaN(abs)) {
    return refuse('invalid', `expires_at must be like "+2h", "+30m" or an ISO 8601 time, got ${JSON.stringify(value)}`);
  }
  if (abs <= nowMs) refuse('invalid', 'expires_at must be in the future');
  return abs;
}

/** The state a released machine returns to: retired if not reusable, powered off (unused) after shutdown, else ready. */
export function recycledState(machine: Machine, policy: RecyclePolicy): MachineState {
  return !machine.reusable ? 'done' : policy === 'shutdown' ? 'unused' : 'ready';
}

/** MachineRecycled, with the run of the release playbook when there was one. */
export function recycled(machine: Machine, policy: RecyclePolicy, now: string, run?: PlaybookRun): DuffyEvent {
  return { type: 'MachineRecycled', data: { machineId: machine.id, policy, state: recycledState(machine, policy), ...(run ? { run } : {}), at: now } };
}

/** Back into service after release, where no playbook is needed. */
export function decideRecycle(machine: Machine, policy: RecyclePolicy, now: string): Write | null {
  if (machine.state !== 'deprovisioning') return null;
  return { stream: stream.machine(machine.hostname), expected: machine.revision, events: [recycled(machine, policy, now)] };
}

/** A reservation that names a session the ledger does not have (a request cut short before its first write). */
export function decideCancelOrphan(world: World, machineId: number, now: string): Write[] {
  const m = world.machines.get(machineId);
  if (!m || m.sessionId === null) return [];
  const s = world.sessions.get(m.sessionId);
  if (s && s.tenantId === m.tenantId) return [];
  return [
    {
      stream: stream.machine(m.hostname),
      expected: m.revision,
      events: [{ type: 'MachineReservationCancelled', data: { machineId: m.id, sessionId: m.sessionId, reason: 'orphaned reservation', at: now } }],
    },
  ];
}

/** No capacity now, and the request may wait: the session is recorded as waiting, holding nothing. */
export function decideQueueRequest(world: World, cmd: { sessionId: number; tenantId: number; specs: NodeSpec[]; reason: string; waitSeconds: number; defaults: Defaults; now: string }): Write {
  const tenant = world.tenants.get(cmd.tenantId) ?? refuse('not_found', `tenant ${cmd.tenantId} not found`);
  const nowMs = Date.parse(cmd.now);
  const expiresAt = iso(nowMs + effective(tenant, cmd.defaults).sessionLifetime * 1000);
  return {
    stream: stream.session(cmd.sessionId),
    expected: 'no_stream',
    events: [
      { type: 'MachineRequested', data: { sessionId: cmd.sessionId, tenantId: tenant.id, tenant: tenant.name, specs: cmd.specs, expiresAt, at: cmd.now } },
      { type: 'RequestQueued', data: { sessionId: cmd.sessionId, reason: cmd.reason, waitUntil: iso(nowMs + cmd.waitSeconds * 1000), at: cmd.now } },
    ],
  };
}

/** A waiting request leaves the queue unserved: its time is up, or its tenant cancelled it. */
export function decideLeaveQueue(session: Session, reason: string, now: string): Write | null {
  if (session.status !== 'waiting') return null;
  return { stream: stream.session(session.id), expected: session.revision, events: [{ type: 'SessionRejected', data: { sessionId: session.id, reason, at: now } }] };
}
