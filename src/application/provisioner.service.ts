import { machinesAsked } from '../domain/events.js';
import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { Command, CommandHandler, type ICommand, type ICommandHandler, type IEvent, Saga, ofType } from '@nestjs/cqrs';
import { type Observable, asapScheduler, auditTime, map } from 'rxjs';
import { randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { Catalog } from './catalog.js';
import { LedgerEvent, Ledger } from './ledger.service.js';
import { SessionLifecycle, metaFor } from './session-lifecycle.js';
import { Metrics } from '../adapters/metrics.js';
import { FaultLog } from './ports/storage-fault.port.js';
import { PLAYBOOK_RUNNER, type DuffyIn, type EnvironmentFault, type PlaybookRunner, type RunResult, playbookFile } from '../adapters/ansible-runner.js';
import { type Job, decideClaim, decideEnvironmentFault, decideReplacement, decideRunOutcome, dueWork, isHandover, mayStart } from '../domain/provisioning.decide.js';

/** Playbook runs at once: Ansible is CPU-heavy and a run already batches the hosts of a pool. */
const MAX_PARALLEL_RUNS = 4;
/** After an environment fault, background work waits this long before one run tries again; doubled up to the max. */
const RETRY_FIRST_MS = 5_000;
const RETRY_MAX_MS = 300_000;
/** After a run that failed on Duffy's side (the ledger refused its claim or outcome: a full disk), no new run for this long. */
const PAUSE_AFTER_ERROR_MS = 1_000;
/** The key of a fault of Duffy's environment as a whole (no Ansible, a full disk); others by playbook file or machine. */
const ANY_RUN = '*';
const machineKey = (id: number) => `machine ${id}`;

interface Fault {
  reason: string;
  since: string;
  retryAt: number;
  backoffMs: number;
  /** What it holds back, for /health: a playbook file or machines; none for the environment as a whole. */
  subject?: string;
  /** A broken playbook file's version when the failed run began (fileVersion): its fault holds until a run works or the file changes. */
  fileVersion?: number;
  /** A broken playbook no work of which is due (a failed hand-over's machine went back to the pool). */
  idle?: boolean;
}

const describeFault = (f: Fault) => (f.subject && !f.reason.includes(f.subject) ? `${f.subject}: ${f.reason}` : f.reason);

/** A file's modification time, -1 when it is not there: whether an operator has changed it since. */
const fileVersion = (file: string) => statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? -1;

/**
 * The process manager that turns ledger state into playbook runs and their outcomes back into events.
 * Work is found from the World (not from a queue), and claimed with a PlaybookStarted at the machine's
 * revision before anything is spawned: after a crash, a lapsed claim is simply taken again.
 */
@Injectable()
export class Provisioner implements OnApplicationShutdown {
  readonly instance = randomUUID();
  private readonly running = new Set<number>();
  private readonly runningJobs = new Set<Job>();
  private runs = 0;
  private scheduled = false;
  private pausedUntil = 0;
  private stopped = false;
  private timer?: NodeJS.Timeout;
  private readonly inProgress = new Set<Promise<void>>();
  private replacing?: Promise<void>;
  private replaceAgain = false;
  private readonly log = new Logger('Provisioner');
  /** A full disk fails every pass and run alike: said once per interval. */
  private readonly faultLog = new FaultLog(this.log);
  /**
   * Set while Duffy's own environment fails runs (no Ansible...): the machines are not to blame. A broken playbook
   * file holds back only its own runs, a killed run only its machines': one pool's typo, or one machine's collect
   * that the OOM killer takes each time, must not stall every other pool's releases behind its probes.
   */
  private readonly faults = new Map<string, Fault>();
  /** Why a session's machine last failed its hand-over, so a failed replacement names the cause. */
  private readonly lostBecause = new Map<number, string>();

  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
    private readonly sessions: SessionLifecycle,
    @Inject(PLAYBOOK_RUNNER) private readonly runner: PlaybookRunner,
    private readonly metrics: Metrics,
  ) {}

  /**
   * Playbooks a killed predecessor on this data directory left running would go on changing machines Duffy now
   * gives to others (a hand-over's key put back after the release): killed first. One writer per embedded ledger
   * makes them surely a predecessor's; their claims are void, and the work they did is done again.
   */
  async reapLeftovers(): Promise<void> {
    if (!this.ledger.store.singleWriter || !this.runner.reap) return;
    const reaped = await this.runner.reap(this.catalog.settings.dataDir);
    if (reaped.length > 0) this.log.warn(`killed ${reaped.length} playbook run(s) a previous process left running, their work to be done again: ${reaped.join('; ')}`);
  }

  start(intervalMs = 2_000): void {
    this.timer = setInterval(() => this.poke(), intervalMs);
    this.timer.unref();
    this.poke();
  }

  /** Look for work soon; many events in one tick cause one look. */
  poke(): void {
    if (this.scheduled || this.stopped || !this.timer) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.pass().catch((err) => this.faultLog.failed(`provisioning pass failed: ${String(err)}`, err));
    });
  }

  /** The fault of the environment as a whole (Ansible gone) that holds every run back, if any: /health is down. */
  get environmentFault(): { reason: string; since: string } | null {
    const fault = this.faults.get(ANY_RUN);
    return fault ? { reason: describeFault(fault), since: fault.since } : null;
  }

  /**
   * Faults that hold back only some work (a pool's broken playbook file, a machine whose runs are killed), each named
   * for /health, which stays up: one pool's file or one machine must not take Duffy out of a load balancer.
   */
  get scopedFaults(): string[] {
    return [...this.faults.entries()]
      .filter(([key]) => key !== ANY_RUN)
      .map(([, f]) => `${describeFault(f)} (runs failing since ${f.since}; ${f.idle ? 'no work of it is due; until the file changes or a run of it works' : 'its work waits, probed with back-off'})`);
  }

  private playbookOf(job: Job): string {
    return playbookFile(job.action, this.catalog.pool(job.pool)?.playbooks?.[job.action]);
  }

  /** Whether a fault holds this job back now; while one does, a run now and then goes as its probe. */
  private heldBack(job: Job, now: number): boolean {
    // A hand-over (a client waits) still tries.
    if (isHandover(job)) return false;
    const faults = [ANY_RUN, this.playbookOf(job), ...job.machineIds.map(machineKey)].flatMap((k) => this.faults.get(k) ?? []);
    if (faults.length === 0) return false;
    if (faults.some((f) => now < f.retryAt)) return true;
    for (const f of faults) {
      f.retryAt = now + f.backoffMs;
      f.backoffMs = Math.min(RETRY_MAX_MS, f.backoffMs * 2);
    }
    return false;
  }

  private async pass(): Promise<void> {
    await this.replaceLostMachines();
    const now = this.ledger.clock.nowMs();
    const work = dueWork(this.ledger.world, {
      pools: (n) => this.catalog.pool(n),
      now,
      runningHere: (id) => this.running.has(id),
      instance: this.instance,
      soleInstance: this.ledger.store.singleWriter,
    });
    if (work.returns.length > 0) await this.ledger.commit(work.returns, metaFor(null, { process: 'provisioning', reason: 'never handed over' }));
    this.forgetIdleFaults(work.jobs);
    const due = work.jobs;
    for (const job of due) {
      // A hand-over is never held back by a fault, so without this a ledger that refuses every write was asked
      // again at once, hundreds of times a second, until it took one.
      if (this.runs >= MAX_PARALLEL_RUNS || this.stopped || Date.now() < this.pausedUntil) return;
      if (!mayStart(job, this.runningJobs, due, MAX_PARALLEL_RUNS)) continue;
      if (this.heldBack(job, now)) continue;
      job.machineIds.forEach((id) => this.running.add(id));
      this.runningJobs.add(job);
      this.runs += 1;
      const work = this.execute(job)
        .catch((err) => {
          this.pausedUntil = Date.now() + PAUSE_AFTER_ERROR_MS;
          this.faultLog.failed(`${job.action} on ${job.pool} failed: ${String(err)}`, err);
        })
        .finally(() => {
          job.machineIds.forEach((id) => this.running.delete(id));
          this.runningJobs.delete(job);
          this.runs -= 1;
          this.inProgress.delete(work);
          this.poke();
        });
      this.inProgress.add(work);
    }
  }

  /**
   * A fault of machines whose work is neither due nor under way (the machine put in maintenance, its work done by
   * another instance) holds nothing back any more: forgotten, or /health would say so for good. A broken playbook
   * stays broken when no work is due (a failed hand-over's machine went back to the pool): its fault goes when its
   * file changes (the next run tells), or a run of it works.
   */
  private forgetIdleFaults(due: Job[]): void {
    if (this.faults.size === 0) return;
    const live = new Set([...due, ...this.runningJobs].flatMap((j) => [this.playbookOf(j), ...j.machineIds.map(machineKey)]));
    for (const [key, fault] of this.faults) {
      fault.idle = false;
      if (key === ANY_RUN || live.has(key)) continue;
      if (fault.fileVersion !== undefined && fileVersion(key) === fault.fileVersion) fault.idle = true;
      else this.faults.delete(key);
    }
  }

  private async execute(job: Job): Promise<void> {
    const pool = this.catalog.pool(job.pool)!;
    const timeoutMs = pool['playbook-timeout'] * 1000;
    const meta = metaFor(null, { process: 'provisioning' });
    const world = this.ledger.world;
    const machines = job.machineIds.map((id) => world.machines.get(id)!);
    // Claim first: only machines whose claim landed get a playbook, so no two instances run one.
    const claims = await this.ledger.commit(machines.map((m) => decideClaim(m, job.action, job.sessionId, this.instance, timeoutMs, this.ledger.clock.nowMs())), meta);
    const claimed = machines.flatMap((m, i) => {
      const c = claims[i];
      return c.ok ? [{ machine: m, revision: c.result.nextExpectedRevisions[0] }] : [];
    });
    if (claimed.length === 0 || this.stopped) return;
    const session = job.sessionId === null ? undefined : world.sessions.get(job.sessionId);
    const tenant = session ? world.tenants.get(session.tenantId) : undefined;
    const artifactsDir = session ? this.catalog.artifactsDir(session.id) : undefined;
    const input: DuffyIn = {
      action: job.action,
      pool: { name: pool.name, type: pool.type, driver: pool.driver, arch: pool.arch, platform: pool.platform, vars: pool.vars ?? {} },
      session: session && tenant ? { id: session.id, tenant: tenant.name, ssh_key: tenant.sshKey } : null,
      ...(job.action === 'release' ? { policy: pool['release-policy'] } : {}),
      nodes: claimed.map(({ machine: m }) => ({ id: m.id, hostname: m.hostname, ipaddr: m.ipaddr, data: m.data })),
      data_dir: this.catalog.settings.dataDir,
      ...(job.action === 'collect_artifacts' && artifactsDir
        ? { artifacts_dir: artifactsDir, artifacts_limit: { bytes: pool['artifacts-max-mb'] * 1024 * 1024, files: pool['artifacts-max-files'] } }
        : {}),
    };
    const playbook = this.playbookOf(job);
    const ran = this.metrics.runStarted(job.action);
    // Taken before the run: a file mended while it ran is a change the fault must not take for its own version.
    const version = fileVersion(playbook);
    const result = await this.runner.run(input, { timeoutMs, playbook }).finally(ran);
    // Stopped under way: nothing the machines did or failed to do; the next process does the claimed work again.
    if (this.stopped) return;
    if (result.fault) return this.onEnvironmentFault(job, playbook, claimed, result as RunResult & { fault: EnvironmentFault }, version);
    // A run that works ends a fault of the environment, its own playbook's and its machines'.
    for (const key of [ANY_RUN, playbook, ...claimed.map(({ machine }) => machineKey(machine.id))]) {
      const over = this.faults.get(key);
      if (over) this.log.log(`${job.action} ran again: the environment fault "${over.reason}" is over`);
      this.faults.delete(key);
    }
    const { run, nodes } = result;
    // The failed machines by name with their errors: an operator reading the log need not go to the ledger for them.
    const failures = [...nodes].filter(([, n]) => !n.ok).map(([host, n]) => `${host}: ${n.error ?? 'failed'}`);
    const line = `${job.action} ${pool.name} [${claimed.map((c) => c.machine.hostname).join(', ')}]: exit ${run.exitCode}${run.timedOut ? ' (timed out)' : ''} in ${run.durationMs} ms${failures.length > 0 ? `; failed ${failures.join('; ').slice(0, 1000)}` : ''}`;
    this.metrics.playbook.observe({ action: job.action, outcome: failures.length === 0 ? 'ok' : 'failed' }, run.durationMs / 1000);
    if (failures.length > 0) this.metrics.provisioningFailures.inc({ action: job.action, pool: pool.name }, failures.length);
    // A run that failed a machine is worth a warning: one filtering for warnings sees the timeouts and failures.
    if (failures.length > 0 || run.timedOut) this.log.warn(line);
    else this.log.log(line);
    const now = this.ledger.clock.now();
    const outcomes = await Promise.all(
      claimed.map(async ({ machine, revision }) => {
        const result = nodes.get(machine.hostname)!;
        const files = job.action === 'collect_artifacts' && result.ok && artifactsDir ? await listFiles(join(artifactsDir, machine.hostname), this.catalog.settings.dataDir) : undefined;
        return decideRunOutcome(machine, pool, job, { ...result, files }, run, revision, now, claimed.length);
      }),
    );
    await this.ledger.commit(outcomes, meta);
    // A machine taken out of service is what on-call must hear of, not only a level on /metrics.
    for (const e of outcomes.flatMap((w) => w.events)) {
      if (e.type === 'MachineQuarantined') this.log.warn(`quarantined ${this.ledger.world.machines.get(e.data.machineId)?.hostname ?? `machine ${e.data.machineId}`} (pool ${pool.name}): ${e.data.reason}`);
    }
    if (isHandover(job)) {
      const lost = claimed.find(({ machine }) => !nodes.get(machine.hostname)!.ok);
      if (lost) this.lostBecause.set(job.sessionId!, `${lost.machine.hostname}: ${nodes.get(lost.machine.hostname)!.error ?? 'failed'}`);
      await this.replaceLostMachines();
    }
  }

  /**
   * Duffy could not run the playbook (invariant 10): record it without blaming the machines, hold background work
   * back (retried with backoff), and fail a hand-over at once with the real cause rather than let its client wait.
   */
  private async onEnvironmentFault(job: Job, playbook: string, claimed: Array<{ machine: { id: number; hostname: string }; revision: number }>, result: RunResult & { fault: EnvironmentFault }, version: number): Promise<void> {
    const { fault, run } = result;
    const now = this.ledger.clock.nowMs();
    const hosts = claimed.map(({ machine }) => machine.hostname).join(', ');
    const keys: Array<[string, string | undefined]> =
      fault.scope === 'playbook' ? [[playbook, playbook]] : fault.scope === 'run' ? claimed.map(({ machine }) => [machineKey(machine.id), hosts]) : [[ANY_RUN, undefined]];
    for (const [key, subject] of keys) {
      const held = this.faults.get(key) ?? { reason: fault.reason, since: new Date(now).toISOString(), retryAt: now + RETRY_FIRST_MS, backoffMs: RETRY_FIRST_MS * 2 };
      Object.assign(held, { reason: fault.reason, subject, ...(fault.scope === 'playbook' ? { fileVersion: version } : {}) });
      this.faults.set(key, held);
    }
    this.metrics.playbook.observe({ action: job.action, outcome: 'environment_fault' }, run.durationMs / 1000);
    this.log.warn(`${job.action} ${job.pool} [${hosts}] not run: ${fault.reason}${fault.scope === 'playbook' ? ` (${playbook})` : ''} (a fault of Duffy's environment, not of the machines; retried later)`);
    const world = this.ledger.world;
    const at = new Date(now).toISOString();
    const meta = metaFor(null, { process: 'provisioning' });
    const written = await this.ledger.commit(
      claimed.map(({ machine, revision }) => decideEnvironmentFault(world.machines.get(machine.id)!, job, fault, run, revision, at)),
      meta,
    );
    // A session that ended meanwhile (another of its runs failed first) moved the machine on: the fact still
    // holds and tells its release that nothing ran, so record it at the machine's current revision.
    const late = written.flatMap((o, i) => {
      const m = world.machines.get(claimed[i].machine.id)!;
      // Never over another claim (a newer run's, or another instance's): its run must keep it.
      return o.ok || (m.job !== null && m.job.instance !== this.instance) ? [] : [m];
    });
    if (late.length > 0) await this.ledger.commit(late.map((m) => decideEnvironmentFault(m, job, fault, run, m.revision, at)), meta);
    if (isHandover(job) && world.sessions.get(job.sessionId!)?.status === 'active') {
      await this.sessions.end(job.sessionId!, 'failed', null, fault.reason).catch((err) => this.faultLog.failed(`ending session ${job.sessionId}: ${String(err)}`, err));
    }
  }

  /**
   * One replacement pass at a time (passes and hand-over outcomes both ask): a second pass run beside one whose
   * replacement is still being written saw that machine busy, found nothing free and failed the session, leaving
   * the replacement reserved for a failed session. A call during a pass makes it run once more, and waits for that.
   */
  private replaceLostMachines(): Promise<void> {
    if (this.replacing) {
      this.replaceAgain = true;
      return this.replacing;
    }
    this.replacing = (async () => {
      try {
        do {
          this.replaceAgain = false;
          await this.replaceOnce();
        } while (this.replaceAgain);
      } finally {
        this.replacing = undefined;
      }
    })();
    return this.replacing;
  }

  /** Sessions in hand-over that lost a machine get another one, or fail (and are released). */
  private async replaceOnce(): Promise<void> {
    const world = this.ledger.world;
    for (const id of this.lostBecause.keys()) if (!world.openSessions.has(id)) this.lostBecause.delete(id);
    for (const s of [...world.openSessions].map((id) => world.sessions.get(id)!)) {
      if (s.status !== 'active') continue;
      const wanted = machinesAsked(s.specs);
      const held = s.machineIds.filter((id) => world.machines.get(id)?.sessionId === s.id).length;
      if (held >= wanted) continue;
      // One session's trouble (a store that cannot write, conflicts past the bound) must not stop the others' pass.
      await this.replaceFor(s.id).catch((err) => this.faultLog.failed(`replacing a machine of session ${s.id}: ${String(err)}`, err));
    }
  }

  /** One append with a write to the session at its revision: an end decided meanwhile and this cannot both land. */
  private async replaceFor(sessionId: number): Promise<void> {
    let fail: string | undefined;
    await this.ledger.decide((w, inFlight) => {
      const session = w.sessions.get(sessionId);
      if (!session) return [];
      const decision = decideReplacement(w, session, this.catalog.profiles, this.catalog.defaults, (p) => this.catalog.pool(p)?.contextualize ?? false, (id) => inFlight.busy(id), this.ledger.clock.now(), this.lostBecause.get(sessionId));
      if (!('fail' in decision)) return decision;
      fail = decision.fail;
      return [];
    }, metaFor(null, { process: 'provisioning', sessionId }));
    if (fail !== undefined) await this.sessions.end(sessionId, 'failed', null, fail);
  }

  async onApplicationShutdown(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    // A stop does not wait for playbooks (up to playbook-timeout): they are killed, their claims left for the next process.
    this.runner.stopAll?.();
    await Promise.allSettled([...this.inProgress]);
  }
}

async function listFiles(dir: string, base: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(relative(base, p));
    }
  };
  await walk(dir);
  return out.sort();
}

export class LookForProvisioningWork extends Command<void> {}

/**
 * The saga: every ledger event is a reason to look for due playbook work (the look itself is idempotent), so the
 * events delivered together make one command, not one each.
 */
@Injectable()
export class ProvisioningSaga {
  @Saga()
  ledgerChanged = (events$: Observable<IEvent>): Observable<ICommand> =>
    events$.pipe(
      ofType(LedgerEvent),
      auditTime(0, asapScheduler),
      map(() => new LookForProvisioningWork()),
    );
}

@CommandHandler(LookForProvisioningWork)
export class LookForProvisioningWorkHandler implements ICommandHandler<LookForProvisioningWork> {
  constructor(private readonly provisioner: Provisioner) {}
  async execute(): Promise<void> {
    this.provisioner.poke();
  }
}
