import { type DuffyEvent, type Hardware, type MachineService, stream } from './events.js';
import { hardwareProblem } from './hardware.js';
import { type Decision, type InFlightView, NOTHING_IN_FLIGHT, type Write, expectedAt, refusal } from './decide.js';
import { type Machine, isRetired } from './world.js';

/** What an admin asks of a machine: `{maintenance: true|false}`, `{retired: true}` or `{hardware: {...}}`, with an optional reason. */
export interface ServiceRequest {
  maintenance?: boolean;
  retired?: boolean;
  /** The machine's hardware as it is now: replaces what the ledger says (requests with `hardware` go by it). */
  hardware?: Hardware;
  reason?: string | null;
}

/**
 * Taking a machine out of service or putting it back. Pure; nothing to write when the machine already is where
 * it is asked to be (repeating a PUT writes nothing). A held machine is not taken from its session: it drains.
 */
export function decideServiceChange(m: Machine, req: ServiceRequest, actor: string | null, now: string, inFlight: InFlightView = NOTHING_IN_FLIGHT): Decision {
  const asked = [req.maintenance, req.retired, req.hardware].filter((v) => v !== undefined && v !== null).length;
  if (asked !== 1) return refusal('invalid', 'give exactly one of "maintenance": true|false, "retired": true or "hardware": {...}');
  if (req.hardware !== undefined) return decideHardware(m, req.hardware, req.reason ?? null, actor, now, inFlight);
  if (req.retired === false) return refusal('invalid', 'a retired node stays retired: "retired" can only be true');
  const target: MachineService = req.retired ? 'retired' : req.maintenance ? 'maintenance' : 'in-service';
  const reason = req.reason ?? null;
  // Retired by an admin, or through (`done`: registered so, or recycled after a non-reusable use): never back.
  if (isRetired(m) && target !== 'retired') return refusal('conflict', `node ${m.hostname} is retired`);
  // Back in service is also the way out of quarantine; anything else is a no-op when nothing would change.
  const unchanged = target === 'in-service' ? m.service === 'in-service' && m.state !== 'failed' : m.service === target && (reason === null || reason === m.serviceReason);
  if (unchanged) return [];
  return [onServiceStream(m, inFlight, { type: 'MachineServiceChanged', data: { machineId: m.id, hostname: m.hostname, service: target, reason, actor, at: now } })];
}

/** An admin's decision about a machine, on its own service stream at that stream's revision. */
function onServiceStream(m: Machine, inFlight: InFlightView, event: DuffyEvent): Write {
  const name = stream.service(m.hostname);
  return { stream: name, expected: expectedAt(inFlight.revision(name, m.serviceRevision)), events: [event] };
}

/** A machine's hardware as an admin now gives it; nothing to write when it is what the ledger says already. */
function decideHardware(m: Machine, hardware: Hardware, reason: string | null, actor: string | null, now: string, inFlight: InFlightView): Decision {
  const problem = hardwareProblem(hardware);
  if (problem) return refusal('invalid', problem);
  if (isRetired(m)) return refusal('conflict', `node ${m.hostname} is retired`);
  const keys = Object.keys(hardware);
  if (keys.length === Object.keys(m.hardware).length && keys.every((k) => m.hardware[k] === hardware[k])) return [];
  return [onServiceStream(m, inFlight, { type: 'MachineHardwareSet', data: { machineId: m.id, hostname: m.hostname, hardware: { ...hardware }, reason, actor, at: now } })];
}

/** The service a node shows: an admin's decision, `draining` while a session still holds it, `quarantined` by the health check. */
export type NodeService = 'in-service' | 'draining' | 'maintenance' | 'quarantined' | 'retired';

export function nodeService(m: Pick<Machine, 'service' | 'sessionId' | 'releasingSession' | 'state'>): NodeService {
  const service = m.service ?? 'in-service';
  if (service !== 'in-service') {
    if (m.sessionId !== null || m.releasingSession !== null || m.state === 'deprovisioning') return 'draining';
    // A machine through (`done`) stays retired whatever maintenance a restore, or an older Duffy, put it in.
    return m.state === 'done' ? 'retired' : service;
  }
  if (m.state === 'failed') return 'quarantined';
  if (m.state === 'done') return 'retired';
  return 'in-service';
}

/**
 * Gone for good, as lists show it: retired by an admin and no longer draining (a session that still holds it keeps
 * it listed until it ends), or used up (`done`).
 */
export const retiredForGood = (m: Machine) => m.retiredAt !== null || nodeService(m) === 'retired';

/** Where a machine counts, in pool levels and metrics alike: Duffy v3's levels, then Duffy's own. */
export const LEVELS = ['provisioning', 'ready', 'contextualizing', 'deployed', 'deprovisioning'] as const;
/** Duffy extension: where the other machines are (Duffy v3 clients ignore the extra keys). */
export const EXTRA_LEVELS = ['unused', 'maintenance', 'quarantined', 'failed', 'retired'] as const;
export type Level = (typeof LEVELS)[number] | (typeof EXTRA_LEVELS)[number];

/** The level a machine counts in, exactly one: draining machines count in their state, they are still in use. */
export function levelOf(m: Machine): Level | null {
  const service = nodeService(m);
  if (service === 'retired' || service === 'maintenance') return service;
  // Quarantined: waiting for its health check; failed: a health check has failed since.
  if (service === 'quarantined') return (m.healthCheckFailures ?? 0) > 0 ? 'failed' : 'quarantined';
  return m.state === 'done' || m.state === 'failed' ? null : m.state;
}
