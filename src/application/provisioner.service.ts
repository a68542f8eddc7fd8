import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { Command, CommandHandler, type ICommand, type ICommandHandler, type IEvent, Saga, ofType } from '@nestjs/cqrs';
import { type Observable, map } from 'rxjs';
import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { Catalog } from './catalog.js';
import { LedgerEvent, Ledger } from './ledger.service.js';
import { SessionLifecycle, metaFor } from './session-lifecycle.js';
import { Metrics } from '../adapters/metrics.js';
import { ANSIBLE_DIR, PLAYBOOK_RUNNER, type DuffyIn, type PlaybookRunner } from '../adapters/ansible-runner.js';
import { type Job, decideClaim, decideReplacement, decideRunOutcome, dueJobs } from '../domain/provisioning.decide.js';

/** Playbook runs at once: Ansible is CPU-heavy and a run already batches the hosts of a pool. */
const MAX_PARALLEL_RUNS = 4;

/**
 * The process manager that turns ledger state into playbook runs and their outcomes back into events.
 * Work is found from the World (not from a queue), and claimed with a PlaybookStarted at the machine's
 * revision before anything is spawned: after a crash, a lapsed claim is simply taken again.
 */
@Injectable()
export class Provisioner implements OnApplicationShutdown {
  readonly instance = randomUUID();
  private readonly running = new Set<number>();
  private runs = 0;
  private scheduled = false;
  private stopped = false;
  private timer?: NodeJS.Timeout;
  private readonly inProgress = new Set<Promise<void>>();
  private readonly log = new Logger('Provisioner');

  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
    private readonly sessions: SessionLifecycle,
    @Inject(PLAYBOOK_RUNNER) private readonly runner: PlaybookRunner,
    private readonly metrics: Metrics,
  ) {}

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
      void this.pass().catch((err) => this.log.error(`provisioning pass failed: ${String(err)}`));
    });
  }

  private async pass(): Promise<void> {
    await this.replaceLostMachines();
    const jobs = dueJobs(this.ledger.world, {
      pools: (n) => this.catalog.pool(n),
      now: Date.now(),
      runningHere: (id) => this.running.has(id),
      instance: this.instance,
      soleInstance: this.ledger.store.singleWriter,
    });
    for (const job of jobs) {
      if (this.runs >= MAX_PARALLEL_RUNS || this.stopped) return;
      job.machineIds.forEach((id) => this.running.add(id));
      this.runs += 1;
      const work = this.execute(job)
        .catch((err) => this.log.error(`${job.action} on ${job.pool} failed: ${String(err)}`))
        .finally(() => {
          job.machineIds.forEach((id) => this.running.delete(id));
          this.runs -= 1;
          this.inProgress.delete(work);
          this.poke();
        });
      this.inProgress.add(work);
    }
  }

  private async execute(job: Job): Promise<void> {
    const pool = this.catalog.pool(job.pool)!;
    const timeoutMs = pool['playbook-timeout'] * 1000;
    const meta = metaFor(null, { process: 'provisioning' });
    const world = this.ledger.world;
    const machines = job.machineIds.map((id) => world.machines.get(id)!);
    // Claim first: only machines whose claim landed get a playbook, so no two instances run one.
    const claims = await this.ledger.commit(machines.map((m) => decideClaim(m, job.action, job.sessionId, this.instance, timeoutMs, Date.now())), meta);
    const claimed = machines.flatMap((m, i) => {
      const c = claims[i];
      return c.ok ? [{ machine: m, revision: c.result.nextExpectedRevisions[0] }] : [];
    });
    if (claimed.length === 0) return;
    const session = job.sessionId === null ? undefined : world.sessions.get(job.sessionId);
    const tenant = session ? world.tenants.get(session.tenantId) : undefined;
    const artifactsDir = session ? join(this.catalog.settings.dataDir, 'artifacts', `session-${session.id}`) : undefined;
    const input: DuffyIn = {
      action: job.action,
      pool: { name: pool.name, type: pool.type, driver: pool.driver, arch: pool.arch, platform: pool.platform, vars: pool.vars ?? {} },
      session: session && tenant ? { id: session.id, tenant: tenant.name, ssh_key: tenant.sshKey } : null,
      ...(job.action === 'release' ? { policy: pool['release-policy'] } : {}),
      nodes: claimed.map(({ machine: m }) => ({ id: m.id, hostname: m.hostname, ipaddr: m.ipaddr, data: m.data })),
      data_dir: this.catalog.settings.dataDir,
      ...(job.action === 'collect_artifacts' && artifactsDir ? { artifacts_dir: artifactsDir } : {}),
    };
    const override = pool.playbooks?.[job.action];
    const playbook = override ? (isAbsolute(override) ? override : resolve(ANSIBLE_DIR, override)) : undefined;
    const { run, nodes } = await this.runner.run(input, { timeoutMs, playbook });
    const failed = [...nodes.values()].filter((n) => !n.ok).length;
    this.metrics.playbook.observe({ action: job.action, outcome: failed === 0 ? 'ok' : 'failed' }, run.durationMs / 1000);
    if (failed > 0) this.metrics.provisioningFailures.inc({ action: job.action }, failed);
    this.log.log(`${job.action} ${pool.name} [${claimed.map((c) => c.machine.hostname).join(', ')}]: exit ${run.exitCode}${run.timedOut ? ' (timed out)' : ''} in ${run.durationMs} ms`);
    const now = new Date().toISOString();
    const outcomes = await Promise.all(
      claimed.map(async ({ machine, revision }) => {
        const result = nodes.get(machine.hostname)!;
        const files = job.action === 'collect_artifacts' && result.ok && artifactsDir ? await listFiles(join(artifactsDir, machine.hostname), this.catalog.settings.dataDir) : undefined;
        return decideRunOutcome(machine, pool, job, { ...result, files }, run, revision, now);
      }),
    );
    // The outcome is recorded at its own time, not the claim's (same correlation id).
    await this.ledger.commit(outcomes, { ...meta, at: now });
    if (job.sessionId !== null && (job.action === 'provision' || job.action === 'contextualize')) await this.replaceLostMachines();
  }

  /** Sessions in hand-over that lost a machine get another one, or fail (and are released). */
  private async replaceLostMachines(): Promise<void> {
    const world = this.ledger.world;
    for (const s of [...world.openSessions].map((id) => world.sessions.get(id)!)) {
      if (s.status !== 'active') continue;
      const wanted = s.specs.reduce((n, x) => n + x.quantity, 0);
      const held = s.machineIds.filter((id) => world.machines.get(id)?.sessionId === s.id).length;
      if (held >= wanted) continue;
      const decision = decideReplacement(world, s, this.catalog.profiles, (p) => this.catalog.pool(p)?.contextualize ?? false, (id) => this.ledger.inFlight.busy(id), new Date().toISOString());
      if ('fail' in decision) {
        await this.sessions.end(s.id, 'failed', null, decision.fail);
      } else if (decision.length > 0) {
        await this.ledger.commit(decision, metaFor(null, { process: 'provisioning', sessionId: s.id }));
      }
    }
  }

  async onApplicationShutdown(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
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

/** The saga: every ledger event is a reason to look for due playbook work (the look itself is idempotent). */
@Injectable()
export class ProvisioningSaga {
  @Saga()
  ledgerChanged = (events$: Observable<IEvent>): Observable<ICommand> =>
    events$.pipe(
      ofType(LedgerEvent),
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
