import { machinesAsked } from '../domain/events.js';
import { Controller, Get, UseGuards } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import type { Actor } from '../application/commands.js';
import { refuse } from '../domain/errors.js';
import { Ledger } from '../application/ledger.service.js';
import { WaitingQueue, queueOrder } from '../application/queue.service.js';
import { BasicAuthGuard, CurrentActor } from './auth.js';

@ApiTags('ops')
@Controller('queue')
@UseGuards(BasicAuthGuard)
export class QueueController {
  constructor(
    private readonly ledger: Ledger,
    private readonly queue: WaitingQueue,
  ) {}

  @ApiOperation({ summary: 'waiting requests in the order they are tried; one that does not fit is passed over (admin)' })
  @Get()
  list(@CurrentActor() actor: Actor) {
    if (!actor.tenant.isAdmin) refuse('forbidden', 'only admins may read the queue');
    const world = this.ledger.world;
    return {
      action: 'get',
      queue: queueOrder(world, this.ledger.clock.nowMs()).map((s, i) => ({
        position: i + 1,
        session: s.id,
        tenant: world.tenants.get(s.tenantId)?.name ?? null,
        wanted: machinesAsked(s.specs),
        reason: this.queue.reasonNow(s),
        since: s.queue!.since,
        until: s.queue!.until,
      })),
    };
  }
}
