import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { EventStore, RecordedEvent } from '../application/ports/event-store.port.js';
import { LEDGER_FILE, headFileOf, readHeadRecord } from '../adapters/eventstore/data-dir-lock.js';
import { damagedDatabase } from '../application/ports/storage-fault.port.js';
import { isEventStoreUrl } from '../config/config.js';
import { isRecord, verifyGlobalChain } from './chain.js';
import type { LedgerDigest } from './digest.js';
import { BadQuestionError, NotFoundError } from './not-found.js';
import { CHECKPOINT_STREAM } from './checkpoint.js';
import { effective, tenantExpiryCeilingMs } from '../domain/decide.js';
import { DUFFY_ACTOR, type Defaults, type DuffyEvent, type HardwareRequirement, type NodeSpec, idOf, stream } from '../domain/events.js';
import { unmet } from '../domain/hardware.js';
import { type Machine, activeAdmins, emptyWorld, evolve, hostKey, isRetired, tenantKey } from '../domain/world.js';
import { isFree } from '../domain/indexes.js';
import { type PoolProfile, eligiblePools, lessStressed } from '../domain/policy.js';
import { type Violation, checkInvariants, holdEnds, holdStarts } from './invariants.js';

/** Opens a ledger read-only for auditing: an embedded file, or an EventStoreDB URL. */

/** Adapters load on demand: the replay and its helpers stay pure, and the CLI loads only the driver it needs. */
export async function openLedger(location: string): Promise<EventStore> {
  if (isEventStoreUrl(location)) return new (await import('../adapters/eventstore/kurrentdb-event-store.js')).KurrentDbEventStore(location);
  // Read-only: a missing file is not created, and SQLite's own words would not say which file.
  if (!existsSync(location)) throw new NotFoundError(`no ledger at ${location} (give --ledger, or set DUFFY_EVENTSTORE or DUFFY_DATA_DIR)`);
  // SQLite's words for a directory are "disk I/O error".
  if (statSync(location).isDirectory()) throw new NotFoundError(`${location} is a directory; the ledger is the file ${join(location, LEDGER_FILE)}`);
  try {
    return new (await import('../adapters/eventstore/sqlite-event-store.js')).SqliteEventStore(location, { groupCommit: false, readonly: true });
  } catch (err) {
    // A file whose writer stopped mid-write (a `duffy backup` killed): SQLite would roll its journal back, which a
    // read-only reader cannot, and says only "attempt to write a readonly database".
    if (existsSync(`${location}-journal`) && /readonly database/.test(String((err as Error).message))) {
      throw new Error(`${location} is not a readable Duffy ledger: its writer stopped while writing it (${location}-journal is beside it; a backup cut short?)`);
    }
    // An empty file, another SQLite database, or not SQLite at all: say which file, not only SQLite's words.
    if (damagedDatabase(err) !== undefined || /no such table: events/.test(String((err as Error).message))) {
      throw new Error(`${location} is not a readable Duffy ledger: ${(err as Error).message}`);
    }
    throw err;
  }
}

export async function* allEvents(store: EventStore, pageSize = 5000): AsyncGenerator<RecordedEvent> {
  let after = 0n;
  for (;;) {
    const page = await store.readAll(after, pageSize);
    if (page.length === 0) return;
    yield* page;
    after = page[page.length - 1].position;
  }
}

export async function collect(store: EventStore): Promise<RecordedEvent[]> {
  const out: RecordedEvent[] = [];
  for await (const e of allEvents(store)) out.push(e);
  return out;
}

/** A machine freed this recently (ready or unused again) may have been passed over by a choice made while it was busy. */
const IN_FLIGHT_GRACE_MS = 1000;

/**
 * Invariants 1, 2, 3, 6 (see invariants.ts), 7 (a tenant moved off its platform only when its request allowed it),
 * 8 (no less-worn machine of the same pool, with the hardware the request asked for, was free when one was reserved) and the admin rule (once there is an
 * active admin there always is one, and the `admins` stream says who), folding the World as it goes.
 */
export function replay(events: RecordedEvent[], fallback: Defaults, pools: readonly PoolProfile[] = []): Violation[] {
  const violations = checkInvariants(events, fallback);
  const specs = new Map<number, NodeSpec[]>();
  const world = emptyWorld();
  const freedAt = new Map<number, number>();
  for (const recorded of events) {
    const e = recorded as RecordedEvent & DuffyEvent;
    if (e.type === 'MachineReserved') {
      const m = world.machines.get(e.data.machineId);
      const at = Date.parse(e.data.at);
      const needs = m && hardwareNeeds(specs.get(e.data.sessionId) ?? [], m, pools);
      const worn = m && (world.machinesByPool.get(m.pool) ?? []).find(
        (x) =>
          x.id !== m.id &&
          needs!.every((req) => unmet(x.hardware, req).length === 0) &&
          (x.state === 'ready' || (x.state === 'unused' && m.state === 'unused')) &&
          x.sessionId === null && x.job === null && x.retiredAt === null && x.service === 'in-service' &&
          at - (freedAt.get(x.id) ?? 0) > IN_FLIGHT_GRACE_MS &&
          ((x.state === 'ready' && m.state !== 'ready') || lessStressed(x, m) < 0),
      );
      if (m && worn) {
        violations.push({
          invariant: 8,
          message: `session ${e.data.sessionId} got ${m.hostname} (busy ${m.busyMs} ms, ${m.allocations} allocations) while ${worn.hostname} (busy ${worn.busyMs} ms, ${worn.allocations} allocations) of the same pool was free`,
          positions: [recorded.position],
        });
      }
    }
    // Invariant 7, judged on the family the tenant has before this event (the World's), not only on the event's label:
    // a second `established` or a `kept` on another family is a move all the same. Overflow and a family that does not
    // offer the kind are the policy's to allow (the free machines of the moment are not judged here).
    const family = e.type === 'MachineReserved' ? world.tenants.get(e.data.tenantId)?.platform ?? null : null;
    const offFamily =
      e.type !== 'MachineReserved' ? undefined
      : family !== null && family !== e.data.platform && e.data.affinity !== 'overflow' && e.data.affinity !== 'not-offered' ? family
      : e.data.affinity === 'fallback' ? ''
      : undefined;
    // Only these events change who is an active admin (a scan of the tenants per event would not scale).
    const admins = ADMIN_EVENTS.has(e.type) ? activeAdmins(world) : undefined;
    violations.push(...keyRule(world, e, recorded.position), ...freeRule(world, e, recorded.position), ...leaseRule(world, recorded, fallback), ...endRule(world, recorded));
    evolve(world, e);
    if (admins) violations.push(...adminRule(e, recorded.position, admins, activeAdmins(world)));
    const touched = (e.data as { machineId?: number }).machineId;
    const after = touched === undefined ? undefined : world.machines.get(touched);
    // Free again, ready or unused (a provisioning that failed or timed out frees an unused one too).
    if (after && (after.state === 'ready' || after.state === 'unused') && after.job === null) freedAt.set(touched!, Date.parse(String((e.data as { at?: string }).at ?? 0)));
    if (e.type === 'MachineRequested') specs.set(e.data.sessionId, e.data.specs);
    if (e.type === 'MachineReserved' && offFamily !== undefined) {
      const explicit = (specs.get(e.data.sessionId) ?? []).some((s) => s.pool !== undefined || s.platform !== undefined);
      if (!explicit) {
        violations.push({
          invariant: 7,
          message: `session ${e.data.sessionId} got ${e.data.hostname} on platform ${e.data.platform}, off its tenant's family${offFamily ? ` ${offFamily}` : ''}, without asking for it`,
          positions: [recorded.position],
        });
      }
    }
  }
  return violations.sort((a, b) => (a.positions[0] < b.positions[0] ? -1 : 1));
}

/**
 * The hardware a reserved machine may have been chosen for: each spec of its request that could take it (its pool,
 * or one of the pools its type, arch and platform match in the configuration given; any spec by type where that
 * does not list the machine's pool)
 * and whose requirements it meets. A machine passed over is less worn only if it meets all of them: the ledger
 * does not say which spec a reservation served, so the replay reports only choices that were surely wrong.
 */
function hardwareNeeds(specs: readonly NodeSpec[], m: Machine, pools: readonly PoolProfile[]): HardwareRequirement[] {
  // A configuration that does not list the machine's pool (another farm's, the demo's) says nothing of it.
  const known = pools.some((p) => p.name === m.pool);
  const couldTake = (s: NodeSpec) => (s.pool !== undefined ? s.pool === m.pool : !known || eligiblePools(pools, s).some((p) => p.name === m.pool));
  return specs.filter((s) => s.hardware !== undefined && couldTake(s) && unmet(m.hardware, s.hardware).length === 0).map((s) => s.hardware!);
}

const ADMIN_EVENTS = new Set<string>(['TenantRegistered', 'TenantRetired', 'TenantReactivated', 'ActiveAdminsChanged']);

/**
 * The admin rule on one event, given the active admins before and after it: the last one never retires, and an
 * `ActiveAdminsChanged` names exactly the admins active once its own append's tenant events are in (they come first).
 */
function adminRule(e: DuffyEvent, position: bigint, before: number[], after: number[]): Violation[] {
  if (before.length > 0 && after.length === 0) {
    return [{ invariant: 'admin', message: `${e.type} of tenant ${(e.data as { tenantId?: number }).tenantId} left no active admin`, positions: [position] }];
  }
  if (e.type === 'ActiveAdminsChanged' && e.data.admins.join(',') !== after.join(',')) {
    return [{ invariant: 'admin', message: `ActiveAdminsChanged names admins [${e.data.admins.join(', ')}] while [${after.join(', ')}] are active`, positions: [position] }];
  }
  return [];
}

/** The key rule, before the event is folded: a key another tenant holds is never given (Basic auth could not tell them apart). */
function keyRule(world: ReturnType<typeof emptyWorld>, e: DuffyEvent, position: bigint): Violation[] {
  if (e.type !== 'TenantRegistered' && e.type !== 'TenantUpdated') return [];
  const digest = e.type === 'TenantRegistered' ? e.data.apiKeyDigest : e.data.changes.apiKeyDigest;
  const owner = digest === undefined ? undefined : world.tenantIdsByDigest.get(digest);
  if (owner === undefined || owner === e.data.tenantId) return [];
  return [{ invariant: 'key', message: `tenant ${e.data.tenantId} was given the API key tenant ${owner} holds`, positions: [position] }];
}

/**
 * The free rule, before the event is folded: a reservation takes only a free machine (the one definition, `isFree`):
 * never one out of service, retired, failed or with a playbook under way. A machine another session holds is
 * invariant 1's, reported there.
 */
function freeRule(world: ReturnType<typeof emptyWorld>, e: DuffyEvent, position: bigint): Violation[] {
  if (e.type !== 'MachineReserved') return [];
  const m = world.machines.get(e.data.machineId);
  if (!m || m.sessionId !== null || isFree(m)) return [];
  const why = isRetired(m) ? 'retired'
    : m.service !== 'in-service' ? `in ${m.service}`
    : m.job !== null ? `running its ${m.job.action} playbook`
    : m.state;
  return [{ invariant: 'free', message: `machine ${m.hostname} reserved for session ${e.data.sessionId} while ${why}`, positions: [position] }];
}

/**
 * The end rule, before the event is folded: a session is ended by its own tenant, an admin, or Duffy itself (the
 * actor `duffy`: an expiry, a failed hand-over, a stop), never by another tenant. (A forger writes any actor it
 * likes: this catches a path that let one tenant end another's session, not a careful rewrite.)
 */
function endRule(world: ReturnType<typeof emptyWorld>, recorded: RecordedEvent): Violation[] {
  const e = recorded as RecordedEvent & DuffyEvent;
  if (e.type !== 'SessionReleased') return [];
  const session = world.sessions.get(e.data.sessionId);
  const actor = typeof recorded.metadata.actor === 'string' ? recorded.metadata.actor : undefined;
  if (!session || actor === undefined || actor === DUFFY_ACTOR) return [];
  const actorId = world.tenantIdsByName.get(actor);
  if (actorId === session.tenantId || (actorId !== undefined && world.tenants.get(actorId)?.isAdmin)) return [];
  const owner = world.tenants.get(session.tenantId)?.name ?? `tenant ${session.tenantId}`;
  return [{ invariant: 'end', message: `session ${session.id} of ${owner} ended by ${actor}, neither its tenant nor an admin`, positions: [recorded.position] }];
}

/**
 * The lease rule, before the event is folded: but for an admin (the event's `actor`), an extension never takes a
 * lease past `tenantExpiryCeilingMs`: the later of its expiry before and its start plus the tenant's maximum lifetime then (a tenant's own setting, else the defaults recorded
 * last, else `fallback`: the configuration given to the replay, for a ledger written before Duffy recorded them).
 */
function leaseRule(world: ReturnType<typeof emptyWorld>, recorded: RecordedEvent, fallback: Defaults): Violation[] {
  const e = recorded as RecordedEvent & DuffyEvent;
  if (e.type !== 'SessionExtended') return [];
  const session = world.sessions.get(e.data.sessionId);
  const tenant = session && world.tenants.get(session.tenantId);
  const actor = typeof recorded.metadata.actor === 'string' ? recorded.metadata.actor : undefined;
  const actorId = actor === undefined ? undefined : world.tenantIdsByName.get(actor);
  // Only an admin may pass the maximum: an extension by anyone else, or by no one recorded, is held to it (Duffy
  // itself never extends a lease).
  if (!session || !tenant) return [];
  // An expiry no reader can read (Date.parse: NaN) judges nothing below; Duffy never writes one, for an admin neither.
  if (Number.isNaN(Date.parse(e.data.expiresAt))) {
    return [{ invariant: 'lease', message: `session ${session.id} extended by ${actor ?? 'no one recorded'} to ${JSON.stringify(e.data.expiresAt)?.slice(0, 80)}, which is no time: no lease Duffy gives ends at it`, positions: [recorded.position] }];
  }
  if (actorId !== undefined && world.tenants.get(actorId)?.isAdmin) return [];
  const defaults = world.defaults ?? fallback;
  const ceiling = tenantExpiryCeilingMs(session, tenant, defaults);
  if (!(Date.parse(e.data.expiresAt) > ceiling)) return [];
  return [{
    invariant: 'lease',
    message: `session ${session.id} extended by ${actor ?? 'no one recorded'} to ${e.data.expiresAt}, past its maximum lifetime of ${effective(tenant, defaults).sessionLifetimeMax} s (until ${new Date(ceiling).toISOString()})`,
    positions: [recorded.position],
  }];
}


/** Why a session ended, from its own events: done, expired, tenant-retired, failed, rejected; null while open. */
export function sessionEnds(events: readonly RecordedEvent[]): Map<number, string> {
  const ends = new Map<number, string>();
  for (const r of events) {
    const e = r as RecordedEvent & DuffyEvent;
    if (e.type === 'SessionReleased') ends.set(e.data.sessionId, e.data.reason);
    else if (e.type === 'SessionExpired') ends.set(e.data.sessionId, 'expired');
    else if (e.type === 'SessionFailed') ends.set(e.data.sessionId, 'failed');
    else if (e.type === 'SessionRejected') ends.set(e.data.sessionId, 'rejected');
  }
  return ends;
}

export interface Holding {
  hostname: string;
  sessionId: number;
  tenantId: number;
  tenant: string | undefined;
  from: string;
  until: string | null;
  ended: string | null;
}

/** Who held a machine at an instant: the reservation in force then, from the machine's own stream (see holdEnds). */
/**
 * The stream of the machine, session or tenant an auditor names, as Duffy tells them apart: host names as DNS compares
 * them, tenant names without case, session ids as the API reads them (`03` is 3). Asked in another spelling, the
 * answer was "no machine ... in this ledger" of a machine that is there.
 */
function subjectStream(events: readonly RecordedEvent[], kind: 'session' | 'machine' | 'tenant', key: string): { stream: string; key: string } {
  if (kind === 'session') {
    const id = idOf(key);
    if (id === undefined) throw new BadQuestionError(`a session id is a number (as \`duffy list\` shows it), got ${JSON.stringify(key.slice(0, 40))}`);
    return { stream: stream.session(id), key: String(id) };
  }
  const same = kind === 'machine' ? hostKey : tenantKey;
  const named = (name: string) => (kind === 'machine' ? stream.machine(name) : stream.tenant(name));
  const prefix = named('');
  const found = events.find((e) => e.stream === named(key)) ?? events.find((e) => e.stream.startsWith(prefix) && same(e.stream.slice(prefix.length)) === same(key));
  return found ? { stream: found.stream, key: found.stream.slice(prefix.length) } : { stream: named(key), key };
}

export function whoHad(events: readonly RecordedEvent[], asked: string, at: Date): Holding | null {
  const { stream: own, key: hostname } = subjectStream(events, 'machine', asked);
  const mine = events.filter((r) => r.stream === own);
  if (mine.length === 0) throw new NotFoundError(`no machine ${asked} in this ledger`);
  let current: { sessionId: number; tenantId: number; from: string } | null = null;
  let until: string | null = null;
  for (const recorded of mine) {
    const e = recorded as RecordedEvent & DuffyEvent;
    const when = Date.parse(String((e.data as { at?: string }).at ?? e.metadata.at));
    const start = holdStarts(e);
    const end = holdEnds(e);
    if (when <= at.getTime()) {
      if (start) current = { sessionId: start.sessionId, tenantId: start.tenantId, from: String(e.data.at) };
      if (end && current && end.sessionId === current.sessionId) current = null;
    } else if (current && end && end.sessionId === current.sessionId) {
      until = String(e.data.at);
      break;
    } else if (!current) break;
  }
  if (!current) return null;
  const tenant = events.find((e) => e.type === 'TenantRegistered' && e.data.tenantId === current!.tenantId)?.data.name as string | undefined;
  return { hostname, ...current, tenant, until, ended: sessionEnds(events).get(current.sessionId) ?? null };
}

/** Streams of their own that no other event names: their history is the stream itself. */
const SINGLE_STREAMS: readonly string[] = [stream.defaults, stream.pools, stream.admins, stream.apiKeys, stream.ids('tenant'), stream.ids('machine'), stream.restores, CHECKPOINT_STREAM];

/**
 * Every event about one session, machine or tenant: its own stream plus the events elsewhere that name it (a tenant's:
 * its sessions' too); or one of SINGLE_STREAMS (the tenant defaults and pools recorded at starts, the active admins,
 * the keys given, the id sequences, what restores undid, the signed checkpoints).
 */
export function history(events: RecordedEvent[], asked: string): RecordedEvent[] {
  if (SINGLE_STREAMS.includes(asked)) return events.filter((e) => e.stream === asked);
  // A machine's service stream is part of its story: asked by that name, the machine's whole history.
  const m = /^(session|machine|tenant)-(.+)$/.exec(asked.replace(/^service-/, 'machine-'));
  if (!m) throw new BadQuestionError(`history needs session-<id>, machine-<hostname> (or service-<hostname>), tenant-<name> or one of ${SINGLE_STREAMS.join(', ')}, got ${asked}`);
  const [, kind, said] = m as unknown as [string, 'session' | 'machine' | 'tenant', string];
  const { stream: subject, key } = subjectStream(events, kind, said);
  let tenantId: number | undefined;
  if (kind === 'tenant') tenantId = events.find((e) => e.type === 'TenantRegistered' && e.data.name === key)?.data.tenantId as number | undefined;
  if (!events.some((e) => e.stream === subject)) throw new NotFoundError(`no ${kind} ${said} in this ledger`);
  // The sessions whose story is told: the one asked, or every one the tenant requested.
  const sessions = new Set<string>(kind === 'session' ? [key] : []);
  // A machine released from a session is that session's until recycled: its release playbook and outcome carry no
  // session id, but belong to the session's story.
  const releasing = new Map<number, string>();
  const ofSessions = (e: RecordedEvent, d: { sessionId?: unknown; machineId?: number }) => {
    if (d.machineId !== undefined && (e.type === 'MachineReleased' || e.type === 'MachineReservationCancelled')) releasing.set(d.machineId, String(d.sessionId));
    const released = d.machineId !== undefined && (d.sessionId === null || d.sessionId === undefined) && sessions.has(releasing.get(d.machineId) ?? '');
    if (e.type === 'MachineRecycled' && d.machineId !== undefined) releasing.delete(d.machineId);
    return sessions.has(String(d.sessionId)) || released;
  };
  return events.filter((e) => {
    const d = e.data as { sessionId?: unknown; hostname?: unknown; tenantId?: unknown; machineId?: number };
    if (kind === 'tenant' && tenantId !== undefined && e.type === 'MachineRequested' && d.tenantId === tenantId) sessions.add(String(d.sessionId));
    const aboutSessions = kind !== 'machine' && ofSessions(e, d);
    if (e.stream === subject) return true;
    if (kind === 'machine') return d.hostname === key;
    if (kind === 'session') return aboutSessions;
    // A tenant's story: its own events, and its sessions' (their start, extensions, end, their machines' release).
    return (tenantId !== undefined && d.tenantId === tenantId) || aboutSessions;
  });
}

export function inWindow(e: RecordedEvent, from?: Date, to?: Date): boolean {
  const at = Date.parse(String((e.data as { at?: string }).at ?? e.metadata.at ?? ''));
  if (Number.isNaN(at)) return !from && !to;
  return (!from || at >= from.getTime()) && (!to || at < to.getTime());
}

/** One JSON line per event; bigints as strings. */
export function jsonLine(e: RecordedEvent): string {
  return JSON.stringify({ ...e, position: e.position.toString() });
}

/** One readable row per event: who, what, which session, tenant and machine, and why that session ended. */
export interface Row {
  time: string;
  position: string;
  event: string;
  session: string;
  tenant: string;
  machine: string;
  actor: string;
  ended: string;
  /** What the event says beyond who and what: a service change and its reason, an error, a count... */
  detail: string;
}

/** One short line of what an event says that the other columns do not (at most 80 characters). */
export function detailOf(e: RecordedEvent): string {
  const d = e.data as Record<string, unknown>;
  const run = d.run as { exitCode?: number; durationMs?: number; timedOut?: boolean } | undefined;
  const ran = run ? ` (exit ${run.exitCode}, ${run.durationMs} ms${run.timedOut ? ', timed out' : ''})` : '';
  const text = (() => {
    switch (e.type) {
      case 'MachineServiceChanged':
        return `${d.service}${d.reason ? `: ${d.reason}` : ''}`;
      case 'MachineHardwareSet':
        return `hardware ${JSON.stringify(d.hardware)}${d.reason ? `: ${d.reason}` : ''}`;
      case 'MachineQuarantined':
      case 'SessionRejected':
      case 'SessionReleased':
      case 'SessionFailed':
        return String(d.reason ?? '');
      case 'ProvisioningFailed':
      case 'EnvironmentFault':
      case 'PlaybookFailedInBatch':
        return `${d.action}: ${d.error}${ran}`;
      case 'PlaybookStarted':
        return String(d.action ?? '');
      case 'MachineRecycled':
        return `${d.policy} -> ${d.state}${ran}`;
      case 'QuotaClaimed':
      case 'QuotaReturned':
        return `${d.count} machine(s)`;
      case 'QueueSpaceClaimed':
        return `${d.count} machine(s) to wait for`;
      case 'RequestQueued':
        return `until ${d.waitUntil}: ${d.reason}`;
      case 'ReplacementReserved':
        return `machine(s) ${(d.machineIds as number[]).join(', ')}${d.reason ? ` in place of one whose hand-over failed: ${d.reason}` : ''}`;
      case 'SessionExtended':
        return `until ${d.expiresAt}`;
      case 'TenantUpdated':
        return Object.keys((d.changes as object) ?? {}).join(', ');
      case 'DefaultsSet':
        return `quota ${d.nodeQuota}, lifetime ${d.sessionLifetime} s, at most ${d.sessionLifetimeMax} s`;
      case 'ActiveAdminsChanged':
        return `admins ${(d.admins as number[]).join(', ')}`;
      // What the restore undid, as its own line said it (`history restores` showed the bare event).
      case 'LedgerRestored':
        return `after position ${d.sharedUpTo}: ${d.lostSessions} session(s) undone, ids to ${d.sessionIdsUpTo} kept, ${(d.machines as string[]).length} machine(s) out`;
      case 'CheckpointPublished':
        return `${d.size} events, root ${String(d.rootHash).slice(0, 16)}`;
      case 'PoolsConfigured':
        return (d.pools as Array<{ name: string; type: string; arch: string; platform: string }>).map((p) => `${p.name} ${p.type} ${p.arch} ${p.platform}`).join('; ');
      default:
        return run ? ran.trim() : '';
    }
  })();
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

export function rowsOf(all: readonly RecordedEvent[], shown: readonly RecordedEvent[] = all): Row[] {
  const tenants = new Map<number, string>();
  const machines = new Map<number, string>();
  const sessionTenant = new Map<number, number>();
  for (const e of all) {
    const d = e.data as { tenantId?: number; name?: string; machineId?: number; hostname?: string; sessionId?: number };
    if (e.type === 'TenantRegistered') tenants.set(d.tenantId!, d.name!);
    if (e.type === 'MachineRegistered') machines.set(d.machineId!, d.hostname!);
    if (e.type === 'MachineRequested') sessionTenant.set(d.sessionId!, d.tenantId!);
  }
  const ends = sessionEnds(all);
  return shown.map((e) => {
    const d = e.data as { tenantId?: number; name?: string; machineId?: number; hostname?: string; sessionId?: number | null; at?: string };
    const sessionId = typeof d.sessionId === 'number' ? d.sessionId : undefined;
    const tenantId = d.tenantId ?? (sessionId === undefined ? undefined : sessionTenant.get(sessionId));
    return {
      time: String(d.at ?? e.metadata.at ?? ''),
      position: e.position.toString(),
      event: e.type,
      session: sessionId === undefined ? '' : String(sessionId),
      tenant: d.name && e.type.startsWith('Tenant') ? d.name : tenantId === undefined ? '' : (tenants.get(tenantId) ?? `#${tenantId}`),
      machine: d.hostname ?? (d.machineId === undefined ? '' : (machines.get(d.machineId) ?? `#${d.machineId}`)),
      actor: String(e.metadata.actor ?? ''),
      ended: sessionId === undefined ? '' : (ends.get(sessionId) ?? 'open'),
      detail: detailOf(e),
    };
  });
}

/** The event without its playbook output tails (shown with --verbose only). */
export function withoutTails(e: RecordedEvent): RecordedEvent {
  const run = (e.data as { run?: { tail?: string } }).run;
  if (!run || run.tail === undefined) return e;
  const { tail: _tail, ...rest } = run;
  return { ...e, data: { ...e.data, run: rest } };
}

export interface FileProblem {
  position: string;
  where: string;
  problem: string;
}

/**
 * The writer's record of the ledger's head (`<ledger>.head`): null where there is none, a problem where it cannot be
 * read. It may lag a commit, never lead one: read it before the events, and a file read after holds its position.
 */
export function recordedHead(location: string): { position: bigint; chain: string } | null | FileProblem {
  try {
    return readHeadRecord(location);
  } catch (err) {
    return { position: '-', where: 'writer head', problem: `${headFileOf(location)} cannot be read (${(err as Error).message}): the writer's record was altered, or cut short by a power cut (a start writes it anew from the ledger)` };
  }
}

/**
 * The caveat of a verify without the writer's head record (`why`): past the events a checkpoint covers (`given`, the
 * auditor's; `signed`, the last sound one in the ledger, its size and last position), events deleted, or rewritten
 * with their chains recomputed, show nowhere.
 */
export function unguardedTail(why: string, covered: { given?: number; signed?: { size: number; position: bigint } } = {}): string {
  const { given, signed } = covered;
  if (given !== undefined && given >= (signed?.size ?? 0)) return `deletion or a rewrite, its chains recomputed, of events after the checkpoint's ${given} (${why})`;
  const ask = given === undefined ? '; give --checkpoint' : '';
  if (signed) return `deletion of the newest events or a rewrite, its chains recomputed, of any after position ${signed.position}, the last a signed checkpoint in the ledger covers (${why}${ask})`;
  return `deletion of the newest events or a rewrite of any event, its chains recomputed (${why}${ask})`;
}

/**
 * What the embedded ledger file shows beyond its events: the schema the store made (the append-only triggers, the
 * global chain column), the global chain over the hashes of `events`, and the writer's `head` record (read before
 * them). A writer may append while this reads: the chain is checked as far as `events` go, and rows past them wait
 * for the next run. `unchecked` names what could not be checked, so an OK never claims it.
 */
export async function checkLedgerFile(
  location: string,
  head: ReturnType<typeof recordedHead>,
  events: LedgerDigest,
  legacyThrough = 0n,
  /** What checkpoints cover (unguardedTail): changes among those events they show, of later ones nothing does. */
  covered?: Parameters<typeof unguardedTail>[1],
): Promise<{ problems: FileProblem[]; verified: string[]; unchecked: string[] }> {
  const { NO_CHAIN_COLUMN, counterProblems, headProblem, ledgerSchemaProblems, readCounter } = await import('../adapters/eventstore/sqlite-event-store.js');
  const problems: FileProblem[] = [];
  const verified: string[] = [];
  const unchecked: string[] = [];
  const schemaProblem = (problem: string) => problems.push({ position: '-', where: 'schema', problem });
  const db = new Database(location, { readonly: true, fileMustExist: true });
  try {
    const schema = ledgerSchemaProblems(db);
    // A ledger of 2026-11-26 throughout, never written since (no writer's head): it had no global chain yet.
    const legacy = !schema.chainColumn && head === null && events.length > 0 && legacyThrough === events.lastPosition;
    if (legacy) unchecked.push("the global chain (a ledger of the Duffy of 2026-11-26 has none: today's Duffy adds it at its next start on it)");
    schema.problems.filter((p) => !(legacy && p === NO_CHAIN_COLUMN)).forEach(schemaProblem);
    const counter = readCounter(db);
    if (schema.chainColumn) {
      // Links and events both in position order: the event hash at a link's position is found by walking on.
      let next = 0;
      const hashAt = (position: bigint): string | undefined => {
        while (next < events.length && events.position(next) < position) next += 1;
        return next < events.length && events.position(next) === position ? events.hash(next) : undefined;
      };
      const links = db.prepare('SELECT position, chain FROM events WHERE position <= ? ORDER BY position').safeIntegers(true).iterate(events.lastPosition) as Iterable<{ position: bigint; chain: string | null }>;
      const g = verifyGlobalChain(links, hashAt);
      if (g.broken) problems.push({ position: String(g.broken.position), where: 'global chain', problem: g.broken.problem });
      else verified.push(`${g.checked} links of the global chain`);
    }
    const last = (db.prepare('SELECT max(position) FROM events').pluck().safeIntegers(true).get() as bigint | null) ?? 0n;
    for (const problem of counterProblems(counter, last)) problems.push({ position: counter === undefined ? '-' : String(counter), where: 'sqlite_sequence', problem });
    if (head === null) unchecked.push(unguardedTail(`no writer's head record ${location}.head`, covered));
    else if ('problem' in head) problems.push(head);
    else {
      const at = db.prepare(`SELECT ${schema.chainColumn ? 'chain' : 'NULL'} FROM events WHERE position = ?`).pluck().safeIntegers(true);
      const chainAt = (position: bigint): string | null | undefined => {
        const row = at.get(position) as string | null | undefined;
        return row === undefined ? undefined : (row ?? null);
      };
      const edit = headProblem(head, last, chainAt);
      if (edit) problems.push({ position: String(head.position), where: 'writer head', problem: edit });
      else if (schema.chainColumn) verified.push(`the writer's head at position ${head.position}`);
    }
  } finally {
    db.close();
  }
  return { problems, verified, unchecked };
}

/**
 * Rows the writer cannot have written: data or metadata that is not JSON, not a JSON object, or not the text the
 * writer writes for what it holds (`JSON.stringify` of it: a duplicated key, added spaces or escapes change what a
 * SQL reader sees, not what the hashes cover). Their positions, so `verify` names them. At most `limit`.
 */
export function rowProblems(location: string, limit = 20): FileProblem[] {
  const db = new Database(location, { readonly: true, fileMustExist: true });
  const out: FileProblem[] = [];
  try {
    for (const [position, stream, revision, data, metadata] of db.prepare('SELECT position, stream, revision, data, metadata FROM events ORDER BY position').raw(true).iterate() as Iterable<[number, string, number, unknown, unknown]>) {
      for (const [column, text] of [['data', data], ['metadata', metadata]] as const) {
        const problem = storedJsonProblem(text);
        if (problem) out.push({ position: String(position), where: `${stream}@${revision}`, problem: `${column} ${problem}: the row was rewritten` });
      }
      if (out.length >= limit) break;
    }
  } finally {
    db.close();
  }
  return out;
}

function storedJsonProblem(text: unknown): string | null {
  if (typeof text !== 'string') return `is not text (${text === null ? 'NULL' : typeof text})`;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return `is not JSON (${(err as Error).message})`;
  }
  if (!isRecord(value)) return `is not a JSON object (${text.slice(0, 40)})`;
  return JSON.stringify(value) === text ? null : 'is not the text Duffy writes for what it holds (a key twice, spaces or escapes added)';
}
