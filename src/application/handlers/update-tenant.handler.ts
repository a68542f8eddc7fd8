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
      return decideUpdateTenant(tenant, { changes, keyDigests, active: cmd.active, now: this.ledger.clock.now() }, world, inFlight);
    }, metaFor(cmd.actor));
    const world = this.ledger.world;
    // As decided: the loop below awaits, and a change landing meanwhile (a reactivation) is not this answer's.
    const tenant = { ...world.tenants.get(cmd.tenantId)! };
    if (tenant.retiredAt !== null) {
      // Retiring a tenant ends its sessions; their machines go back through release.
      for (const s of [...world.openSessions].map((id) => world.sessions.get(id)!)) {
        if (s.tenantId === tenant.id && s.status === 'active') await this.sessions.end(s.id, 'tenant-retired', cmd.actor);
      }
    }
    // Only a key Duffy made up is shown; one the admin chose they know already.
    return { tenant, apiKey: cmd.apiKey === 'reset' ? apiKey : undefined };
  }
}
