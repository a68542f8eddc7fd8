import { type Doc, documentProjection, ms } from './projection.js';

const MACHINES = 'machine_stress';
const POOLS = 'pool_stress';
const PLATFORMS = 'platform_stress';

const zero = { allocations: 0, busy_ms: 0, provisioning_failures: 0, health_check_failures: 0, quarantines: 0 };
type Counters = typeof zero;

/** Hardware stress per machine, rolled up by pool and by platform family: what wear levelling is judged on. */
export const machineStress = documentProjection({
  name: 'machine-stress',
  // 2: health-check failures apart; a failed hand-over is no allocation. 3: nor is a failed session's machine.
  version: 3,
  collections: [MACHINES, POOLS, PLATFORMS],
  fold(docs, e) {
    if (e.type === 'MachineRegistered') {
      const { hostname, pool, machineId } = e.data;
      docs.put(MACHINES, hostname, { hostname, machine_id: machineId, pool, platform: null, ...zero, last_used: null, reserved_at: null });
      const p = docs.get(POOLS, pool);
      docs.put(POOLS, pool, { pool, machines: Number(p?.machines ?? 0) + 1, ...counters(p) });
      return;
    }
    const hostname = hostOf(e);
    const m = hostname ? docs.get(MACHINES, hostname) : undefined;
    if (!m || !hostname) return;
    const add: Partial<Counters> = {};
    // Folded in place, and written once per batch.
    const next: Doc = m;
    switch (e.type) {
      case 'MachineReserved':
        add.allocations = 1;
        Object.assign(next, { platform: e.data.platform, reserved_at: e.data.at, last_used: e.data.at });
        break;
      case 'MachineReleased':
      case 'MachineReservationCancelled':
        add.busy_ms = m.reserved_at ? ms(String(m.reserved_at), e.data.at) : 0;
        // A failed session ended before its hand-over (a restart, a caller gone, a timeout): not an allocation.
        if (m.reserved_at && e.type === 'MachineReleased' && e.data.reason === 'failed') add.allocations = -1;
        Object.assign(next, { reserved_at: null, last_used: e.data.at });
        break;
      case 'ProvisioningFailed':
        if (e.data.action === 'health_check') add.health_check_failures = 1;
        else add.provisioning_failures = 1;
        if (e.data.sessionId !== null && m.reserved_at && (e.data.action === 'provision' || e.data.action === 'contextualize')) {
          // The hand-over failed: the tenant never used it, so the attempt is not counted as an allocation.
          add.allocations = -1;
          add.busy_ms = ms(String(m.reserved_at), e.data.at);
          next.reserved_at = null;
        }
        break;
      case 'MachineQuarantined':
        add.quarantines = 1;
        break;
      default:
        return;
    }
    bump(next, add);
    docs.put(MACHINES, hostname, next);
    const pool = String(m.pool);
    docs.put(POOLS, pool, bump(docs.get(POOLS, pool) ?? { pool, machines: 0, ...zero }, add));
    const platform = (next.platform as string | null) ?? null;
    if (platform !== null) docs.put(PLATFORMS, platform, bump(docs.get(PLATFORMS, platform) ?? { platform, ...zero }, add));
  },
});

function counters(d: Doc | undefined): Counters {
  return Object.fromEntries(Object.keys(zero).map((k) => [k, Number(d?.[k] ?? 0)])) as Counters;
}

function bump(d: Doc, add: Partial<Counters>): Doc {
  for (const k in add) d[k] = Number(d[k] ?? 0) + add[k as keyof Counters]!;
  return d;
}

/** Machine events name the machine by id; its stream name carries the hostname. */
function hostOf(e: { stream: string }): string | undefined {
  return e.stream.startsWith('machine-') ? e.stream.slice('machine-'.length) : undefined;
}
