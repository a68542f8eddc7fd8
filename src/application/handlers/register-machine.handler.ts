import { machineIdOfHost } from '../../domain/world.js';
import { CommandHandler, type ICommandHandler } from '@nestjs/cqrs';
import { Catalog } from '../catalog.js';
import { RegisterMachineCommand } from '../commands.js';
import { decideRegisterMachines } from '../../domain/decide.js';
import { refuse } from '../../domain/errors.js';
import { Ledger } from '../ledger.service.js';
import { metaFor } from '../session-lifecycle.js';

@CommandHandler(RegisterMachineCommand)
export class RegisterMachineHandler implements ICommandHandler<RegisterMachineCommand> {
  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
  ) {}

  async execute(cmd: RegisterMachineCommand) {
    if (cmd.actor && !cmd.actor.tenant.isAdmin) refuse('forbidden', 'only admins may register nodes');
    await this.ledger.decide((world, inFlight) => decideRegisterMachines(world, this.catalog.profiles, { machines: [cmd.machine], now: this.ledger.clock.now() }, inFlight), metaFor(cmd.actor));
    const world = this.ledger.world;
    return world.machines.get(machineIdOfHost(world, cmd.machine.hostname)!)!;
  }
}
