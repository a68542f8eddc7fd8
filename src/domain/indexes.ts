import type { MachineState } from './events.js';
import { OrderedSet } from './ordered-set.js';
import type { Machine } from './world.js';
import { preferred } from './policy.js';

/**
 * Indexes the World keeps as it folds, so that no decision and no per-event step scans every machine or session.
 * Machines are filed under their own fields: `evolve` takes a machine out before an event changes it and files it
 * again after (see `file`/`unfile` in world.ts), so an entry is never stale and costs one tree node, nothing more.
 */

/** The one definition of a machine a request may take: ready, or unused and provisioned on demand. */
export const isFree = (m: Machine) =>
  (m.state === 'ready' || m.state === 'unused') && m.job === null && m.retiredAt === null && m.sessionId === null && m.service === 'in-service';

/** Free machines per pool, in the policy's order of preference: ready first, then least worn (invariant 8). */
export class FreeIndex {
  private readonly pools = new Map<string, OrderedSet<Machine>>();

  add(m: Machine): void {
    if (isFree(m)) this.pool(m.pool).insert(m);
  }

  remove(m: Machine): void {
    if (isFree(m)) this.pool(m.pool).delete(m);
  }

  size(pool: string): number {
    return this.pools.get(pool)?.size ?? 0;
  }

  /** The pool's free machines, most preferred first, lazily. */
  inOrder(pool: string): Iterable<Machine> {
    return this.pools.get(pool) ?? [];
  }

  private pool(name: string): OrderedSet<Machine> {
    let set = this.pools.get(name);
    if (!set) {
      set = new OrderedSet<Machine>(preferred);
      this.pools.set(name, set);
    }
    return set;
  }
}

/** States where a playbook may be due (provision, contextualize, release or artifacts, health check). */
const WORK_STATES = new Set<MachineState>(['unused', 'provisioning', 'contextualizing', 'deprovisioning', 'failed']);
const needsWork = (m: Machine) => m.retiredAt === null && WORK_STATES.has(m.state);
const readyIdle = (m: Machine) => m.retiredAt === null && m.service === 'in-service' && m.state === 'ready' && m.sessionId === null;

/**
 * What the provisioner looks at on each pass: machines in service that may need a playbook, in id order (the order
 * the machines were registered in), and per pool how many are ready and idle (its fill level counts those).
 */
export class WorkIndex {
  readonly machines = new OrderedSet<Machine>((a, b) => a.id - b.id);
  readonly readyIdle = new Map<string, number>();

  add(m: Machine): void {
    if (needsWork(m)) this.machines.insert(m);
    if (readyIdle(m)) this.readyIdle.set(m.pool, (this.readyIdle.get(m.pool) ?? 0) + 1);
  }

  remove(m: Machine): void {
    if (needsWork(m)) this.machines.delete(m);
    if (readyIdle(m)) this.readyIdle.set(m.pool, this.readyIdle.get(m.pool)! - 1);
  }
}

interface Lease {
  at: number;
  id: number;
}

/**
 * Active sessions by expiry time, soonest first: the lease reaper reads only those due. Kept like the machine
 * indexes: `evolve` removes a session's lease before an event changes it and adds it again after (see `unlease` and
 * `lease` in world.ts), so no map from session to lease is needed; leases and nodes are reused, so a session that
 * starts and ends allocates nothing here.
 */
export class LeaseIndex {
  private readonly set = new OrderedSet<Lease>((a, b) => a.at - b.at || a.id - b.id);
  private readonly spare: Lease[] = [];
  /** The key `remove` looks a lease up by. */
  private readonly probe: Lease = { at: 0, id: 0 };

  add(sessionId: number, expiresAt: string): void {
    const lease = this.spare.pop() ?? { at: 0, id: 0 };
    lease.at = Date.parse(expiresAt);
    lease.id = sessionId;
    this.set.insert(lease);
  }

  /** Takes out the lease `add` filed under the same session and expiry (none: nothing to do). */
  remove(sessionId: number, expiresAt: string): void {
    this.probe.at = Date.parse(expiresAt);
    this.probe.id = sessionId;
    const lease = this.set.get(this.probe);
    if (lease && this.set.delete(lease)) this.spare.push(lease);
  }

  get size(): number {
    return this.set.size;
  }

  /** Ids of active sessions whose lease ended at or before `nowMs`, soonest first (a copy: ending them changes the index). */
  expired(nowMs: number): number[] {
    const due: number[] = [];
    for (const lease of this.set) {
      if (lease.at > nowMs) break;
      due.push(lease.id);
    }
    return due;
  }
}
