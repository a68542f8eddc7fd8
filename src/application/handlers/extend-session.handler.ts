import { CommandHandler, type ICommandHandler } from '@nestjs/cqrs';
import { Catalog } from '../catalog.js';
import { ExtendSessionCommand } from '../commands.js';
import { decideExtendSession, visibleSessionOrRefusal } from '../../domain/decide.js';
import { Ledger } from '../ledger.service.js';
import { stream } from '../../domain/events.js';
import { metaFor } from '../session-lifecycle.js';

@CommandHandler(ExtendSessionCommand)
export class ExtendSessionHandler implements ICommandHandler<ExtendSessionCommand> {
  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
  ) {}

  async execute(cmd: ExtendSessionCommand) {
    // The tenant's maximum bounds the extension: a change of it on its way is waited for (its stream is not written here).
    const owner = this.ledger.world.tenants.get(this.ledger.world.sessions.get(cmd.sessionId)?.tenantId ?? -1);
    await this.ledger.decide(
      (world) => {
        const s = visibleSessionOrRefusal(world, cmd.sessionId, cmd.actor.tenant);
        if ('refused' in s) return s;
        return decideExtendSession(s, world.tenants.get(s.tenantId)!, this.catalog.defaults, cmd.expiresAt, this.ledger.clock.now(), cmd.actor.tenant.isAdmin);
      },
      metaFor(cmd.actor),
      owner ? [stream.tenant(owner.name)] : [],
    );
    return this.ledger.world.sessions.get(cmd.sessionId)!;
  }
}
