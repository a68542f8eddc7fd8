import { Catalog } from '../application/catalog.js';
import { queueOrder } from '../application/queue.service.js';
import { effective } from '../domain/decide.js';
import { type Machine, type Session, type Tenant, type World } from '../domain/world.js';

/** Response shapes of Duffy v3, key for key: existing clients validate them. */
export function tenantView(t: Tenant, catalog: Catalog) {
  const e = effective(t, catalog.defaults);
  return {
    id: t.id,
    name: t.name,
    is_admin: t.isAdmin,
    ssh_key: '**********',
    node_quota: t.nodeQuota,
    session_lifetime: t.sessionLifetime,
    session_lifetime_max: t.sessionLifetimeMax,
    created_at: t.createdAt,
    retired_at: t.retiredAt,
    active: t.retiredAt === null,
    effective_node_quota: e.nodeQuota,
    effective_session_lifetime: e.sessionLifetime,
    effective_session_lifetime_max: e.sessionLifetimeMax,
  };
}

/** Keys of node `data` that hold credentials (BMC passwords, tokens, a `secrets` map): admins only. */
const SECRET_KEY = /secret|passw|passwd|token|credential|api_?key|private_?key/i;

/** Node `data` as a tenant may see it: every credential-looking key dropped, at any depth. */
export function publicData(data: unknown): unknown {
  if (Array.isArray(data)) return data.map(publicData);
  if (!data || typeof data !== 'object') return data;
  return Object.fromEntries(Object.entries(data).filter(([k]) => !SECRET_KEY.test(k)).map(([k, v]) => [k, publicData(v)]));
}

/** A node inside a session: shown to the session's tenant, so never with credentials. */
export function sessionNodeView(m: Machine, admin = false) {
  return { id: m.id, hostname: m.hostname, ipaddr: m.ipaddr, comment: null, pool: m.pool, reusable: m.reusable, data: admin ? m.data : publicData(m.data), state: m.state };
}

export function nodeView(m: Machine, admin = false) {
  return { ...sessionNodeView(m, admin), created_at: m.createdAt, retired_at: m.retiredAt, active: m.retiredAt === null };
}

/** Tenants see the nodes they hold; admins see all. */
export const maySee = (m: Machine, actor: Tenant) => actor.isAdmin || (m.sessionId !== null && m.tenantId === actor.id);

/** `queue`: the in-process World, for the queue position (the queue is decided from it). */
export function sessionView(s: Session, world: World, catalog: Catalog, queue: World = world) {
  const live = s.status === 'active';
  return {
    id: s.id,
    created_at: s.createdAt,
    retired_at: s.retiredAt,
    active: live,
    expires_at: live ? s.expiresAt : null,
    tenant: tenantView(world.tenants.get(s.tenantId)!, catalog),
    data: {
      nodes_specs: s.specs,
      ...(s.artifacts.length ? { artifacts: s.artifacts } : {}),
      // Duffy extension: a waiting request says why it waits and where it stands.
      ...(s.status === 'waiting' && s.queue ? { queue: { position: queuePosition(queue, s.id), reason: s.queue.reason, until: s.queue.until } } : {}),
      ...(s.status === 'rejected' && s.rejection ? { rejected: s.rejection } : {}),
    },
    // Once the session is over its nodes are listed as they were handed out; their current state is theirs.
    nodes: s.machineIds.map((id) => world.machines.get(id)!).filter(Boolean).map((m) => sessionNodeView(m)),
  };
}

export const LEVELS = ['provisioning', 'ready', 'contextualizing', 'deployed', 'deprovisioning'] as const;

export function poolLevels(world: World, pool: string) {
  const levels = Object.fromEntries(LEVELS.map((l) => [l, 0])) as Record<(typeof LEVELS)[number], number>;
  for (const m of world.machines.values()) {
    if (m.pool === pool && m.retiredAt === null && m.state in levels) levels[m.state as (typeof LEVELS)[number]] += 1;
  }
  return levels;
}

/** 1-based place in the fair-share order of waiting requests. */
export function queuePosition(world: World, sessionId: number): number {
  return queueOrder(world, Date.now()).findIndex((s) => s.id === sessionId) + 1;
}
