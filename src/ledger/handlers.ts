import { CommandHandler, type ICommandHandler } from '@nestjs/cqrs';
import { randomUUID } from 'node:crypto';
import { Catalog, digestKey } from './catalog.js';
import {
  CancelWaitingCommand,
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
  decideUpdateTenant,
  visibleSession,
} from './decide.js';
import { Metrics } from '../ops/metrics.js';
import { DomainError, refuse } from './errors.js';
import { Ledger } from './ledger.service.js';
import { InFlight, SessionLifecycle, failOnConflict, metaFor, now } from './session-lifecycle.js';
import { decideLeaveQueue, decideQueueRequest } from './decide.js';
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
      const write = decideUpdateTenant(tenant, { changes, active: cmd.active, now: now() }, world);
      return write ? [write] : [];
    }, metaFor(cmd.actor));
    failOnConflict(outcomes);
    const tenant = this.ledger.world.tenants.get(cmd.tenantId)!;
    if (tenant.retiredAt !== null) {
      // Retiring a tenant ends its sessions; their machines go back through release.
      for (const s of [...this.ledger.world.openSessions].map((id) => this.ledger.world.sessions.get(id)!)) {
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
    const meta = metaFor(cmd.actor);
    const reserved = await this.inFlight.serial(`tenant:${cmd.tenantId}`, async () => {
      try {
        return await this.sessions.reserve(cmd.tenantId, cmd.specs, meta);
      } catch (err) {
        if (!(err instanceof DomainError && err.kind === 'capacity' && cmd.waitSeconds > 0)) throw err;
        const sessionId = this.inFlight.nextSessionId(this.ledger.world);
        const queued = decideQueueRequest(this.ledger.world, {
          sessionId,
          tenantId: cmd.tenantId,
          specs: cmd.specs,
          reason: err.message.replace(/^can't reserve nodes: /, ''),
          waitSeconds: cmd.waitSeconds,
          defaults: this.catalog.defaults,
          now: now(),
        });
        failOnConflict(await this.ledger.commit([queued], meta));
        return { sessionId, wanted: 0, machineIds: [] as number[] };
      }
    });
    if (reserved.wanted > 0) return this.handedOver(reserved.sessionId, reserved.wanted, reserved.machineIds);
    // Queued: the queue serves it in fair-share order, or rejects it when its time is up.
    const world = this.ledger.world;
    await this.ledger.until(() => world.sessions.get(reserved.sessionId)!.status !== 'waiting', (cmd.waitSeconds + 30) * 1000).catch(() => undefined);
    const s = world.sessions.get(reserved.sessionId)!;
    if (s.status === 'active') return this.handedOver(s.id, cmd.specs.reduce((n, x) => n + x.quantity, 0), s.machineIds);
    return refuse('capacity', `can't reserve nodes: ${s.rejection ?? s.queue?.reason ?? 'no capacity'}`);
  }

  /** Decide and write the reservation; one tenant's reservations are written one after another (see InFlight.serial). */
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

@CommandHandler(CancelWaitingCommand)
export class CancelWaitingHandler implements ICommandHandler<CancelWaitingCommand> {
  constructor(private readonly ledger: Ledger) {}

  async execute(cmd: CancelWaitingCommand) {
    const outcomes = await this.ledger.decideAndCommit((world) => {
      const w = decideLeaveQueue(visibleSession(world, cmd.sessionId, cmd.actor.tenant), `cancelled by ${cmd.actor.tenant.name}`, now());
      return w ? [w] : [];
    }, metaFor(cmd.actor));
    failOnConflict(outcomes);
    return this.ledger.world.sessions.get(cmd.sessionId)!;
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
