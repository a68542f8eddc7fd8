import { Catalog } from '../application/catalog.js';
import { joinedFor, queueOrder } from '../application/queue.service.js';
import { effective } from '../domain/decide.js';
import { EXTRA_LEVELS, LEVELS, type Level, levelOf, nodeService, retiredForGood } from '../domain/decide-service.js';
import { eligiblePools } from '../domain/policy.js';
import { type Machine, type Session, type Tenant, type World } from '../domain/world.js';

/** How Duffy v3 shows a secret it will not show (pydantic's SecretStr). */
export const MASKED = '**********';

/** Response shapes of Duffy v3, key for key: existing clients validate them. */
export function tenantView(t: Tenant, catalog: Catalog) {
  const e = effective(t, catalog.defaults);
  return {
    id: t.id,
    name: t.name,
    is_admin: t.isAdmin,
    ssh_key: MASKED,
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
const SECRET_PART = /secret|passw|passphrase|passcode|passord|token|cred|privkey|apikey|private|bearer|cookie|cert|jwt|id_rsa|id_ecdsa|id_ed25519|psk|auth|community|keytab|kubeconfig|hash|hmac|signature|sessionid/;
/**
 * Words that name a credential, alone or as their end: `ipmi.pass`, `IPMIPass`, `rootpass`, `signing_key`, `sshkey`,
 * `login.key`, `root_pw`, `bmcPwd`. Failing closed: a harmless `compass` is hidden too.
 */
const SECRET_WORD = /(pass|pwd|pw|pword|key|keys)$|^(pin|otp)$/;
/** Other languages' words for a password, as their letters read in plain ASCII. */
const FOREIGN_PASSWORD = /kennwort|passwort|contrasena|senha|motdepasse|parol|haslo|wachtwoord|salasana|lozinka|geslo|heslo|jelszo|sifre|losenord|adgangskode/;
/** Characters written for the letters they look like (`p@ssw0rd`, `k3y`); `1` is tried as `i` and as `l`. */
const LOOKALIKE: Record<string, string> = { '@': 'a', $: 's', '0': 'o', '3': 'e', '4': 'a', '5': 's', '7': 't' };
const asLetters = (name: string, one: string) => name.replace(/[@$013457]/g, (c) => (c === '1' ? one : LOOKALIKE[c]));

/**
 * Whether a node data or hardware key looks like it holds a credential (then only admins see it), as written and
 * with look-alike characters read as letters. A list of patterns, not a proof: a key beyond printable ASCII (a
 * Cyrillic `р` in `рassword`) is hidden whatever it says.
 */
function looksSecret(name: string): boolean {
  if (/[^\x20-\x7e]/.test(name)) return true;
  return [name, asLetters(name, 'i'), asLetters(name, 'l')].some(namesSecret);
}

function namesSecret(name: string): boolean {
  const lower = name.toLowerCase();
  if (SECRET_PART.test(lower.replace(/[^a-z0-9_]/g, '')) || FOREIGN_PASSWORD.test(lower.replace(/[^a-z0-9]/g, ''))) return true;
  // Words: split at punctuation, at a lowercase-to-capital step, and before the last capital of a run (IPMIPass).
  const words = name.split(/[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])/).map((w) => w.toLowerCase());
  return words.some((w) => SECRET_WORD.test(w));
}

/** Node `data` as a tenant may see it: every credential-looking key dropped, at any depth. */
export function publicData(data: unknown): unknown {
  if (Array.isArray(data)) return data.map(publicData);
  if (!data || typeof data !== 'object') return data;
  return Object.fromEntries(Object.entries(data).filter(([k]) => !looksSecret(k)).map(([k, v]) => [k, publicData(v)]));
}

/**
 * A node as a session shows it: shown to the session's tenant, so never with credentials, nor with the admins' note:
 * `comment` stays, null, as the field of Duffy v3's SessionNode model.
 */
function sessionNodeView(m: Machine, admin = false) {
  return { id: m.id, hostname: m.hostname, ipaddr: m.ipaddr, comment: null as string | null, pool: m.pool, reusable: m.reusable, data: admin ? m.data : publicData(m.data), state: m.state };
}

export function nodeView(m: Machine, admin = false) {
  const service = nodeService(m);
  // An admin's retirement shows once the machine no longer drains, a used-up one (`done`) at its recycling.
  const retiredAt = retiredForGood(m) ? (m.retiredAt ?? m.serviceChangedAt) : null;
  return {
    ...sessionNodeView(m, admin),
    // The admins' note (a rack, a vault path): theirs, as in a session's nodes.
    comment: admin ? (m.comment ?? null) : null,
    created_at: m.createdAt,
    retired_at: retiredAt,
    active: retiredAt === null,
    // Duffy extensions: what requests may require of it; whether it may be handed out (`state` keeps Duffy v3's values).
    hardware: admin ? (m.hardware ?? {}) : publicData(m.hardware ?? {}),
    service,
    service_reason: service === 'quarantined' ? (m.quarantine?.reason ?? null) : service === 'in-service' ? null : (m.serviceReason ?? null),
  };
}

/** Tenants see the nodes they hold; admins see all. */
export const maySee = (m: Machine, actor: Tenant) => actor.isAdmin || (m.sessionId !== null && m.tenantId === actor.id);

/**
 * `queue`: the in-process World, for the queue position (the queue is decided from it); `reasonNow`: why a waiting
 * request waits now (the queue's last pass), else the reason it joined with.
 */
export function sessionView(s: Session, world: World, catalog: Catalog, queue: World = world, reasonNow = joinedFor, nowMs: () => number = Date.now) {
  const live = s.status === 'active';
  return {
    id: s.id,
    created_at: s.createdAt,
    retired_at: s.retiredAt,
    active: live,
    // As Duffy v3: an ended session keeps the expiry it had. A request never served (waiting in the queue, or refused
    // at the end of its wait) has no lease yet: its lease starts when it is served (v3's model allows null).
    expires_at: s.startedAt === null ? null : s.expiresAt,
    tenant: tenantView(world.tenants.get(s.tenantId)!, catalog),
    data: {
      nodes_specs: s.specs,
      ...(s.artifacts.length ? { artifacts: s.artifacts } : {}),
      // Duffy extension: machines whose collection failed or left files out (over the pool's limits).
      ...(s.artifactsIncomplete?.length ? { artifacts_incomplete: s.artifactsIncomplete } : {}),
      // Duffy extension: a waiting request says why it waits and where it stands.
      ...(s.status === 'waiting' && s.queue ? { queue: { position: queuePosition(queue, s.id, nowMs), reason: reasonNow(s), until: s.queue.until } } : {}),
      ...(s.status === 'rejected' && s.rejection ? { rejected: s.rejection } : {}),
      // Duffy extension: how a session ended (done, expired, tenant-retired, failed): a job whose lease ran out
      // mid-test learns its machines were taken back then.
      ...(s.status !== 'active' && s.releaseReason !== null ? { ended: s.releaseReason } : {}),
      // Duffy extension: why a session failed (a hand-over that could not be done, Duffy restarted or stopped during it).
      ...(s.releaseReason === 'failed' && s.failure ? { failed: s.failure } : {}),
      ...overflowNote(s, world, catalog),
    },
    // Once the session is over its nodes are listed as they were handed out, without a state (Duffy v3's
    // SessionNode.pydantic_view): what they do now is no longer this session's, and may be another tenant's.
    nodes: s.machineIds.map((id) => world.machines.get(id)!).filter(Boolean).map((m) => ({ ...sessionNodeView(m), state: live ? m.state : null })),
  };
}

/**
 * Duffy extension: a request by type served outside the tenant's platform family (soft affinity: its family had
 * too few free machines of that type and arch) says so. Specs naming a pool or platform are the tenant's choice.
 */
function overflowNote(s: Session, world: World, catalog: Catalog): { affinity?: { platform: string; served_from: string[]; reason: string } } {
  const family = world.tenants.get(s.tenantId)?.platform;
  if (!family || s.specs.some((x) => x.pool !== undefined || x.platform !== undefined)) return {};
  // Where the family offers no such machine at all, another family is no fallback but the only choice.
  if (!s.specs.every((spec) => eligiblePools(catalog.profiles, spec).some((p) => p.platform === family))) return {};
  const platforms = s.machineIds.map((id) => world.machines.get(id)).map((m) => (m ? catalog.pool(m.pool)?.platform : undefined));
  const others = [...new Set(platforms.filter((p): p is string => p !== undefined && p !== family))].sort();
  if (others.length === 0) return {};
  const kind = s.specs.some((spec) => spec.hardware !== undefined) ? 'of the kind and hardware asked for' : 'of the kind asked for';
  return { affinity: { platform: family, served_from: others, reason: `too few ${family} machines ${kind} were free: served from ${others.join(', ')}` } };
}

export function poolLevels(world: World, pool: string) {
  const levels = Object.fromEntries([...LEVELS, ...EXTRA_LEVELS].map((l) => [l, 0])) as Record<Level, number>;
  for (const m of world.machines.values()) {
    const level = m.pool === pool ? levelOf(m) : null;
    if (level) levels[level] += 1;
  }
  return levels;
}

/**
 * 1-based place in the fair-share order of waiting requests; null when the in-process World has already seen it
 * leave the queue (served, cancelled or rejected) while the view it is shown in was read a moment earlier. The
 * order is computed once per World and ledger position (for at most a second: urgency moves with time), not once
 * per session shown: a list of n waiting sessions cost n sorts of the whole queue.
 */
export function queuePosition(world: World, sessionId: number, nowMs: () => number): number | null {
  // The ledger's clock, as the queue itself and GET /queue order by (the host's clock set back would put urgency off).
  const now = nowMs();
  let order = orders.get(world);
  if (!order || order.position !== world.position || now - order.at > 1000) {
    order = { position: world.position, at: now, places: new Map(queueOrder(world, now).map((s, i) => [s.id, i + 1])) };
    orders.set(world, order);
  }
  return order.places.get(sessionId) ?? null;
}
const orders = new WeakMap<World, { position: bigint; at: number; places: Map<number, number> }>();
