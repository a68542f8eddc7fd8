import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { Controller, Get, HttpCode, Post, UseGuards } from '@nestjs/common';
import { refuse } from '../domain/errors.js';
import type { Actor } from '../application/commands.js';
import { Ledger } from '../application/ledger.service.js';
import { Catalog } from '../application/catalog.js';
import type { NodeSpec } from '../domain/events.js';
import { type Demand, fairShareJain } from '../../projections/fairness.projection.js';
import { type MachineStress, stressRollup } from '../../projections/machine-stress.projection.js';
import { ReadSide } from '../application/read-side.service.js';
import { HOUR_MS, MINUTE_MS, type MachineTimeBuckets, machineTimeMs } from '../domain/machine-time.js';
import { gini, percentile } from '../domain/statistics.js';
import { BasicAuthGuard, CurrentActor } from './auth.js';
import { strip } from './read-views.js';

const round = (x: number, digits = 4) => Number(x.toFixed(digits));

/** A machine held from `start` to `end` (ms), from `pool`. */
type BusySpell = [number, number, string?];

/** Ops figures from the projections (admin only): how worn the hardware is and how fairly it is shared. */
@ApiTags('ops')
@Controller('stats')
@UseGuards(BasicAuthGuard)
export class StatsController {
  constructor(
    private readonly readSide: ReadSide,
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
  ) {}

  /** The resource class (type/arch) fairness is measured in, as in the simulator: a pool's, or the first pool a spec fits. */
  private resourceOf(spec: { pool?: string } & Partial<NodeSpec>): string | undefined {
    const pool = spec.pool
      ? this.catalog.pool(spec.pool)
      : this.catalog.pools.find((p) => (!spec.type || p.type === spec.type) && (!spec.arch || p.arch === spec.arch) && (!spec.platform || p.platform === spec.platform));
    return pool && `${pool.type}/${pool.arch}`;
  }

  /** Each tenant's busy intervals, oldest first, from the fairness projection's chunks. */
  private async busySpells(): Promise<Map<string, BusySpell[]>> {
    const chunks = await this.readSide.store.find('usage_intervals');
    chunks.sort((a, b) => Number(a.chunk) - Number(b.chunk));
    const byTenant = new Map<string, BusySpell[]>();
    for (const c of chunks) {
      const tenant = String(c.tenant_id);
      const list = byTenant.get(tenant) ?? [];
      for (const spell of c.intervals as BusySpell[]) list.push(spell);
      byTenant.set(tenant, list);
    }
    return byTenant;
  }

  /** Every spell of holding and of waiting in the window, open ones up to `now`. */
  private async demands(usage: Array<Record<string, unknown>>, intervals: Map<string, BusySpell[]>, holding: Array<Record<string, unknown>>, now: number): Promise<Demand[]> {
    const out: Demand[] = [];
    const wait = (tenant: string, start: number, end: number, specs: NodeSpec[]) => {
      for (const spec of specs) {
        const resource = this.resourceOf(spec);
        if (resource) out.push({ tenant, resource, start, end, held: 0, waiting: spec.quantity });
      }
    };
    for (const t of usage) {
      const tenant = String(t.tenant_id);
      for (const [start, end, pool] of intervals.get(tenant) ?? []) {
        const resource = pool === undefined ? undefined : this.resourceOf({ pool });
        if (resource) out.push({ tenant, resource, start, end, held: 1, waiting: 0 });
      }
      for (const [start, end, specs] of (t.queued as Array<[number, number, NodeSpec[]]> | undefined) ?? []) wait(tenant, start, end, specs);
    }
    for (const h of holding) {
      const resource = this.resourceOf({ pool: String(h.pool) });
      if (resource) out.push({ tenant: String(h.tenant_id), resource, start: Date.parse(String(h.since)), end: now, held: 1, waiting: 0 });
    }
    for (const w of await this.readSide.store.find('request_wait')) {
      if (w.queued_at) wait(String(w.tenant_id), Date.parse(String(w.queued_at)), now, w.specs as NodeSpec[]);
    }
    return out;
  }

  /** `read` for an admin, on read models that hold everything written so far, whole (see ReadSide.readWhole). */
  private fresh<T>(actor: Actor, read: () => Promise<T>): Promise<T> {
    if (!actor.tenant.isAdmin) refuse('forbidden', 'only admins may read stats');
    return this.readSide.readWhole(this.ledger.world.position, read);
  }

  @ApiOperation({ summary: 'hardware stress per pool, platform and machine (admin)' })
  @Get('stress')
  async stress(@CurrentActor() actor: Actor) {
    const stored = await this.fresh(actor, () => this.readSide.store.find('machine_stress'));
    // By id as a number: the store's order is its keys' as text (1, 10, 2).
    stored.sort((a, b) => Number(a.machine_id) - Number(b.machine_id));
    // The family its pool serves as now (a pool's platform may change with the configuration); its last reservation's
    // only for a pool no longer configured.
    const machines = stored.map((m) => ({ ...strip(m), platform: this.catalog.pool(String(m.pool))?.platform ?? m.platform ?? null }) as MachineStress & Record<string, unknown>);
    const { pools, platforms } = stressRollup(machines, (busy) => round(gini(busy)));
    return { action: 'get', pools, platforms, machines };
  }

  /** Drop the read models and project the ledger from position 0 again. */
  @ApiOperation({ summary: 'rebuild every read model from position 0 (admin)' })
  @Post('rebuild')
  @HttpCode(202)
  async rebuild(@CurrentActor() actor: Actor) {
    if (!actor.tenant.isAdmin) refuse('forbidden', 'only admins may rebuild read models');
    await this.readSide.rebuild();
    return { action: 'post', rebuilt: this.readSide.runners.map((r) => r.projection.name) };
  }

  @ApiOperation({ summary: 'fairness per tenant (admin)' })
  @Get('fairness')
  async fairness(@CurrentActor() actor: Actor) {
    // The ledger's clock, which dated every hold: the host's clock set back would put every hold in the future (0 h).
    const now = this.ledger.clock.nowMs();
    const { capacity, usage, demands, machineTime, holding } = await this.fresh(actor, async () => {
      const usage = await this.readSide.store.find('tenant_usage');
      const intervals = await this.busySpells();
      const machineTime = new Map((await this.readSide.store.find('machine_time')).map((d) => [String(d.tenant_id), d]));
      const holding = await this.readSide.store.find('holding');
      return { capacity: Number((await this.readSide.store.get('capacity', 'all'))?.machines ?? 0), usage, machineTime, holding, demands: await this.demands(usage, intervals, holding, now) };
    });
    const fair = fairShareJain(demands, now - 24 * HOUR_MS, now);
    // Each tenant's machines held now (their holds' starts), grouped once rather than filtered per tenant.
    const openHolds = new Map<string, number[]>();
    for (const h of holding) {
      const starts = openHolds.get(String(h.tenant_id));
      if (starts) starts.push(Date.parse(String(h.since)));
      else openHolds.set(String(h.tenant_id), [Date.parse(String(h.since))]);
    }
    const tenants = usage.sort((a, b) => Number(a.tenant_id) - Number(b.tenant_id)).map((t) => {
      const time = machineTime.get(String(t.tenant_id));
      const open = openHolds.get(String(t.tenant_id)) ?? [];
      // In whole minutes (1 h) or hours (24 h, 7 d), the machines it holds now included, as the fair queue counts.
      const [perMinute, perHour] = [(time?.minutes ?? {}) as MachineTimeBuckets, (time?.hours ?? {}) as MachineTimeBuckets];
      const hours = (buckets: MachineTimeBuckets, windowMs: number, bucketMs: number) => round(machineTimeMs(buckets, open, now, windowMs, bucketMs) / HOUR_MS, 3);
      const waits = t.waits_ms as number[];
      return {
        tenant: t.tenant,
        active_machines: t.active_machines,
        share_of_capacity: capacity ? round(Number(t.active_machines) / capacity) : 0,
        machine_hours: { '1h': hours(perMinute, HOUR_MS, MINUTE_MS), '24h': hours(perHour, 24 * HOUR_MS, HOUR_MS), '7d': hours(perHour, 7 * 24 * HOUR_MS, HOUR_MS) },
        wait_ms: { p50: waits.length ? percentile(waits, 50) : null, p95: waits.length ? percentile(waits, 95) : null },
        fair_share_24h: fair.shares.has(String(t.tenant_id)) ? round(fair.shares.get(String(t.tenant_id))!) : null,
      };
    });
    // Jain's index over 24 h of machine time held / max-min fair share (the simulator's): 1 = everyone got its fair share.
    return { action: 'get', capacity, jain_index_24h: fair.index === null ? null : round(fair.index), tenants };
  }
}
