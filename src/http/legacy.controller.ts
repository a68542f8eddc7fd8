import { ApiOkResponse, ApiOperation, ApiQuery, ApiResponse, ApiTags } from '@nestjs/swagger';
import { applyDecorators } from '@nestjs/common';
import { Controller, Get, Header, HttpException, Logger, type PipeTransform, Query, Req } from '@nestjs/common';
import type { Request } from 'express';
import { CommandBus } from '@nestjs/cqrs';
import { legacyHostname, legacyPool } from '../config/config.js';
import { templateError } from '../config/jinja.js';
import { Catalog } from '../application/catalog.js';
import { EndSessionCommand, ExtendSessionCommand, RequestSessionCommand, type Actor } from '../application/commands.js';
import { DomainError } from '../domain/errors.js';
import { Ledger } from '../application/ledger.service.js';
import { tenantByKey } from './auth.js';
import { RequestId, callerGoneOf } from './input.js';
import { idOf } from '../domain/events.js';
import { ReadViews } from './read-views.js';

/** What cico prints and retries on (Duffy v3's legacy wording); a `{"detail"}` object here would crash it. */
const FAILED = 'Failed to allocate nodes';
const NOT_RETURNED = 'Failed to return nodes on completion';
const NOT_EXTENDED = 'Failed to change expiration time';
const NO_SSID = 'Some parameters are absent';
const NO_INVENTORY = 'Failed to retrieve inventory of nodes';

/** How the document describes a legacy call: its query-string key (no Basic auth) and its old answers. */
const key = ApiQuery({ name: 'key', required: false, description: "the tenant's API key" });
const ssid = ApiQuery({ name: 'ssid', required: false, description: 'the session id' });
const text = (...values: string[]) => ({ type: 'string', enum: values });
const badKey = ApiResponse({
  status: 403,
  description: 'no key ({"detail": "Not authenticated"}) or an unknown one ({"msg": "Invalid duffy key"})',
  schema: { oneOf: [{ type: 'object', required: ['msg'], properties: { msg: { type: 'string' } } }, { type: 'object', required: ['detail'], properties: { detail: { type: 'string' } } }] },
});
const onSessionCall = (summary: string, failed: string) =>
  applyDecorators(ApiOperation({ summary, security: [] }), key, ssid, ApiOkResponse({ schema: text('Done', failed, NO_SSID) }), badKey);

/** A query parameter given twice counts once, by its last value, as FastAPI (Duffy v3) reads it. */
const lastValue = (v: unknown) => (Array.isArray(v) ? v.at(-1) : v);
class LastValues implements PipeTransform {
  transform(v: unknown): unknown {
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, lastValue(x)])) : lastValue(v);
  }
}

/**
 * These GETs change things (cico's API is like that): a HEAD, which Express would run as the GET (a link checker, a
 * monitor), must not hand out or give back machines.
 */
function onlyGet(req: Request): void {
  if (req.method !== 'HEAD') return;
  req.res?.setHeader('Allow', 'GET');
  throw new HttpException({ msg: 'Method Not Allowed: this call changes things, use GET' }, 405);
}

/** The paths of those calls: they serve GET alone (see unmatched.ts, which answers the methods a path serves). */
export const GET_ONLY_PATHS: ReadonlySet<string> = new Set(['/Node/get', '/Node/done', '/Node/fail']);

/**
 * The old Duffy API that cico 0.4.7 and old scripts speak: query-string key, no Basic auth, at the root path.
 * It answers with the old shapes, not Duffy v3's.
 */
@ApiTags('legacy cico')
@Controller()
export class LegacyController {
  private readonly log = new Logger('Legacy');

  constructor(
    private readonly commands: CommandBus,
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
    private readonly views: ReadViews,
  ) {}

  /** The key's tenant, retired or not; an unknown key is a 403. */
  private keyed(key: unknown, requestId?: string): Actor {
    // Duffy v3's answer (FastAPI's APIKeyQuery) to a call without a key, or with an empty one.
    if (key === undefined || key === '') throw new HttpException({ detail: 'Not authenticated' }, 403);
    const tenant = typeof key === 'string' && key.length <= 256 ? tenantByKey(this.ledger.world, key) : undefined;
    if (!tenant) throw new HttpException({ msg: 'Invalid duffy key' }, 403);
    return { tenant, requestId };
  }

  private actor(key: unknown, requestId?: string): Actor {
    const actor = this.keyed(key, requestId);
    if (actor.tenant.retiredAt !== null) throw new HttpException({ msg: 'Invalid duffy key' }, 403);
    return actor;
  }

  @ApiOperation({ summary: 'cico: get nodes (query key, ver, arch, count, flavor)', security: [] })
  @key
  @ApiQuery({ name: 'ver', required: false, description: 'default 7' })
  @ApiQuery({ name: 'arch', required: false, description: 'default x86_64' })
  @ApiQuery({ name: 'count', required: false, description: '1-100, default 1' })
  @ApiQuery({ name: 'flavor', required: false })
  @ApiOkResponse({ schema: { oneOf: [{ type: 'object', required: ['ssid', 'hosts'], properties: { ssid: { type: 'integer' }, hosts: { type: 'array', items: { type: 'string' } } } }, text(FAILED)] } })
  @badKey
  @Get('Node/get')
  @Header('Content-Type', 'application/json')
  async get(@Query(LastValues) q: Record<string, unknown>, @RequestId() requestId: string, @Req() req: Request) {
    onlyGet(req);
    const actor = this.keyed(q.key, requestId);
    // Duffy v3's Node/get answers any refusal of its API, a retired tenant's 403 included, as FAILED (cico then
    // reports it); a 403 {"msg"} object would crash cico's node get on body['hosts'].
    if (actor.tenant.retiredAt !== null) return JSON.stringify(FAILED);
    // Absent, the defaults; given empty, empty (Duffy v3 takes `?ver=` as "", which no pool map matches).
    const str = (v: unknown, d: string) => (typeof v === 'string' ? v : d);
    // Decimal digits only: Number() would also take "0x10", "1e1" or " 2".
    const count = q.count === undefined ? 1 : typeof q.count === 'string' && /^[0-9]{1,3}$/.test(q.count) ? Number(q.count) : NaN;
    let pool: string | undefined;
    try {
      pool = legacyPool(this.catalog.settings.config.legacy, { ver: str(q.ver, '7'), arch: str(q.arch, 'x86_64'), flavor: typeof q.flavor === 'string' ? q.flavor : undefined });
    } catch {
      // A pool template that cannot render these values: no pool, as when Duffy v3's API refuses the one it rendered.
      return JSON.stringify(FAILED);
    }
    if (!pool || !Number.isInteger(count) || count < 1 || count > 100) return JSON.stringify(FAILED);
    try {
      // cico waits for the hand-over too: if it hangs up meanwhile (a Jenkins abort), the session ends, as for POST /sessions.
      const s = await this.commands.execute(new RequestSessionCommand(actor, actor.tenant.id, [{ pool, quantity: count }], 0, callerGoneOf(req.res!)));
      return { ssid: s.id, hosts: s.machineIds.map((id) => this.hostname(this.ledger.world.machines.get(id)!.hostname)) };
    } catch (err) {
      if (err instanceof DomainError) return JSON.stringify(FAILED);
      throw err;
    }
  }

  @onSessionCall('cico: done with a session', NOT_RETURNED)
  @Get('Node/done')
  @Header('Content-Type', 'application/json')
  async done(@Query('key', LastValues) key: unknown, @Query('ssid', LastValues) ssid: unknown, @RequestId() requestId: string, @Req() req: Request) {
    onlyGet(req);
    const actor = this.actor(key, requestId);
    return this.onSession(ssid, NOT_RETURNED, (id) => this.commands.execute(new EndSessionCommand(actor, id, 'done')));
  }

  /** cico's "fail": keep the machines 6 more hours for debugging. */
  @onSessionCall('cico: keep the nodes of a failed job 6 h longer', NOT_EXTENDED)
  @Get('Node/fail')
  @Header('Content-Type', 'application/json')
  async fail(@Query('key', LastValues) key: unknown, @Query('ssid', LastValues) ssid: unknown, @RequestId() requestId: string, @Req() req: Request) {
    onlyGet(req);
    const actor = this.actor(key, requestId);
    return this.onSession(ssid, NOT_EXTENDED, (id) => this.commands.execute(new ExtendSessionCommand(actor, id, '+6h')));
  }

  /**
   * With a key, `[[hostname, ssid], ...]` of the key's tenant (an admin's: of every tenant). Without one (or an empty
   * one, as Duffy v3 reads it), every active session's nodes in Duffy v3's 14 columns, python-cicoclient's "full
   * inventory", unless the configuration turns that off (`legacy-public-inventory: false`).
   */
  @ApiOperation({ summary: 'cico: inventory of active sessions (the key\'s, or every one without a key)', security: [] })
  @key
  @ApiOkResponse({
    description: 'with a key [[hostname, ssid], ...]; without, the 14 columns of Duffy v3 per node; or a failure text when that is turned off',
    schema: { oneOf: [{ type: 'array', items: { type: 'array', items: { oneOf: [{ type: 'string', nullable: true }, { type: 'integer' }] } } }, text(NO_INVENTORY)] },
  })
  @badKey
  @Get('Inventory')
  @Header('Content-Type', 'application/json')
  async inventory(@Query('key', LastValues) key: unknown) {
    const keyless = key === undefined || key === '';
    if (keyless && !this.catalog.settings.config['legacy-public-inventory']) return JSON.stringify(NO_INVENTORY);
    const tenant = keyless ? undefined : this.actor(key).tenant;
    const w = await this.views.load({ sessions: { status: 'active' } });
    const sessions = [...w.sessions.values()].filter((s) => s.status === 'active' && (!tenant || tenant.isAdmin || s.tenantId === tenant.id));
    const rows = sessions.flatMap((s) => s.machineIds.map((id) => ({ s, m: w.machines.get(id)! })));
    if (tenant) return JSON.stringify(rows.map(({ s, m }) => [this.hostname(m.hostname), s.id]));
    // Duffy v3's columns: id, hostname, ip, chassis, used_count, state, comment (the ssid, as text), distro, rel, ver,
    // arch, pool, console_port, flavor.
    return JSON.stringify(rows.map(({ s, m }) => [m.id, this.hostname(m.hostname), m.ipaddr, null, 0, m.state, String(s.id), null, null, null, null, m.pool, null, null]));
  }

  /**
   * A host name through `legacy-mangle-hostname`; as registered where the template fails on it (a branch or a method
   * the start's trial never reached): the machines are the caller's by then, and a 500 would leave them held unknown.
   */
  private hostname(name: string): string {
    try {
      return legacyHostname(this.catalog.settings.config, name);
    } catch (err) {
      this.log.warn(`legacy-mangle-hostname failed on ${name} (${templateError(err)}): answered as registered`);
      return name;
    }
  }

  /**
   * Does `act` on session `ssid` and answers as Duffy v3's legacy calls do: "Done", or 200 with `failed` when the
   * session cannot be had (unknown, another tenant's, ended: which one is nobody else's business), or 200 "Some
   * parameters are absent" without an ssid. A malformed ssid is no session either (Duffy v3 forwards it to its API,
   * which refuses it).
   */
  private async onSession(ssid: unknown, failed: string, act: (id: number) => Promise<unknown>): Promise<string> {
    if (ssid === undefined || ssid === '') return JSON.stringify(NO_SSID);
    const id = idOf(ssid);
    if (id === undefined) return JSON.stringify(failed);
    try {
      await act(id);
    } catch (err) {
      if (err instanceof DomainError) return JSON.stringify(failed);
      throw err;
    }
    return JSON.stringify('Done');
  }
}
