import { CommandHandler, type ICommandHandler } from '@nestjs/cqrs';
import { CancelWaitingCommand } from '../commands.js';
import { decideLeaveQueue, visibleSessionOrRefusal } from '../../domain/decide.js';
import { Ledger } from '../ledger.service.js';
import { metaFor } from '../session-lifecycle.js';

@CommandHandler(CancelWaitingCommand)
export class CancelWaitingHandler implements ICommandHandler<CancelWaitingCommand> {
  constructor(private readonly ledger: Ledger) {}

  async execute(cmd: CancelWaitingCommand) {
    await this.ledger.decide((world) => {
      const s = visibleSessionOrRefusal(world, cmd.sessionId, cmd.actor.tenant);
      if ('refused' in s) return s;
      return decideLeaveQueue(s, `cancelled by ${cmd.actor.tenant.name}`, this.ledger.clock.now());
    }, metaFor(cmd.actor));
    return this.ledger.world.sessions.get(cmd.sessionId)!;
  }
}
