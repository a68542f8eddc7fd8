import { Injectable } from '@nestjs/common';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { Ledger } from '../application/ledger.service.js';
import { ReadSide } from '../application/read-side.service.js';
import { EXTRA_LEVELS, LEVELS, levelOf } from '../domain/decide-service.js';
import { machinesAsked } from '../domain/events.js';

/** Prometheus metrics, one registry per app (tests start several apps in one process). */
@Injectable()
export class Metrics {
  readonly registry = new Registry();
  readonly http = new Counter({ name: 'duffy_http_requests_total', help: 'HTTP requests by method, route and status', labelNames: ['method', 'route', 'status'], registers: [this.registry] });
  readonly allocation = new Histogram({
    name: 'duffy_allocation_seconds',
    help: 'Time to answer a machine request, hand-over included',
    labelNames: ['outcome'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 120, 600],
    registers: [this.registry],
  });
  readonly playbook = new Histogram({
    name: 'duffy_playbook_seconds',
    help: 'ansible-playbook run durations by action and outcome',
    labelNames: ['action', 'outcome'],
    buckets: [0.5, 1, 2, 5, 10, 30, 60, 300, 1800],
    registers: [this.registry],
  });
  readonly provisioningFailures = new Counter({ name: 'duffy_provisioning_failures_total', help: 'Machines a playbook run reported failed, by action and pool (all of a run that failed as a whole, which the ledger blames none of)', labelNames: ['action', 'pool'], registers: [this.registry] });

  /** Playbook runs under way in this process: a hung one shows here long before its timeout kills it. */
  private readonly running = new Set<{ action: string; since: number }>();

  /** Counts a run from now until the returned function is called. */
  runStarted(action: string): () => void {
    const run = { action, since: Date.now() };
    this.running.add(run);
    return () => this.running.delete(run);
  }

  constructor(ledger: Ledger, readSide: ReadSide) {
    collectDefaultMetrics({ register: this.registry, prefix: 'duffy_' });
    const registers = [this.registry];
    const running = this.running;
    new Gauge({
      name: 'duffy_playbook_runs',
      help: 'ansible-playbook runs under way in this process, by action',
      labelNames: ['action'],
      registers,
      collect() {
        this.reset();
        for (const r of running) this.inc({ action: r.action });
      },
    });
    new Gauge({
      name: 'duffy_playbook_oldest_run_seconds',
      help: 'Age of the oldest ansible-playbook run under way in this process (0 when none): alert on it well below playbook-timeout',
      registers,
      collect() {
        let since = Infinity;
        for (const r of running) since = Math.min(since, r.since);
        this.set(since === Infinity ? 0 : (Date.now() - since) / 1000);
      },
    });
    new Gauge({
      name: 'duffy_machines',
      help: 'Machines by pool and level (the pool levels of GET /pools/{name}: state, or out of service)',
      labelNames: ['pool', 'state'],
      registers,
      collect() {
        this.reset();
        // Every level of every pool, 0 included: a series that vanishes at 0 never fires an alert on free machines.
        const seen = new Set<string>();
        for (const m of ledger.world.machines.values()) {
          if (!seen.has(m.pool)) {
            seen.add(m.pool);
            for (const state of [...LEVELS, ...EXTRA_LEVELS]) this.set({ pool: m.pool, state }, 0);
          }
          const level = levelOf(m);
          if (level) this.inc({ pool: m.pool, state: level });
        }
      },
    });
    new Gauge({
      name: 'duffy_requests_in_handover',
      help: 'Active sessions still waiting for their machines to be handed over',
      registers,
      collect() {
        const w = ledger.world;
        let n = 0;
        for (const id of w.openSessions) {
          const s = w.sessions.get(id)!;
          if (s.status === 'active' && s.machineIds.some((m) => w.machines.get(m)?.state !== 'deployed')) n += 1;
        }
        this.set(n);
      },
    });
    new Gauge({
      name: 'duffy_queue_waiting',
      help: 'Requests waiting in the fair-share queue for machines (POST /sessions with "wait"), and the machines they ask for',
      labelNames: ['count'],
      registers,
      collect() {
        const w = ledger.world;
        let requests = 0;
        let machines = 0;
        for (const id of w.openSessions) {
          const s = w.sessions.get(id)!;
          if (s.status !== 'waiting') continue;
          requests += 1;
          machines += machinesAsked(s.specs);
        }
        this.set({ count: 'requests' }, requests);
        this.set({ count: 'machines' }, machines);
      },
    });
    new Gauge({
      name: 'duffy_projection_lag_ms',
      help: 'Milliseconds between an event and its projection (last batch)',
      registers,
      collect() {
        this.set(readSide.lagMs());
      },
    });
    new Gauge({ name: 'duffy_ledger_position', help: 'Ledger position the World has folded', registers, collect() { this.set(Number(ledger.world.position)); } });
  }
}
