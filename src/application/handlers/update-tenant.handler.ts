import { CommandHandler, type ICommandHandler } from '@nestjs/cqrs';
import { randomUUID } from 'node:crypto';
import { digestKey, digestsOf } from '../catalog.js';
import { UpdateTenantCommand } from '../commands.js';
import { decideUpdateTenant, refusal } from '../../domain/decide.js';
import { refuse } from '../../domain/errors.js';
import { Ledger } from '../ledger.service.js';
import { SessionLifecycle, metaFor } from '../session-lifecycle.js';

@CommandHandler(UpdateTenantCommand)
export class UpdateTenantHandler implements ICommandHandler<UpdateTenantCommand> {
  constructor(
    private readonly ledger: Ledger,
    private readonly sessions: SessionLifecycle,
  ) {}

  async execute(cmd: UpdateTenantCommand) {
    if (!cmd.actor.tenant.isAdmin) refuse('forbidden', 'only admins may change tenants');
    const apiKey = cmd.apiKey === 'reset' ? randomUUID() : cmd.apiKey;
    const changes = { ...cmd.changes, ...(apiKey ? { apiKeyDigest: digestKey(apiKey) } : {}) };
    // Also the digest a key stored before UUID keys were compared lowercased may have.
    const keyDigests = apiKey ? [...digestsOf(apiKey)] : [];
    await this.ledger.decide((world, inFlight) => {
      const tenant = world.tenants.get(cmd.tenantId);
      if (!tenant) return refusal('not_found', `tenant ${cmd.tenantId} not found`);
      const now = this.ledger.clock.now();
      return decideUpdateTenant(tenant, { changes, keyDigests, active: cmd.active, now, recyclesInstantly: (pool) => this.sessions.recyclesInstantly(pool) }, world, inFlight);
    }, metaFor(cmd.actor));
    // As decided, whatever lands after this append.
    const tenant = { ...this.ledger.world.tenants.get(cmd.tenantId)! };
    // Only a key Duffy made up is shown; one the admin chose they know already.
    return { tenant, apiKey: cmd.apiKey === 'reset' ? apiKey : undefined };
  }
}
