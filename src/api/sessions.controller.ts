import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { Body, Controller, Get, HttpCode, Param, ParseIntPipe, Post, Put, UseGuards } from '@nestjs/common';
import { CommandBus } from '@nestjs/cqrs';
import { Catalog } from '../ledger/catalog.js';
import { CancelWaitingCommand, EndSessionCommand, ExtendSessionCommand, RequestSessionCommand, type Actor } from '../ledger/commands.js';
import { visibleSession } from '../ledger/decide.js';
import { refuse } from '../ledger/errors.js';
import type { NodeSpec } from '../ledger/events.js';
import { Ledger } from '../ledger/ledger.service.js';
import { BasicAuthGuard, CurrentActor } from './auth.js';
import { SessionCreateDto, SessionUpdateDto } from './dto.js';
import { sessionView } from './views.js';

const intId = new ParseIntPipe({ exceptionFactory: () => refuse('invalid', 'id must be an integer') });

@ApiTags('sessions')
@Controller('sessions')
@UseGuards(BasicAuthGuard)
export class SessionsController {
  constructor(
    private readonly commands: CommandBus,
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
  ) {}

  @ApiOperation({ summary: 'my active sessions (admin: all)' })
  @Get()
  list(@CurrentActor() actor: Actor) {
    const w = this.ledger.world;
    const sessions = [...w.sessions.values()].filter(
      (s) => (s.status === 'active' || s.status === 'waiting') && (actor.tenant.isAdmin || s.tenantId === actor.tenant.id),
    );
    return { action: 'get', sessions: sessions.map((s) => sessionView(s, w, this.catalog)) };
  }

  @ApiOperation({ summary: 'one session' })
  @Get(':id')
  get(@CurrentActor() actor: Actor, @Param('id', intId) id: number) {
    const w = this.ledger.world;
    return { action: 'get', session: sessionView(visibleSession(w, id, actor.tenant), w, this.catalog) };
  }

  @ApiOperation({ summary: 'request machines; answers once they are handed over' })
  @Post()
  @HttpCode(201)
  async create(@CurrentActor() actor: Actor, @Body() body: SessionCreateDto) {
    const tenantId = body.tenant_id ?? actor.tenant.id;
    const specs: NodeSpec[] = body.nodes_specs.map(({ pool, type, arch, platform, quantity }) =>
      Object.fromEntries(Object.entries({ pool, type, arch, platform, quantity }).filter(([, v]) => v !== undefined)) as unknown as NodeSpec,
    );
    const session = await this.commands.execute(new RequestSessionCommand(actor, tenantId, specs, body.wait ?? 0));
    return { action: 'post', session: sessionView(session, this.ledger.world, this.catalog) };
  }

  @ApiOperation({ summary: 'done ({active: false}) or extend ({expires_at})' })
  @Put(':id')
  async update(@CurrentActor() actor: Actor, @Param('id', intId) id: number, @Body() body: SessionUpdateDto) {
    if (body.active === undefined && body.expires_at === undefined) refuse('invalid', 'give "active": false or "expires_at"');
    if (body.active === true) refuse('invalid', 'a session cannot be reactivated');
    // Check visibility first, so another tenant's session gives 404 whatever the body says.
    visibleSession(this.ledger.world, id, actor.tenant);
    let session = body.expires_at !== undefined ? await this.commands.execute(new ExtendSessionCommand(actor, id, body.expires_at)) : undefined;
    if (body.active === false && this.ledger.world.sessions.get(id)?.status === 'waiting') {
      session = await this.commands.execute(new CancelWaitingCommand(actor, id));
    } else if (body.active === false) session = await this.commands.execute(new EndSessionCommand(actor, id, 'done'));
    return { action: 'put', session: sessionView(session!, this.ledger.world, this.catalog) };
  }
}
