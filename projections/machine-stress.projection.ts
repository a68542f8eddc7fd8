import { type Doc, documentProjection, ms } from './projection.js';

const MACHINES = 'machine_stress';

const zero = { allocations: 0, busy_ms: 0, provisioning_failures: 0, health_check_failures: 0, quarantines: 0 };
type Counters = typeof zero;
const COUNTERS = Object.keys(zero) as Array<keyof Counters>;

/**
 * Hardware stress per machine (by machine id: a host name registered again after its retirement is a new machine,
 * and the old one keeps its history): what wear levelling is judged on. Pools and platform families are rolled up
 * from these documents when read (`stressRollup`).
 */
export const machineStress = documentProjection({
  name: 'machine-stress',
  // 2: health-check failures apart; a failed hand-over is no allocation. 3: nor is a failed session's machine.
  // 4: one document per machine id, with `retired`; pools and platforms rolled up when read.
  // 5: nor is a machine released (expired, done, cancelled) before its hand-over was done.
  version: 5,
  collections: [MACHINES],
  fold(docs, e) {
    if (e.type === 'MachineRegistered') {
      const { hostname, pool, machineId, state } = e.data;
      docs.put(MACHINES, machineId, { hostname, machine_id: machineId, pool, platform: null, ...zero, last_used: null, reserved_at: null, handover_steps: 0, retired: state === 'done' });
      return;
    }
    const machineId = (e.data as { machineId?: number }).machineId;
    const m = machineId === undefined ? undefined : docs.get(MACHINES, String(machineId));
    if (!m) return;
    const add: Partial<Counters> = {};
    switch (e.type) {
      case 'MachineReserved':
        add.allocations = 1;
        // The playbooks still to run before the tenant has it (the World's provisioning, then contextualizing).
        Object.assign(m, { platform: e.data.platform, reserved_at: e.data.at, last_used: e.data.at, handover_steps: Number(e.data.provision === true) + Number(e.data.contextualize) });
        break;
      case 'MachineProvisioned':
      case 'MachineContextualized':
        if (!m.reserved_at || !m.handover_steps) return;
        m.handover_steps = Number(m.handover_steps) - 1;
        break;
      case 'MachineReleased':
      case 'MachineReservationCancelled':
        add.busy_ms = m.reserved_at ? ms(String(m.reserved_at), e.data.at) : 0;
        // The tenant never had it: a failed session, or one ended (expired, done, cancelled) before its hand-over.
        if (m.reserved_at && ((e.type === 'MachineReleased' && e.data.reason === 'failed') || Number(m.handover_steps) > 0)) add.allocations = -1;
        Object.assign(m, { reserved_at: null, last_used: e.data.at, handover_steps: 0 });
        break;
      case 'ProvisioningFailed':
        if (e.data.action === 'health_check') add.health_check_failures = 1;
        else add.provisioning_failures = 1;
        if (e.data.sessionId !== null && m.reserved_at && (e.data.action === 'provision' || e.data.action === 'contextualize')) {
          // The hand-over failed: the tenant never used it, so the attempt is not counted as an allocation.
          add.allocations = -1;
          add.busy_ms = ms(String(m.reserved_at), e.data.at);
          m.reserved_at = null;
        }
        break;
      case 'MachineQuarantined':
        add.quarantines = 1;
        break;
      case 'MachineServiceChanged':
        if (e.data.service !== 'retired') return;
        m.retired = true;
        break;
      case 'MachineRecycled':
        if (e.data.state !== 'done') return;
        m.retired = true;
        break;
      default:
        return;
    }
    // Folded in place, and written once per batch.
    docs.put(MACHINES, String(machineId), bump(m, add));
  },
});

function bump(d: Doc, add: Partial<Counters>): Doc {
  for (const k in add) d[k] = Number(d[k] ?? 0) + add[k as keyof Counters]!;
  return d;
}

/** A machine's counters, its pool and platform family (its pool's as configured now, else its last reservation's), and whether it is retired. */
export type MachineStress = Counters & { pool: string; platform: string | null; retired: boolean };

/**
 * Pools and platform families rolled up from the machines: every machine's counters (retired ones' history
 * included); `machines` and the Gini coefficient of busy time count machines not retired.
 */
export function stressRollup(machines: readonly MachineStress[], gini: (xs: number[]) => number) {
  const sum = (list: readonly MachineStress[]) => Object.fromEntries(COUNTERS.map((k) => [k, list.reduce((n, m) => n + Number(m[k] ?? 0), 0)])) as Counters;
  const groups = (key: (m: MachineStress) => string | null) => {
    const by = new Map<string, MachineStress[]>();
    for (const m of machines) {
      const k = key(m);
      if (k === null) continue;
      const list = by.get(k);
      if (list) list.push(m);
      else by.set(k, [m]);
    }
    return [...by].sort(([a], [b]) => a.localeCompare(b));
  };
  // Gini of busy time: 0 = wear spread evenly over the group, 1 = one machine does all the work.
  const rolledUp = (list: readonly MachineStress[]) => {
    const inService = list.filter((m) => !m.retired);
    return { machines: inService.length, ...sum(list), busy_gini: gini(inService.map((m) => Number(m.busy_ms))) };
  };
  return {
    pools: groups((m) => m.pool).map(([pool, list]) => ({ pool, ...rolledUp(list) })),
    platforms: groups((m) => m.platform).map(([platform, list]) => ({ platform, ...rolledUp(list) })),
  };
}
