import { Command, CommandHandler, type ICommandHandler } from '@nestjs/cqrs';
import type { Actor } from '../commands.js';
import { type ServiceRequest, decideServiceChange } from '../../domain/decide-service.js';
import { refusal } from '../../domain/decide.js';
import { refuse } from '../../domain/errors.js';
import { Ledger } from '../ledger.service.js';
import { metaFor } from '../session-lifecycle.js';
import type { Machine } from '../../domain/world.js';

/** An admin takes a node out of service (maintenance, retirement), puts it back, or gives its hardware. */
export class ChangeNodeServiceCommand extends Command<Machine> {
  constructor(
    readonly actor: Actor,
    readonly machineId: number,
    readonly change: ServiceRequest,
  ) {
    super();
  }
}

@CommandHandler(ChangeNodeServiceCommand)
export class ChangeNodeServiceHandler implements ICommandHandler<ChangeNodeServiceCommand> {
  constructor(private readonly ledger: Ledger) {}

  async execute(cmd: ChangeNodeServiceCommand): Promise<Machine> {
    if (!cmd.actor.tenant.isAdmin) refuse('forbidden', 'only admins may change the service or hardware of nodes');
    await this.ledger.decide((world, inFlight) => {
      const m = world.machines.get(cmd.machineId);
      return m ? decideServiceChange(m, cmd.change, cmd.actor.tenant.name, this.ledger.clock.now(), inFlight) : refusal('not_found', `node ${cmd.machineId} not found`);
    }, metaFor(cmd.actor));
    return this.ledger.world.machines.get(cmd.machineId)!;
  }
}
