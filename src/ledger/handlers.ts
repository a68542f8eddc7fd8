import { CommandHandler, type ICommandHandler } from '@nestjs/cqrs';
import { randomUUID } from 'node:crypto';
import { Catalog, digestKey } from './catalog.js';
import {
  EndSessionCommand,
  ExtendSessionCommand,
  RegisterMachineCommand,
  RegisterTenantCommand,
  RequestSessionCommand,
  UpdateTenantCommand,
} from './commands.js';
import {
  decideExtendSession,
  decideRegisterMachine,
  decideRegisterTenant,
  decideRequestSession,
  decideUpdateTenant,
  visibleSession,
} from './decide.js';
import { Metrics } from '../ops/metrics.js';
import { DomainError, refuse } from './errors.js';
import { Ledger } from './ledger.service.js';
import { InFlight, SessionLifecycle, failOnConflict, metaFor, now } from './session-lifecycle.js';
import type { Session } from './world.js';

@CommandHandler(RegisterTenantCommand)
export class RegisterTenantHandler implements ICommandHandler<RegisterTenantCommand> {
  constructor(private readonly ledger: Ledger) {}

  async execute(cmd: RegisterTenantCommand) {
    if (cmd.actor && !cmd.actor.tenant.isAdmin) refuse('forbidden', 'only admins may create tenants');
    if (this.ledger.world.tenantIdsByName.has(cmd.name)) refuse('conflict', `tenant ${cmd.name} already exists`);
    const apiKey = cmd.apiKey ?? randomUUID();
    const tenantId = await this.ledger.nextId('tenant');
    const outcomes = await this.ledger.commit(
      [decideRegisterTenant(this.ledger.world, { tenantId, name: cmd.name, apiKeyDigest: digestKey(apiKey), isAdmin: cmd.isAdmin, settings: cmd.settings, now: now() })],
      metaFor(cmd.actor),
    );
    if (!outcomes[0].ok) refuse('conflict', `tenant ${cmd.name} already exists`);
    return { tenant: this.ledger.world.tenants.get(tenantId)!, apiKey };
  }
}

@CommandHandler(UpdateTenantCommand)
export class UpdateTenantHandler implements ICommandHandler<UpdateTenantCommand> {
  constructor(
    private readonly ledger: Ledger,
    private readonly sessions: SessionLifecycle,
  ) {}

  async execute(cmd: UpdateTenantCommand) {
    if (!cmd.actor.tenant.isAdmin) refuse('forbidden', 'only admins may change tenants');
    const apiKey = cmd.newApiKey ? randomUUID() : undefined;
    const changes = { ...cmd.changes, ...(apiKey ? { apiKeyDigest: digestKey(apiKey) } : {}) };
    const outcomes = await this.ledger.decideAndCommit((world) => {
      const tenant = world.tenants.get(cmd.tenantId) ?? refuse('not_found', `tenant ${cmd.tenantId} not found`);
      const write = decideUpdateTenant(tenant, { changes, active: cmd.active, now: now() });
      return write ? [write] : [];
    }, metaFor(cmd.actor));
    failOnConflict(outcomes);
    const tenant = this.ledger.world.tenants.get(cmd.tenantId)!;
    if (tenant.retiredAt !== null) {
      // Retiring a tenant ends its sessions; their machines go back through release.
      for (const s of [...this.ledger.world.sessions.values()]) {
        if (s.tenantId === tenant.id && s.status === 'active') await this.sessions.end(s.id, 'tenant-retired', cmd.actor);
      }
    }
    return { tenant, apiKey };
  }
}

@CommandHandler(RegisterMachineCommand)
export class RegisterMachineHandler implements ICommandHandler<RegisterMachineCommand> {
  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
  ) {}

  async execute(cmd: RegisterMachineCommand) {
    if (cmd.actor && !cmd.actor.tenant.isAdmin) refuse('forbidden', 'only admins may register nodes');
    if (this.ledger.world.machineIdsByHostname.has(cmd.machine.hostname)) refuse('conflict', `node ${cmd.machine.hostname} already exists`);
    if (!this.catalog.pool(cmd.machine.pool)) refuse('invalid', `unknown pool ${cmd.machine.pool}`);
    const machineId = await this.ledger.nextId('machine');
    const outcomes = await this.ledger.commit(
      [decideRegisterMachine(this.ledger.world, this.catalog.profiles, { machineId, ...cmd.machine, now: now() })],
      metaFor(cmd.actor),
    );
    if (!outcomes[0].ok) refuse('conflict', `node ${cmd.machine.hostname} already exists`);
    return this.ledger.world.machines.get(machineId)!;
  }
}

@CommandHandler(RequestSessionCommand)
export class RequestSessionHandler implements ICommandHandler<RequestSessionCommand> {
  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
    private readonly inFlight: InFlight,
    private readonly sessions: SessionLifecycle,
    private readonly metrics: Metrics,
  ) {}

  async execute(cmd: RequestSessionCommand): Promise<Session> {
    const stop = this.metrics.allocation.startTimer();
    try {
      const session = await this.request(cmd);
      stop({ outcome: 'served' });
      return session;
    } catch (err) {
      stop({ outcome: err instanceof DomainError ? err.kind : 'error' });
      throw err;
    }
  }

  private async request(cmd: RequestSessionCommand): Promise<Session> {
    if (cmd.tenantId !== cmd.actor.tenant.id && !cmd.actor.tenant.isAdmin) refuse('forbidden', 'only admins may request nodes for another tenant');
    const reserved = await this.inFlight.serial(`tenant:${cmd.tenantId}`, () => this.reserve(cmd));
    return this.handedOver(reserved.sessionId, reserved.wanted, reserved.machineIds);
  }

  /** Decide and write the reservation; one tenant's reservations are written one after another (see InFlight.serial). */
  private async reserve(cmd: RequestSessionCommand): Promise<{ sessionId: number; wanted: number; machineIds: number[] }> {
    const meta = metaFor(cmd.actor);
    const wanted = cmd.specs.reduce((n, s) => n + s.quantity, 0);
    for (let attempt = 1; attempt <= 8; attempt++) {
      const world = this.ledger.world;
      const sessionId = this.inFlight.nextSessionId(world);
      // Decision and promise happen in one synchronous step: no other request can interleave.
      const plan = decideRequestSession(world, this.catalog.profiles, this.catalog.defaults, {
        sessionId,
        tenantId: cmd.tenantId,
        specs: cmd.specs,
        now: now(),
        contextualize: (pool) => this.catalog.pool(pool)?.contextualize ?? false,
        busy: (id) => this.inFlight.machines.has(id),
        pendingQuota: this.inFlight.quota.get(cmd.tenantId) ?? 0,
      });
      plan.machineIds.forEach((id) => this.inFlight.machines.add(id));
      this.inFlight.quota.set(cmd.tenantId, (this.inFlight.quota.get(cmd.tenantId) ?? 0) + wanted);
      this.inFlight.sessions.add(sessionId);
      let started = false;
      try {
        const outcomes = await this.ledger.commit([plan.requested, plan.claim, ...plan.reserves], meta);
        if (outcomes.every((o) => o.ok)) started = (await this.ledger.commit([plan.started], meta))[0].ok;
        if (!started) {
          // Another writer won a machine, the quota or the id: undo exactly what we wrote, then decide again.
          await this.sessions.abandon(sessionId, outcomes, 'a concurrent request took a machine first', meta);
          await this.ledger.catchUp();
        }
      } finally {
        plan.machineIds.forEach((id) => this.inFlight.machines.delete(id));
        const left = (this.inFlight.quota.get(cmd.tenantId) ?? wanted) - wanted;
        if (left > 0) this.inFlight.quota.set(cmd.tenantId, left);
        else this.inFlight.quota.delete(cmd.tenantId);
        this.inFlight.sessions.delete(sessionId);
      }
      // From here the ledger holds the whole reservation; the promises above are no longer needed.
      if (started) return { sessionId, wanted, machineIds: plan.machineIds };
    }
    return refuse('conflict', 'too many concurrent requests for the same machines; try again');
  }

  /**
   * A 201 hands over machines that are ready to use: wait (bounded) while playbooks provision and contextualize
   * them. A session that cannot be served in time is ended, so nothing leaks, and answered 503.
   */
  private async handedOver(sessionId: number, wanted: number, machineIds: number[]): Promise<Session> {
    const world = this.ledger.world;
    const done = () => {
      const s = world.sessions.get(sessionId)!;
      if (s.status !== 'active') return true;
      const held = s.machineIds.filter((id) => world.machines.get(id)?.sessionId === sessionId);
      return held.length === wanted && held.every((id) => world.machines.get(id)!.state === 'deployed');
    };
    const pools = machineIds.map((id) => this.catalog.pool(world.machines.get(id)!.pool)!);
    const timeoutMs = Math.max(...pools.map((p) => p['handover-timeout'])) * 1000;
    const inTime = await this.ledger.until(done, timeoutMs).then(
      () => true,
      () => false,
    );
    const s = world.sessions.get(sessionId)!;
    if (inTime && s.status === 'active') return s;
    if (!inTime) await this.sessions.end(sessionId, 'failed', null, 'provisioning did not finish in time');
    return refuse('unavailable', `can't provision nodes: ${world.sessions.get(sessionId)!.failure ?? 'provisioning did not finish in time'}`);
  }
}

@CommandHandler(EndSessionCommand)
export class EndSessionHandler implements ICommandHandler<EndSessionCommand> {
  constructor(private readonly sessions: SessionLifecycle) {}
  execute(cmd: EndSessionCommand) {
    return this.sessions.end(cmd.sessionId, cmd.reason, cmd.actor);
  }
}

@CommandHandler(ExtendSessionCommand)
export class ExtendSessionHandler implements ICommandHandler<ExtendSessionCommand> {
  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
  ) {}

  async execute(cmd: ExtendSessionCommand) {
    const outcomes = await this.ledger.decideAndCommit((world) => {
      const s = visibleSession(world, cmd.sessionId, cmd.actor.tenant);
      const tenant = world.tenants.get(s.tenantId)!;
      return [decideExtendSession(s, tenant, this.catalog.defaults, cmd.expiresAt, now())];
    }, metaFor(cmd.actor));
    failOnConflict(outcomes);
    return this.ledger.world.sessions.get(cmd.sessionId)!;
  }
}
