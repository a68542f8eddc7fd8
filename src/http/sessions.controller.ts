import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { Body, Controller, Get, HttpCode, Param, Post, Put, Res, UseGuards } from '@nestjs/common';
import type { Response } from 'express';
import { CommandBus } from '@nestjs/cqrs';
import { Catalog } from '../application/catalog.js';
import { CancelWaitingCommand, EndSessionCommand, ExtendSessionCommand, RequestSessionCommand, type Actor } from '../application/commands.js';
import { inactive, raise, visibleSession } from '../domain/decide.js';
import type { NodeSpec } from '../domain/events.js';
import { Ledger } from '../application/ledger.service.js';
import { BasicAuthGuard, CurrentActor } from './auth.js';
import { ReadViews } from './read-views.js';
import { SessionCreateDto, SessionUpdateDto } from './dto.js';
import { callerGoneOf } from './input.js';
import { sessionView } from './views.js';
import { sendList } from './json-list.js';
import { ApiAnswer, ApiRefusals, SessionView } from './openapi.js';
import { WaitingQueue } from '../application/queue.service.js';
import type { Session } from '../domain/world.js';


@ApiTags('sessions')
@Controller('sessions')
@UseGuards(BasicAuthGuard)
export class SessionsController {
  constructor(
    private readonly commands: CommandBus,
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
    private readonly views: ReadViews,
    private readonly queue: WaitingQueue,
  ) {}

  private readonly reasonNow = (s: Session) => this.queue.reasonNow(s);
  private readonly nowMs = () => this.ledger.clock.nowMs();

  @ApiOperation({ summary: 'my active sessions (admin: all)' })
  @ApiAnswer(200, 'get', 'sessions', SessionView, true)
  @Get()
  async list(@CurrentActor() actor: Actor, @Res() res: Response): Promise<void> {
    const mine: Record<string, number> = actor.tenant.isAdmin ? {} : { tenantId: actor.tenant.id };
    // Waiting first: a request served between the two reads shows once, as active (the later read wins).
    const w = await this.views.load({ sessions: [{ ...mine, status: 'waiting' }, { ...mine, status: 'active' }] });
    const sorted = (status: string) => [...w.sessions.values()].filter((s) => s.status === status).sort((a, b) => a.id - b.id);
    await sendList(res, { action: 'get' }, 'sessions', [...sorted('active'), ...sorted('waiting')], (s) => sessionView(s, w, this.catalog, this.ledger.world, this.reasonNow, this.nowMs));
  }

  @ApiOperation({ summary: 'one session' })
  @ApiAnswer(200, 'get', 'session', SessionView)
  @Get(':id')
  async get(@CurrentActor() actor: Actor, @Param('id') id: number) {
    const w = await this.views.load({ sessions: id });
    return { action: 'get', session: sessionView(visibleSession(w, id, actor.tenant), w, this.catalog, this.ledger.world, this.reasonNow, this.nowMs) };
  }

  @ApiOperation({ summary: 'request machines; answers once they are handed over' })
  @ApiAnswer(201, 'post', 'session', SessionView)
  @ApiRefusals(409)
  @Post()
  @HttpCode(201)
  async create(@CurrentActor() actor: Actor, @Body() body: SessionCreateDto, @Res({ passthrough: true }) res: Response) {
    const tenantId = body.tenant_id ?? actor.tenant.id;
    const specs: NodeSpec[] = body.nodes_specs.map(({ pool, type, arch, platform, quantity, hardware }) =>
      Object.fromEntries(Object.entries({ pool, type, arch, platform, quantity, hardware: hardware && { ...hardware } }).filter(([, v]) => v !== undefined)) as unknown as NodeSpec,
    );
    // Listened to only by a request that waits (in the queue, or for a hand-over): nothing per request otherwise.
    const session = await this.commands.execute(new RequestSessionCommand(actor, tenantId, specs, body.wait ?? 0, callerGoneOf(res)));
    return { action: 'post', session: sessionView(session, this.ledger.world, this.catalog) };
  }

  @ApiOperation({ summary: 'done ({active: false}) or extend ({expires_at})' })
  @ApiAnswer(200, 'put', 'session', SessionView)
  @ApiRefusals(409)
  @Put(':id')
  async update(@CurrentActor() actor: Actor, @Param('id') id: number, @Body() body: SessionUpdateDto) {
    if (!this.ledger.world.sessions.has(id)) return this.updatePast(actor, id, body);
    // Check visibility first, so another tenant's session gives 404 whatever the body says.
    const current = visibleSession(this.ledger.world, id, actor.tenant);
    // Nothing to change (`{}`, `"active": true`): the session as it is, as Duffy v3 answers; an ended one is refused.
    if (body.active !== false && body.expires_at === undefined) {
      if (current.status !== 'active' && current.status !== 'waiting') raise(inactive(id));
      return { action: 'put', session: sessionView(current, this.ledger.world, this.catalog) };
    }
    let session = body.expires_at !== undefined ? await this.commands.execute(new ExtendSessionCommand(actor, id, body.expires_at)) : undefined;
    if (body.active === false && this.ledger.world.sessions.get(id)?.status === 'waiting') {
      session = await this.commands.execute(new CancelWaitingCommand(actor, id));
    }
    // Done, or a wait served between that look and the cancel: "done" ends the session it became.
    if (body.active === false && session?.status !== 'rejected') session = await this.commands.execute(new EndSessionCommand(actor, id, 'done'));
    return { action: 'put', session: sessionView(session!, this.ledger.world, this.catalog) };
  }

  /**
   * A session the World no longer holds ended long ago (it keeps every live one): the read side still knows it, and
   * it answers as a recently ended one does: done again is a no-op, an extension is refused.
   */
  private async updatePast(actor: Actor, id: number, body: SessionUpdateDto) {
    const w = await this.views.load({ sessions: id });
    const past = visibleSession(w, id, actor.tenant);
    if (body.active !== false || body.expires_at !== undefined) raise(inactive(id));
    return { action: 'put', session: sessionView(past, w, this.catalog, this.ledger.world, this.reasonNow, this.nowMs) };
  }
}
