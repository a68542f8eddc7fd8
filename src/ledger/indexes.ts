import type { MachineState } from './events.js';
import { OrderedSet } from './ordered-set.js';
import type { Machine } from './world.js';
import { preferred } from '../scheduling/policy.js';

/**
 * Indexes the World keeps as it folds, so that no decision and no per-event step scans every machine or session.
 * Each entry keeps a copy of the fields it is ordered by: the machine object changes in place, and an entry must be
 * found again under the key it was filed with.
 */

interface FreeEntry {
  state: MachineState;
  busyMs: number;
  allocations: number;
  id: number;
  machine: Machine;
}

/** Free machines per pool, in the policy's order of preference: ready first, then least worn (invariant 8). */
export class FreeIndex {
  private readonly pools = new Map<string, OrderedSet<FreeEntry>>();
  private readonly entries = new Map<number, FreeEntry>();

  /** Files the machine again after any change: out if it is no longer free, moved if its wear or readiness changed. */
  update(m: Machine, free: boolean): void {
    const old = this.entries.get(m.id);
    if (old) {
      if (free && old.state === m.state && old.busyMs === m.busyMs && old.allocations === m.allocations) return;
      this.pool(m.pool).delete(old);
      this.entries.delete(m.id);
    }
    if (!free) return;
    const entry: FreeEntry = { state: m.state, busyMs: m.busyMs, allocations: m.allocations, id: m.id, machine: m };
    this.pool(m.pool).insert(entry);
    this.entries.set(m.id, entry);
  }

  has(id: number): boolean {
    return this.entries.has(id);
  }

  size(pool: string): number {
    return this.pools.get(pool)?.size ?? 0;
  }

  /** The pool's free machines, most preferred first, lazily. */
  *inOrder(pool: string): Generator<Machine> {
    const set = this.pools.get(pool);
    if (set) for (const e of set) yield e.machine;
  }

  private pool(name: string): OrderedSet<FreeEntry> {
    let set = this.pools.get(name);
    if (!set) {
      set = new OrderedSet<FreeEntry>(preferred);
      this.pools.set(name, set);
    }
    return set;
  }
}

/** States where a playbook may be due (provision, contextualize, release or artifacts, health check). */
const WORK_STATES = new Set<MachineState>(['unused', 'provisioning', 'contextualizing', 'deprovisioning', 'failed']);

/**
 * What the provisioner looks at on each pass: machines in service that may need a playbook, in id order (the order
 * the machines were registered in), and per pool how many are ready and idle (its fill level counts those).
 */
export class WorkIndex {
  readonly machines = new OrderedSet<Machine>((a, b) => a.id - b.id);
  readonly readyIdle = new Map<string, number>();
  private readonly listed = new Set<number>();
  private readonly idle = new Set<number>();

  update(m: Machine): void {
    const inService = m.retiredAt === null;
    const work = inService && WORK_STATES.has(m.state);
    if (work !== this.listed.has(m.id)) {
      if (work) {
        this.machines.insert(m);
        this.listed.add(m.id);
      } else {
        this.machines.delete(m);
        this.listed.delete(m.id);
      }
    }
    const idle = inService && m.state === 'ready' && m.sessionId === null;
    if (idle !== this.idle.has(m.id)) {
      this.readyIdle.set(m.pool, (this.readyIdle.get(m.pool) ?? 0) + (idle ? 1 : -1));
      if (idle) this.idle.add(m.id);
      else this.idle.delete(m.id);
    }
  }
}

interface Lease {
  at: number;
  id: number;
}

/** Active sessions by expiry time, soonest first: the lease reaper reads only those due. */
export class LeaseIndex {
  private readonly set = new OrderedSet<Lease>((a, b) => a.at - b.at || a.id - b.id);
  private readonly leases = new Map<number, Lease>();

  /** `expiresAt` null: the session holds no lease (not active). */
  update(sessionId: number, expiresAt: string | null): void {
    const at = expiresAt === null ? null : Date.parse(expiresAt);
    const old = this.leases.get(sessionId);
    if (old && old.at === at) return;
    if (old) {
      this.set.delete(old);
      this.leases.delete(sessionId);
    }
    if (at === null) return;
    const lease = { at, id: sessionId };
    this.set.insert(lease);
    this.leases.set(sessionId, lease);
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
