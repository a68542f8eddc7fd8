import { CommandHandler, type ICommandHandler } from '@nestjs/cqrs';
import { randomUUID } from 'node:crypto';
import { digestKey } from '../catalog.js';
import { RegisterTenantCommand } from '../commands.js';
import { decideRegisterTenant } from '../../domain/decide.js';
import { refuse } from '../../domain/errors.js';
import { Ledger } from '../ledger.service.js';
import { metaFor } from '../session-lifecycle.js';

@CommandHandler(RegisterTenantCommand)
export class RegisterTenantHandler implements ICommandHandler<RegisterTenantCommand> {
  constructor(private readonly ledger: Ledger) {}

  async execute(cmd: RegisterTenantCommand) {
    if (cmd.actor && !cmd.actor.tenant.isAdmin) refuse('forbidden', 'only admins may create tenants');
    const apiKey = cmd.apiKey ?? randomUUID();
    await this.ledger.decide(
      (world, inFlight) => decideRegisterTenant(world, { name: cmd.name, apiKeyDigest: digestKey(apiKey), isAdmin: cmd.isAdmin, settings: cmd.settings, now: this.ledger.clock.now() }, inFlight),
      metaFor(cmd.actor),
    );
    const world = this.ledger.world;
    return { tenant: world.tenants.get(world.tenantIdsByName.get(cmd.name)!)!, apiKey };
  }
}
