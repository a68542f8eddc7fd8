import { CommandHandler, type ICommandHandler } from '@nestjs/cqrs';
import { EndSessionCommand } from '../commands.js';
import { SessionLifecycle } from '../session-lifecycle.js';

@CommandHandler(EndSessionCommand)
export class EndSessionHandler implements ICommandHandler<EndSessionCommand> {
  constructor(private readonly sessions: SessionLifecycle) {}

  execute(cmd: EndSessionCommand) {
    return this.sessions.end(cmd.sessionId, cmd.reason, cmd.actor);
  }
}
