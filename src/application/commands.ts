import { Command } from '@nestjs/cqrs';
import { type Hardware, type NodeSpec, type ReleaseReason, type TenantSettings } from '../domain/events.js';
import { type Machine, type Session, type Tenant } from '../domain/world.js';

/** Who asks; commands carry it so every event names its actor. */
export interface Actor {
  tenant: Tenant;
  requestId?: string;
}

export class RegisterTenantCommand extends Command<{ tenant: Tenant; apiKey: string }> {
  constructor(
    readonly actor: Actor | null,
    readonly name: string,
    readonly isAdmin: boolean,
    readonly settings: TenantSettings,
    readonly apiKey?: string,
  ) {
    super();
  }
}

export class UpdateTenantCommand extends Command<{ tenant: Tenant; apiKey?: string }> {
  constructor(
    readonly actor: Actor,
    readonly tenantId: number,
    readonly changes: Partial<TenantSettings>,
    readonly active: boolean | undefined,
    /** `reset`: issue a new key (answered once); a UUID: that key from now on (Duffy v3). */
    readonly apiKey: 'reset' | string | undefined,
  ) {
    super();
  }
}

export class RegisterMachineCommand extends Command<Machine> {
  constructor(
    readonly actor: Actor | null,
    readonly machine: { hostname: string; ipaddr: string | null; pool: string; reusable: boolean; data: Record<string, unknown>; state: Machine['state']; hardware?: Hardware },
  ) {
    super();
  }
}

export class RequestSessionCommand extends Command<Session> {
  constructor(
    readonly actor: Actor,
    readonly tenantId: number,
    readonly specs: NodeSpec[],
    /** Seconds to wait in the fair-share queue when no machine is free now (0: answer 422 at once). */
    readonly waitSeconds = 0,
    /**
     * Calls the listener if the caller hangs up before its answer (returns how to stop listening): a request still
     * waiting then leaves the queue, one in hand-over ends, instead of serving machines to nobody.
     */
    readonly onCallerGone?: (listener: () => void) => () => void,
  ) {
    super();
  }
}

export class EndSessionCommand extends Command<Session> {
  constructor(
    readonly actor: Actor | null,
    readonly sessionId: number,
    readonly reason: ReleaseReason,
  ) {
    super();
  }
}

export class ExtendSessionCommand extends Command<Session> {
  constructor(
    readonly actor: Actor,
    readonly sessionId: number,
    readonly expiresAt: string,
  ) {
    super();
  }
}

export class CancelWaitingCommand extends Command<Session> {
  constructor(
    readonly actor: Actor,
    readonly sessionId: number,
  ) {
    super();
  }
}
