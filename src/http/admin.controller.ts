import { ApiOperation, ApiQuery, ApiTags } from '@nestjs/swagger';
import { Body, Controller, Get, HttpCode, Param, Post, Put, Query, Req, Res, UseGuards } from '@nestjs/common';
import type { Request, Response } from 'express';
import { CommandBus } from '@nestjs/cqrs';
import { Catalog } from '../application/catalog.js';
import { RegisterMachineCommand, RegisterTenantCommand, UpdateTenantCommand, type Actor } from '../application/commands.js';
import { refuse } from '../domain/errors.js';
import { BasicAuthGuard, CurrentActor } from './auth.js';
import { ReadViews } from './read-views.js';
import { NodeCreateDto, NodeServiceDto, TenantCreateDto, TenantUpdateDto, queryFlag } from './dto.js';
import { hardwareProblem } from '../domain/hardware.js';
import { ChangeNodeServiceCommand } from '../application/handlers/node-service.handler.js';
import { MASKED, maySee, nodeView, poolLevels, tenantView } from './views.js';
import { sendList } from './json-list.js';
import { retiredForGood } from '../domain/decide-service.js';
import { nullMembers } from './input.js';
import { ApiAnswer, ApiRefusals, NodeView, PoolLevelsView, PoolProfileView, PoolView, TenantCreatedView, TenantUpdatedView, TenantView } from './openapi.js';

/** Duffy v3's TenantUpdateModel: a body naming any of these is an update. */
const SETTINGS = ['ssh_key', 'api_key', 'node_quota', 'session_lifetime', 'session_lifetime_max'];

@ApiTags('tenants')
@Controller('tenants')
@UseGuards(BasicAuthGuard)
export class TenantsController {
  constructor(
    private readonly commands: CommandBus,
    private readonly catalog: Catalog,
    private readonly views: ReadViews,
  ) {}

  @ApiAnswer(200, 'get', 'tenants', TenantView, true)
  @Get()
  async list(@CurrentActor() actor: Actor) {
    const all = [...(await this.views.load({ tenants: {} })).tenants.values()];
    const visible = actor.tenant.isAdmin ? all : all.filter((t) => t.id === actor.tenant.id);
    return { action: 'get', tenants: visible.sort((a, b) => a.id - b.id).map((t) => tenantView(t, this.catalog)) };
  }

  @ApiAnswer(200, 'get', 'tenant', TenantView)
  @Get(':id')
  async get(@CurrentActor() actor: Actor, @Param('id') id: number) {
    const t = (await this.views.load({ tenants: id })).tenants.get(id);
    if (!t || (!actor.tenant.isAdmin && t.id !== actor.tenant.id)) refuse('not_found', `tenant ${id} not found`);
    return { action: 'get', tenant: tenantView(t!, this.catalog) };
  }

  @ApiAnswer(201, 'post', 'tenant', TenantCreatedView)
  @ApiRefusals(409)
  @Post()
  @HttpCode(201)
  async create(@CurrentActor() actor: Actor, @Body() b: TenantCreateDto) {
    const { tenant, apiKey } = await this.commands.execute(
      new RegisterTenantCommand(actor, b.name, b.is_admin ?? false, {
        sshKey: b.ssh_key,
        nodeQuota: b.node_quota ?? null,
        sessionLifetime: b.session_lifetime ?? null,
        sessionLifetimeMax: b.session_lifetime_max ?? null,
      }),
    );
    // As Duffy v3: the new tenant's key (shown once) and the ssh key it was given.
    return { action: 'post', tenant: { ...tenantView(tenant, this.catalog), ssh_key: b.ssh_key, api_key: apiKey } };
  }

  @ApiAnswer(200, 'put', 'tenant', TenantUpdatedView)
  @ApiRefusals(409)
  @Put(':id')
  async update(@CurrentActor() actor: Actor, @Param('id') id: number, @Body() b: TenantUpdateDto, @Req() req: Request) {
    // As Duffy v3's body, `Union[TenantUpdateModel, TenantRetireModel]`: naming any setting (null included) makes it
    // an update, whose `active` is ignored; otherwise it retires or reactivates.
    // The parser drops nulls and remembers their names: a setting given as null goes back to the default (every
    // other null means "not given").
    const reset = nullMembers(req.body);
    const given = typeof req.body === 'object' && req.body !== null ? (req.body as object) : {};
    const updating = SETTINGS.some((k) => k in given || reset.has(k));
    if (!updating && b.active === undefined) refuse('invalid', `one of ${SETTINGS.join(', ')} or active is required`);
    const setting = <T>(name: string, value: T | undefined) => (value === undefined && reset.has(name) ? null : value);
    const changes = {
      sshKey: b.ssh_key,
      nodeQuota: setting('node_quota', b.node_quota),
      sessionLifetime: setting('session_lifetime', b.session_lifetime),
      sessionLifetimeMax: setting('session_lifetime_max', b.session_lifetime_max),
    };
    const keyChange = b.api_key === true || b.api_key === 'reset' ? 'reset' : typeof b.api_key === 'string' ? b.api_key : undefined;
    const { tenant, apiKey } = await this.commands.execute(new UpdateTenantCommand(actor, id, changes, updating ? undefined : b.active, keyChange));
    // As Duffy v3: the new key when one was issued, masked after an update, null after retiring or reactivating.
    return { action: 'put', tenant: { ...tenantView(tenant, this.catalog), api_key: apiKey ?? (updating ? MASKED : null) } };
  }
}

@ApiTags('nodes')
@Controller('nodes')
@UseGuards(BasicAuthGuard)
export class NodesController {
  constructor(
    private readonly commands: CommandBus,
    private readonly views: ReadViews,
  ) {}

  @ApiAnswer(200, 'get', 'nodes', NodeView, true)
  @ApiQuery({ name: 'retired', required: false, type: Boolean, description: 'list retired nodes too (also 1/0, yes/no)' })
  @ApiRefusals(422)
  @Get()
  async list(@CurrentActor() actor: Actor, @Res() res: Response, @Query('retired') retired?: unknown): Promise<void> {
    // As Duffy v3: a retired node is no longer listed (GET /nodes/{id} still shows it); `?retired=true` (a Duffy
    // extension, which the CLI uses) lists them too.
    const withRetired = retired === undefined ? false : queryFlag('retired', retired);
    const w = await this.views.load({ machines: actor.tenant.isAdmin ? {} : { tenantId: actor.tenant.id } });
    // A machine draining towards its retirement is still held, and listed: its tenant sees it in its session.
    const visible = [...w.machines.values()].filter((m) => (withRetired || !retiredForGood(m)) && maySee(m, actor.tenant));
    await sendList(res, { action: 'get' }, 'nodes', visible.sort((a, b) => a.id - b.id), (m) => nodeView(m, actor.tenant.isAdmin));
  }

  @ApiAnswer(200, 'get', 'node', NodeView)
  @Get(':id')
  async get(@CurrentActor() actor: Actor, @Param('id') id: number) {
    const m = (await this.views.load({ machines: id })).machines.get(id);
    if (!m || !maySee(m, actor.tenant)) return refuse('not_found', `node ${id} not found`);
    return { action: 'get', node: nodeView(m, actor.tenant.isAdmin) };
  }

  @ApiAnswer(201, 'post', 'node', NodeView)
  @ApiRefusals(409)
  @Post()
  @HttpCode(201)
  async create(@CurrentActor() actor: Actor, @Body() b: NodeCreateDto) {
    const problem = b.hardware === undefined ? null : hardwareProblem(b.hardware);
    if (problem) refuse('invalid', problem);
    const m = await this.commands.execute(
      new RegisterMachineCommand(actor, { hostname: b.hostname, ipaddr: b.ipaddr ?? null, pool: b.pool, reusable: b.reusable ?? true, data: b.data ?? {}, state: b.state ?? 'ready', ...(b.hardware ? { hardware: b.hardware } : {}), ...(b.comment !== undefined ? { comment: b.comment } : {}) }),
    );
    return { action: 'post', node: nodeView(m, true) };
  }

  /** Admin: maintenance, back in service (also out of quarantine), retirement, its hardware; each an event with actor and reason. */
  @ApiAnswer(200, 'put', 'node', NodeView)
  @ApiRefusals(409)
  @Put(':id')
  async update(@CurrentActor() actor: Actor, @Param('id') id: number, @Body() b: NodeServiceDto) {
    const m = await this.commands.execute(new ChangeNodeServiceCommand(actor, id, { maintenance: b.maintenance ?? undefined, retired: b.retired ?? undefined, hardware: b.hardware ?? undefined, reason: b.reason ?? null }));
    return { action: 'put', node: nodeView(m, true) };
  }
}

/** Farm-wide and no tenant's business: open without credentials, as in Duffy v3 (monitoring reads it). */
@ApiTags('pools')
@Controller('pools')
export class PoolsController {
  constructor(
    private readonly catalog: Catalog,
    private readonly views: ReadViews,
  ) {}

  @ApiOperation({ summary: 'pools and their fill levels (no credentials needed)', security: [] })
  @ApiAnswer(200, 'get', 'pools', PoolView, true)
  @Get()
  list() {
    return { action: 'get', pools: this.catalog.pools.map((p) => ({ name: p.name, 'fill-level': p['fill-level'] })) };
  }

  @ApiOperation({ summary: 'one pool with its levels (no credentials needed)', security: [] })
  @ApiAnswer(200, 'get', 'pool', PoolLevelsView)
  @ApiRefusals(404)
  @Get(':name')
  async get(@Param('name') name: string) {
    const p = this.catalog.pool(name) ?? refuse('not_found', `pool ${name} not found`);
    const w = await this.views.load({ machines: { pool: p.name } });
    return { action: 'get', pool: { name: p.name, 'fill-level': p['fill-level'], levels: poolLevels(w, p.name) } };
  }
}

/** Duffy-only: what each pool is, for requests by type/arch/platform. Kept out of /pools, whose shape clients check. */
@ApiTags('pool-profiles')
@Controller('pool-profiles')
@UseGuards(BasicAuthGuard)
export class PoolProfilesController {
  constructor(private readonly catalog: Catalog) {}

  @ApiAnswer(200, 'get', 'pool_profiles', PoolProfileView, true)
  @Get()
  list() {
    return {
      action: 'get',
      pool_profiles: this.catalog.pools.map((p) => ({
        name: p.name,
        type: p.type,
        arch: p.arch,
        platform: p.platform,
        driver: p.driver,
        'fill-level': p['fill-level'],
        'release-policy': p['release-policy'],
      })),
    };
  }
}
