import { describe, expect, it } from '@jest/globals';
import { decideRecordRestore } from '../../src/domain/decide-restore.js';
import { type Write, decideRegisterMachines } from '../../src/domain/decide.js';
import type { LostHours } from '../../src/domain/events.js';
import { nodeService } from '../../src/domain/decide-service.js';
import { AT, POOLS, given, machine, tenant } from '../support/given.js';

const lost = (over: Partial<LostHours> = {}): LostHours => ({ backup: '/b/monday', replacedKeptIn: '/d/replaced-x', sharedUpTo: '40', sessionIdsUpTo: 0, lostSessions: 0, machines: [], ...over });
const requested = (sessionId: number): [string, { type: 'MachineRequested'; data: { sessionId: number; tenantId: number; tenant: string; specs: never[]; expiresAt: string; at: string } }] => [
  `session-${sessionId}`,
  { type: 'MachineRequested', data: { sessionId, tenantId: 1, tenant: 'gamma', specs: [], expiresAt: AT, at: AT } },
];

describe('a restore records the hours it undid', () => {
  it('given a restore that undid nothing, then it writes nothing', () => {
    const world = given(tenant(1, 'gamma'), requested(1));
    expect(decideRecordRestore(world, lost({ sessionIdsUpTo: 1 }), 'duffy restore', AT)).toEqual([]);
  });

  it('given sessions 2-5 made after the backup, then new session ids start at 6, never lower, and a later restore of less does not lower them', () => {
    const world = given(tenant(1, 'gamma'), requested(1));
    const writes = decideRecordRestore(world, lost({ sessionIdsUpTo: 5, lostSessions: 4 }), 'duffy restore', AT) as Write[];
    expect(writes.map((w) => [w.stream, w.expected, w.events[0].type])).toEqual([['restores', 'no_stream', 'LedgerRestored']]);
    const after = given(tenant(1, 'gamma'), requested(1), ['restores', writes[0].events[0]]);
    expect([after.lastSessionId, after.restoresRevision]).toEqual([5, 0]);
    const again = decideRecordRestore(after, lost({ sessionIdsUpTo: 3, lostSessions: 1 }), 'duffy restore', AT) as Write[];
    expect(again[0].expected).toBe(0);
    expect(given(tenant(1, 'gamma'), requested(1), ['restores', writes[0].events[0]], ['restores', again[0].events[0]]).lastSessionId).toBe(5);
  });

  it('given machines those hours used, then the known ones not retired go to maintenance in the same decision, the unknown and retired ones are left', () => {
    const world = given(
      machine(1, 'a.test', 'p'),
      machine(2, 'b.test', 'p'),
      machine(3, 'c.test', 'p'),
      ['service-c.test', { type: 'MachineServiceChanged', data: { machineId: 3, hostname: 'c.test', service: 'retired', reason: null, actor: 'admin', at: AT } }],
    );
    const writes = decideRecordRestore(world, lost({ machines: ['A.test', 'c.test', 'new.test'] }), 'duffy restore', '2026-12-02T10:00:00.000Z') as Write[];
    expect(writes.map((w) => w.stream)).toEqual(['restores', 'service-a.test']);
    const after = given(machine(1, 'a.test', 'p'), [writes[1].stream, writes[1].events[0]]);
    const m = after.machines.get(1)!;
    expect([nodeService(m), m.serviceReason]).toEqual(['maintenance', 'used after the backup restored on 2026-12-02 (duffy restore): wipe it, then put it back']);
    expect(nodeService(world.machines.get(2)!)).toBe('in-service');
  });

  it('given a machine those hours used that this ledger never knew, then registered again (the configuration lists it), it starts in maintenance; another starts in service', () => {
    const restore = decideRecordRestore(given(), lost({ machines: ['New.test'] }), 'duffy restore', '2026-12-02T10:00:00.000Z') as Write[];
    const world = given(['restores', restore[0].events[0]]);
    const reg = (hostname: string) => ({ hostname, ipaddr: null, pool: 'vm-intel', reusable: true, data: {}, state: 'ready' as const });
    const writes = decideRegisterMachines(world, POOLS, { machines: [reg('new.test'), reg('other.test')], now: AT }) as Write[];
    const service = writes.filter((w) => w.stream.startsWith('service-'));
    expect(service.map((w) => [w.stream, w.expected])).toEqual([['service-new.test', 'no_stream']]);
    const after = given(['restores', restore[0].events[0]], ...writes.flatMap((w) => w.events.map((e): [string, typeof e] => [w.stream, e])));
    const byName = (h: string) => [...after.machines.values()].find((m) => m.hostname === h)!;
    expect([nodeService(byName('new.test')), byName('new.test').serviceReason]).toEqual(['maintenance', 'used after the backup restored on 2026-12-02 (duffy restore): wipe it, then put it back']);
    expect(nodeService(byName('other.test'))).toBe('in-service');
    // Registered, it leaves the list: retired and registered again some day, it is a new machine like any other.
    expect(after.unknownAtRestore.size).toBe(0);
  });
});
