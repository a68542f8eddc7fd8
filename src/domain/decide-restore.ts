import { type LostHours, stream, usedInUndoneHours } from './events.js';
import { type Decision, type InFlightView, NOTHING_IN_FLIGHT, type Write, expectedAt, isRefusal } from './decide.js';
import { decideServiceChange } from './decide-service.js';
import { type World, machineIdOfHost } from './world.js';

/**
 * What a restore records about the hours it undid, in one append: LedgerRestored (which keeps the session ids those
 * hours gave from being given again) and maintenance for each machine they used that this ledger knows and has not
 * retired: what such a machine holds (a tenant's key, a half-run playbook) is unknown here, so it is never handed out
 * until an operator has wiped it and put it back. Nothing to write when the restore undid nothing.
 */
export function decideRecordRestore(world: World, lost: LostHours, actor: string, now: string, inFlight: InFlightView = NOTHING_IN_FLIGHT): Decision {
  if (lost.sessionIdsUpTo <= world.lastSessionId && lost.lostSessions === 0 && lost.machines.length === 0) return [];
  const reason = usedInUndoneHours(now);
  const writes: Write[] = [{ stream: stream.restores, expected: expectedAt(inFlight.revision(stream.restores, world.restoresRevision)), events: [{ type: 'LedgerRestored', data: { ...lost, at: now } }] }];
  for (const hostname of lost.machines) {
    const id = machineIdOfHost(world, hostname);
    const m = id === undefined ? undefined : world.machines.get(id);
    if (!m || m.service === 'retired') continue;
    const d = decideServiceChange(m, { maintenance: true, reason }, actor, now, inFlight);
    if (!isRefusal(d)) writes.push(...d);
  }
  return writes;
}
