import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { Controller, Get, HttpCode, Post, UseGuards } from '@nestjs/common';
import { refuse } from '../domain/errors.js';
import type { Actor } from '../application/commands.js';
import { Ledger } from '../application/ledger.service.js';
import { ReadSide } from '../application/read-side.service.js';
import { recentUsageMs } from '../domain/fair-queue.js';
import { gini, jain, percentile } from '../domain/statistics.js';
import { BasicAuthGuard, CurrentActor } from './auth.js';

const HOUR = 3600 * 1000;
const round = (x: number, digits = 4) => Number(x.toFixed(digits));
const strip = ({ __id, ...doc }: Record<string, unknown>) => (void __id, doc);

/** Ops figures from the projections (admin only): how worn the hardware is and how fairly it is shared. */
@ApiTags('ops')
@Controller('stats')
@UseGuards(BasicAuthGuard)
export class StatsController {
  constructor(
    private readonly readSide: ReadSide,
    private readonly ledger: Ledger,
  ) {}

  private async fresh(actor: Actor) {
    if (!actor.tenant.isAdmin) refuse('forbidden', 'only admins may read stats');
    await this.readSide.caughtUp(this.ledger.world.position);
  }

  @ApiOperation({ summary: 'hardware stress per pool, platform and machine (admin)' })
  @Get('stress')
  async stress(@CurrentActor() actor: Actor) {
    await this.fresh(actor);
    const machines = await this.readSide.store.find('machine_stress');
    const pools = await this.readSide.store.find('pool_stress');
    return {
      action: 'get',
      pools: pools.map((p) => {
        const busy = machines.filter((m) => m.pool === p.pool).map((m) => Number(m.busy_ms));
        // Gini of busy time: 0 = wear spread evenly over the pool, 1 = one machine does all the work.
        return { ...strip(p), busy_gini: round(gini(busy)) };
      }),
      platforms: (await this.readSide.store.find('platform_stress')).map(strip),
      machines: machines.map(strip),
    };
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
    await this.fresh(actor);
    const now = Date.now();
    const capacity = Number((await this.readSide.store.get('capacity', 'all'))?.machines ?? 0);
    const tenants = (await this.readSide.store.find('tenant_usage')).map((t) => {
      const intervals = (t.intervals as Array<[number, number]>).map(([start, end]) => ({ start, end }));
      const hours = (windowMs: number) => round(recentUsageMs(intervals, now, windowMs) / HOUR, 3);
      const waits = t.waits_ms as number[];
      return {
        tenant: t.tenant,
        active_machines: t.active_machines,
        share_of_capacity: capacity ? round(Number(t.active_machines) / capacity) : 0,
        machine_hours: { '1h': hours(HOUR), '24h': hours(24 * HOUR), '7d': hours(7 * 24 * HOUR) },
        wait_ms: { p50: waits.length ? percentile(waits, 50) : null, p95: waits.length ? percentile(waits, 95) : null },
      };
    });
    // Jain's index over the tenants that used machines in the last 24 h: 1 = equal shares.
    const used = tenants.map((t) => t.machine_hours['24h']).filter((h) => h > 0);
    return { action: 'get', capacity, jain_index_24h: used.length ? round(jain(used)) : null, tenants };
  }
}
