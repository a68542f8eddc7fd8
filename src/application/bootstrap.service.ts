import { Injectable, Logger } from '@nestjs/common';
import { CommandBus } from '@nestjs/cqrs';
import { Catalog } from './catalog.js';
import { RegisterMachineCommand, RegisterTenantCommand } from './commands.js';
import { Ledger } from './ledger.service.js';
import { Provisioner } from './provisioner.service.js';
import { ReadSide } from './read-side.service.js';
import { WaitingQueue } from './queue.service.js';
import { Reconciler } from './reconciler.service.js';

/** Start-up: fold the ledger, create the first admin on an empty ledger, register configured machines not yet known. */
@Injectable()
export class Bootstrap {
  private readonly log = new Logger('Bootstrap');

  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
    private readonly commands: CommandBus,
    private readonly reconciler: Reconciler,
    private readonly provisioner: Provisioner,
    private readonly readSide: ReadSide,
    private readonly queue: WaitingQueue,
  ) {}

  async run(options: { reconcileEveryMs?: number } = {}): Promise<{ adminKey?: string }> {
    await this.ledger.start();
    await this.readSide.start();
    const s = this.catalog.settings;
    let adminKey: string | undefined;
    if (this.ledger.world.tenants.size === 0) {
      const created = await this.commands.execute(
        new RegisterTenantCommand(null, s.adminName, true, { sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null }, s.adminKey),
      );
      if (!s.adminKey) {
        adminKey = created.apiKey;
        // Shown once: only its digest is stored.
        this.log.warn(`created admin tenant '${s.adminName}' with API key ${created.apiKey} (shown once; set DUFFY_ADMIN_KEY to choose it)`);
      }
    }
    let added = 0;
    for (const m of s.config.machines) {
      if (this.ledger.world.machineIdsByHostname.has(m.hostname)) continue;
      await this.commands.execute(new RegisterMachineCommand(null, { ...m, ipaddr: m.ipaddr ?? null, data: m.data ?? {} }));
      added += 1;
    }
    if (added > 0) this.log.log(`registered ${added} machine(s) from ${s.configFile}`);
    this.reconciler.start(options.reconcileEveryMs);
    this.provisioner.start();
    this.queue.start();
    return { adminKey };
  }
}
