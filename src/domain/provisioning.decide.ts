import type { Write } from './decide.js';
import { decideReserve, effective, freeMachines, recycled } from './decide.js';
import { type Defaults, type DuffyEvent, type PlaybookAction, type PlaybookRun, type RecyclePolicy, machinesAsked, stream } from './events.js';
import type { Machine, Session, World } from './world.js';
import { type PoolProfile, lessStressed, planAllocation } from './policy.js';

/** What provisioning decisions need of a pool's configuration (src/config validates the whole of it). */
export interface PoolPlaybookPolicy {
  contextualize: boolean;
  'collect-artifacts': boolean;
  'health-check-interval': number;
  'quarantine-after': number;
  'fill-level': number;
  'release-policy': RecyclePolicy;
}

/** A pool that reuses machines and neither puts keys on them nor collects artifacts: a release leaves nothing to undo. */
export const needsNoReleasePlaybook = (pool: PoolPlaybookPolicy): boolean =>
  pool['release-policy'] === 'reuse' && !pool.contextualize && !pool['collect-artifacts'];

/** A machine being released whose files are still to be collected for the session it is released from. */
export const awaitsCollection = (m: Machine, pool: Pick<PoolPlaybookPolicy, 'collect-artifacts'>): boolean =>
  pool['collect-artifacts'] && m.state === 'deprovisioning' && m.untouchedReturn === null && m.releasingSession !== null && m.artifactsCollectedFor !== m.releasingSession;

/** Whether the release of `sessionId` may still add artifacts (a client waits for them rather than find none). */
export function collectingFor(world: World, sessionId: number, pool: (name: string) => Pick<PoolPlaybookPolicy, 'collect-artifacts'> | undefined): boolean {
  const s = world.sessions.get(sessionId);
  return (s?.machineIds ?? []).some((id) => {
    const m = world.machines.get(id);
    const p = m && pool(m.pool);
    return m !== undefined && p !== undefined && m.releasingSession === sessionId && awaitsCollection(m, p);
  });
}

/**
 * The provisioning process manager's decisions, pure: which playbook runs are due (from the World alone, so a
 * restart resumes exactly where the ledger says work stopped), and which events record a run's outcome.
 */
export interface Job {
  pool: string;
  action: PlaybookAction;
  sessionId: number | null;
  machineIds: number[];
}

export interface JobContext {
  pools: (name: string) => PoolPlaybookPolicy | undefined;
  now: number;
  /** Machines this process is running a playbook on right now. */
  runningHere: (machineId: number) => boolean;
  /** This process; with `soleInstance`, nobody else can hold a live claim (a previous run's claims died with it). */
  instance: string;
  soleInstance: boolean;
}

export interface Work {
  /** Playbook runs, one per pool, action and session. */
  jobs: Job[];
  /** Machines released before they were ever handed over: back to the pool with no playbook. */
  returns: Write[];
}

/**
 * A claim is live while its deadline has not passed; a dead instance's claims lapse. This process's own claim is live
 * only while it runs here: one it no longer runs lost its outcome (the ledger refused the write: a full disk), and
 * would otherwise hold its machine, and a waiting hand-over, until the deadline.
 */
function claimed(m: Machine, ctx: JobContext): boolean {
  if (ctx.runningHere(m.id)) return true;
  if (m.job === null || ctx.soleInstance || m.job.instance === ctx.instance) return false;
  return Date.parse(m.job.deadline) > ctx.now;
}

export function dueWork(world: World, ctx: JobContext): Work {
  const groups = new Map<string, Job>();
  const returns: Write[] = [];
  const at = new Date(ctx.now).toISOString();
  const add = (m: Machine, action: PlaybookAction, sessionId: number | null) => {
    const key = `${m.pool}|${action}|${sessionId}${m.runAlone ? `|${m.id}` : ''}`;
    const job = groups.get(key) ?? { pool: m.pool, action, sessionId, machineIds: [] };
    job.machineIds.push(m.id);
    groups.set(key, job);
  };
  const readyOrComing = new Map(world.work.readyIdle);
  const unused = new Map<string, Machine[]>();
  for (const m of world.work.machines) {
    const pool = ctx.pools(m.pool);
    if (!pool || m.retiredAt !== null) continue;
    // Out of service (maintenance, retired): no fill level, no health check; a held one still gets its hand-over and release.
    const inService = m.service === 'in-service';
    if (inService && m.sessionId === null && (m.state === 'ready' || m.state === 'provisioning')) readyOrComing.set(m.pool, (readyOrComing.get(m.pool) ?? 0) + 1);
    if (claimed(m, ctx)) continue;
    switch (m.state) {
      case 'unused':
        if (m.sessionId === null && inService) unused.set(m.pool, [...(unused.get(m.pool) ?? []), m]);
        break;
      case 'provisioning':
        add(m, 'provision', m.sessionId);
        break;
      case 'contextualizing':
        if (m.sessionId !== null) add(m, 'contextualize', m.sessionId);
        break;
      case 'deprovisioning':
        if (m.untouchedReturn !== null) {
          returns.push({ stream: stream.machine(m.hostname), expected: m.revision, events: [{ type: 'MachineRecycled', data: { machineId: m.id, policy: pool['release-policy'], state: m.untouchedReturn, untouched: true, at } }] });
        } else if (awaitsCollection(m, pool)) {
          add(m, 'collect_artifacts', m.releasingSession);
        } else if (!needsNoReleasePlaybook(pool)) {
          add(m, 'release', m.releasingSession);
        }
        break;
      case 'failed': {
        // The first check comes one interval after the quarantine (or registration), not at once: a flaky machine stays out a while.
        const since = Math.max(...[m.lastHealthCheckAt, m.quarantine?.at, m.createdAt].map((t) => Date.parse(t ?? '') || 0));
        if (inService && ctx.now - since >= pool['health-check-interval'] * 1000) add(m, 'health_check', null);
        break;
      }
      default:
        break;
    }
  }
  // Fill level: keep that many machines ready (or on their way), provisioning the least-worn unused ones.
  for (const [name, candidates] of unused) {
    const missing = (ctx.pools(name)?.['fill-level'] ?? 0) - (readyOrComing.get(name) ?? 0);
    for (const m of candidates.sort(lessStressed).slice(0, Math.max(0, missing))) add(m, 'provision', null);
  }
  return { jobs: [...groups.values()].sort(moreUrgent), returns };
}

/**
 * The order runs start in when more are due than may run at once: hand-overs first (a client waits), oldest session
 * first; then what frees machines (artifacts, releases), oldest session first; then the fill level; health checks
 * last. In machine order, a busy farm's work on its low-numbered machines kept the others' hand-overs waiting.
 */
const RANK: Record<PlaybookAction, number> = { provision: 2, contextualize: 2, decontextualize: 1, collect_artifacts: 1, release: 1, health_check: 3 };
const rank = (job: Job) => (isHandover(job) ? 0 : RANK[job.action]);
const moreUrgent = (a: Job, b: Job) => rank(a) - rank(b) || (a.sessionId ?? Number.MAX_SAFE_INTEGER) - (b.sessionId ?? Number.MAX_SAFE_INTEGER);

/** The playbook runs alone (callers that do not write the untouched returns). */
export const dueJobs = (world: World, ctx: JobContext): Job[] => dueWork(world, ctx).jobs;

/** A run a client is waiting for: the hand-over of a session's machine. */
export const isHandover = (job: Pick<Job, 'action' | 'sessionId'>) => job.sessionId !== null && (job.action === 'provision' || job.action === 'contextualize');

/**
 * Whether `job` (due work comes hand-overs first) may start beside the runs under way, `max` at most: each kind leaves
 * one run to the other, so a hand-over never waits for `max` releases, nor a release (a machine out of use, perhaps
 * with the last tenant's key on it) for hand-overs that keep coming. `due`: the work due now, `job` among it.
 */
export function mayStart(job: Job, running: Iterable<Job>, due: readonly Job[], max: number): boolean {
  const handover = isHandover(job);
  let all = 0;
  let sameKind = 0;
  for (const r of running) {
    all += 1;
    if (isHandover(r) === handover) sameKind += 1;
  }
  if (all >= max) return false;
  const otherKindWaits = handover ? due.some((j) => !isHandover(j)) : true;
  return sameKind < max - 1 || !otherKindWaits;
}

export function decideClaim(m: Machine, action: PlaybookAction, sessionId: number | null, instance: string, timeoutMs: number, now: number): Write {
  return {
    stream: stream.machine(m.hostname),
    expected: m.revision,
    events: [{ type: 'PlaybookStarted', data: { machineId: m.id, action, sessionId, instance, deadline: new Date(now + timeoutMs + 60_000).toISOString(), at: new Date(now).toISOString() } }],
  };
}

export interface NodeResult {
  ok: boolean;
  ipaddr: string | null;
  error?: string;
  files?: string[];
  /** What the run said of this node beyond ok/failed (collect_artifacts: what its limit left out). */
  note?: string;
  /** Failed with its whole run, which said nothing of this node (no `duffy_out` for it). */
  unattributed?: boolean;
}

/**
 * The most characters of file names one run's collection records, shared by its machines: the ledger and the session
 * keep them for good, a machine names its files (up to the pool's file count, each up to PATH_MAX: 40 MB), and the
 * run's outcomes are one append, kept under 1 MiB (KurrentDB's bound on an append before 25.1). The directories have them all.
 */
export const ARTIFACT_NAMES_MAX = 512 * 1024;

/** The first names that fit `budget` characters (with their JSON quotes and comma). */
function namedWithin(files: readonly string[], budget: number): string[] {
  let left = budget;
  const out: string[] = [];
  for (const f of files) {
    left -= f.length + 3;
    if (left < 0) break;
    out.push(f);
  }
  return out;
}

/** The events that record one machine's share of a run. Written at the revision the claim produced. */
export function decideRunOutcome(
  m: Machine,
  pool: PoolPlaybookPolicy,
  job: Job,
  result: NodeResult,
  run: PlaybookRun,
  expected: number,
  now: string,
  /** Machines in the run: a timeout of several, or a failure it did not attribute, is nobody's in particular. */
  machines = 1,
): Write {
  const events: DuffyEvent[] = [];
  const machineId = m.id;
  const nobodysInParticular = !result.ok && machines > 1 && job.action !== 'collect_artifacts' && (run.timedOut || result.unattributed === true);
  if (nobodysInParticular && run.timedOut) {
    events.push({ type: 'PlaybookTimedOutInBatch', data: { machineId, sessionId: job.sessionId, action: job.action, machines, run, at: now } });
  } else if (nobodysInParticular) {
    events.push({ type: 'PlaybookFailedInBatch', data: { machineId, sessionId: job.sessionId, action: job.action, machines, error: result.error ?? 'failed', run, at: now } });
  } else if (job.action === 'collect_artifacts') {
    // Artifacts are best effort: a failure is recorded and the release goes on.
    const budget = Math.floor(ARTIFACT_NAMES_MAX / Math.max(1, machines));
    const files = result.ok ? namedWithin(result.files ?? [], budget) : [];
    const unnamed = result.ok ? (result.files?.length ?? 0) - files.length : 0;
    // `leftOut`: what the limit kept out (the tenant is told); `unnamed`: collected, listed by the directory only.
    const leftOut = result.ok && result.note ? { leftOut: result.note } : {};
    const notNamed = unnamed > 0 ? { unnamed } : {};
    events.push({ type: 'ArtifactsCollected', data: { machineId, sessionId: job.sessionId, files, error: result.ok ? null : (result.error ?? 'failed'), ...leftOut, ...notNamed, run, at: now } });
  } else if (result.ok) {
    if (job.action === 'provision') events.push({ type: 'MachineProvisioned', data: { machineId, sessionId: m.sessionId, ipaddr: result.ipaddr, run, at: now } });
    else if (job.action === 'contextualize') events.push({ type: 'MachineContextualized', data: { machineId, sessionId: job.sessionId!, run, at: now } });
    else if (job.action === 'health_check') events.push({ type: 'MachineReturnedToService', data: { machineId, run, at: now } });
    else events.push(recycled(m, pool['release-policy'], now, run));
  } else {
    const error = result.error ?? 'failed';
    events.push({ type: 'ProvisioningFailed', data: { machineId, sessionId: job.sessionId, action: job.action, error, run, at: now } });
    // A failed health check leaves a quarantined machine where it is, until the next check.
    if (job.action !== 'health_check' && m.failures + 1 >= pool['quarantine-after']) {
      events.push({ type: 'MachineQuarantined', data: { machineId, reason: `${m.failures + 1} failures in a row, last: ${job.action}: ${error}`, at: now } });
    }
  }
  return { stream: stream.machine(m.hostname), expected, events };
}

/** A run that failed on Duffy's side: the claim ends with the reason, the machine's counters stay as they were. */
export function decideEnvironmentFault(m: Machine, job: Job, fault: { reason: string; spawned: boolean }, run: PlaybookRun, expected: number, now: string): Write {
  return {
    stream: stream.machine(m.hostname),
    expected,
    events: [{ type: 'EnvironmentFault', data: { machineId: m.id, sessionId: job.sessionId, action: job.action, error: fault.reason, spawned: fault.spawned, run, at: now } }],
  };
}

/** How many machines these sessions hold now. */
function machinesHeld(world: World, sessionIds: Iterable<number>): number {
  let n = 0;
  for (const id of sessionIds) for (const m of world.sessions.get(id)?.machineIds ?? []) if (world.machines.get(m)?.sessionId === id) n += 1;
  return n;
}

/** Hand-overs a session may see fail beyond one per machine it asked for, before it fails itself. */
export const EXTRA_HANDOVER_TRIES = 2;

/**
 * A session still being handed over that lost a machine (its provisioning or contextualization failed):
 * reserve a replacement from the same spec, or fail the session when none can be had.
 */
export function decideReplacement(
  world: World,
  session: Session,
  profiles: readonly PoolProfile[],
  defaults: Defaults,
  contextualize: (pool: string) => boolean,
  busy: (machineId: number) => boolean,
  now: string,
  /** What the lost machine's hand-over failed with, when known: the answer names it. */
  cause?: string,
): Write[] | { fail: string } {
  const tenant = world.tenants.get(session.tenantId);
  if (!tenant || session.status !== 'active') return [];
  const held = session.machineIds.map((id) => world.machines.get(id)!).filter((m) => m && m.sessionId === session.id);
  const heldPools = held.map((m) => m.pool);
  const missing = session.specs
    .map((spec) => {
      // Attribute held machines to the specs they satisfy, in order.
      let have = 0;
      for (let i = heldPools.length - 1; i >= 0 && have < spec.quantity; i--) {
        const p = profiles.find((x) => x.name === heldPools[i]);
        if (p && (spec.pool ? p.name === spec.pool : (!spec.type || p.type === spec.type) && (!spec.arch || p.arch === spec.arch) && (!spec.platform || p.platform === spec.platform))) {
          heldPools.splice(i, 1);
          have += 1;
        }
      }
      return { ...spec, quantity: spec.quantity - have };
    })
    .filter((s) => s.quantity > 0);
  if (missing.length === 0) return [];
  // A replacement is a new reservation: within the tenant's quota as it is now (an admin may have lowered it since the
  // request), counting the machines the tenant holds.
  const quota = effective(tenant, defaults).nodeQuota;
  const holding = machinesHeld(world, tenant.claims.keys());
  const needed = machinesAsked(missing);
  if (holding + needed > quota) {
    return { fail: `no replacement for a machine whose hand-over failed${cause ? ` (${cause})` : ''}: quota exceeded: tenant ${tenant.name} holds ${holding} of ${quota} nodes and the replacement needs ${needed} more` };
  }
  // A machine that failed for this session is not tried for it again, and a session stops replacing after a few
  // failures: a broken playbook would otherwise go through (and quarantine) a whole pool for one request.
  const lost = new Set(session.lostMachineIds ?? []);
  const tries = machinesAsked(session.specs) + EXTRA_HANDOVER_TRIES;
  if (lost.size >= tries) {
    return { fail: `no replacement for a machine whose hand-over failed${cause ? ` (${cause})` : ''}: ${lost.size} hand-overs failed for this session, as many as it tries (the machines asked for + ${EXTRA_HANDOVER_TRIES}); is the pool's playbook broken?` };
  }
  const plan = planAllocation({ specs: missing, pools: profiles, tenantPlatform: tenant.platform, free: (pool) => freeMachines(world, pool, (id) => busy(id) || lost.has(id)) });
  if (!plan.ok) return { fail: `no replacement for a machine whose hand-over failed${cause ? ` (${cause})` : ''}: ${plan.reason}` };
  return [
    ...plan.picks.map((p) => decideReserve(p, session.id, tenant.id, contextualize(p.machine.pool), now)),
    {
      stream: stream.session(session.id),
      expected: session.revision,
      events: [{ type: 'ReplacementReserved', data: { sessionId: session.id, machineIds: plan.picks.map((p) => p.machine.id), ...(cause ? { reason: cause } : {}), at: now } }],
    },
  ];
}
