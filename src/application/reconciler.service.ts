import { Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { SessionLifecycle, metaFor } from './session-lifecycle.js';
import { Ledger } from './ledger.service.js';
import { FaultLog } from './ports/storage-fault.port.js';

/**
 * Expires overdue sessions and recycles machines whose release needs no playbook. Requests and releases are
 * atomic appends, so there is nothing half-written to repair. Every step is a decider guarded by revisions, so
 * running it twice, or on two instances at once, writes each fact once.
 */
@Injectable()
export class Reconciler implements OnApplicationShutdown {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private readonly log = new Logger('Reconciler');
  private readonly faults = new FaultLog(this.log);

  constructor(
    private readonly ledger: Ledger,
    private readonly sessions: SessionLifecycle,
  ) {}

  start(intervalMs = 5_000): void {
    this.timer = setInterval(() => void this.tick(), intervalMs);
    this.timer.unref();
    void this.tick();
  }

  tick(): Promise<void> {
    // The clock of the decision itself (SessionLifecycle.end) has the last word: a lease extended meanwhile stays.
    this.running ??= this.pass(this.ledger.clock.nowMs())
      .catch((err) => this.faults.failed(`reconcile pass failed: ${String(err)}`, err))
      .finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(nowMs: number): Promise<void> {
    const world = this.ledger.world;
    const meta = metaFor(null, { reason: 'reconcile' });
    // Both from indexes kept by evolve: leases by expiry, machines that may need playbook work.
    for (const id of world.leases.expired(nowMs)) await this.sessions.end(id, 'expired', null);
    for (const m of [...world.work.machines]) {
      if (m.state === 'deprovisioning') await this.sessions.recycleIfInstant(m.id, meta);
    }
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }
}
