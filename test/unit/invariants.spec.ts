import { describe, expect, it } from '@jest/globals';
import { whoHad } from '../../src/audit/audit.js';
import { checkInvariants } from '../../src/audit/invariants.js';
import type { RecordedEvent } from '../../src/application/ports/event-store.port.js';
import type { DuffyEvent } from '../../src/domain/events.js';
import { AT, LATER, machine, recorded as ledger, tenant } from '../support/given.js';

const DEFAULTS = { nodeQuota: 5, sessionLifetime: 3600, sessionLifetimeMax: 7200 };
const RUN = { action: 'provision' as const, playbook: 'provision.yml', exitCode: 2, durationMs: 10, timedOut: false, tail: 'fatal' };

const reserve = (machineId: number, sessionId: number, tenantId = 1, at = AT): [string, DuffyEvent] => [
  `machine-m${machineId}`,
  { type: 'MachineReserved', data: { machineId, hostname: `m${machineId}`, sessionId, tenantId, pool: 'p', platform: 'intel', affinity: 'kept', contextualize: false, at } },
];
const failed = (machineId: number, sessionId: number, action: 'provision' | 'contextualize' | 'release', at = AT): [string, DuffyEvent] => [
  `machine-m${machineId}`,
  { type: 'ProvisioningFailed', data: { machineId, sessionId, action, error: 'exit 2', run: { ...RUN, action }, at } },
];
const released = (machineId: number, sessionId: number, at = LATER): [string, DuffyEvent] => [
  `machine-m${machineId}`,
  { type: 'MachineReleased', data: { machineId, sessionId, reason: 'done', at } },
];
const claim = (sessionId: number, count: number | null): [string, DuffyEvent] => [
  'tenant-a',
  { type: 'QuotaClaimed', data: { tenantId: 1, sessionId, count: count as number, at: AT } },
];
/** The requests the sessions of a history answer (the `ids` rule: a reservation for a session never requested is held by nobody). */
const requested = (...sessionIds: number[]): Array<[string, DuffyEvent]> =>
  sessionIds.map((sessionId) => [`session-${sessionId}`, { type: 'MachineRequested', data: { sessionId, tenantId: 1, tenant: 'a', specs: [{ pool: 'p', quantity: 1 }], expiresAt: LATER, at: AT } }]);
const machines = (n: number) => Array.from({ length: n }, (_, i) => machine(i + 1, `m${i + 1}`, 'p'));
const judged = (events: RecordedEvent[]) => checkInvariants(events, DEFAULTS).map((v) => v.invariant);

describe('replay judges the ledger by its own facts', () => {
  it('a failed provisioning gives the machine back: the next reservation of it is no breach, and who-had agrees', () => {
    const events = ledger(tenant(1, 'a'), ...machines(1), ...requested(1, 2), reserve(1, 1), failed(1, 1, 'provision'), reserve(1, 2, 1, LATER));
    expect(judged(events)).toEqual([]);
    expect(whoHad(events, 'm1', new Date(Date.parse(AT) + 1000))).toBeNull();
    expect(whoHad(events, 'm1', new Date(LATER))).toMatchObject({ sessionId: 2, tenant: 'a', until: null, ended: null });
  });

  it('a failed contextualize gives it back too; a failed release does not', () => {
    expect(judged(ledger(tenant(1, 'a'), ...machines(1), ...requested(1, 2), reserve(1, 1), failed(1, 1, 'contextualize'), reserve(1, 2)))).toEqual([]);
    const events = ledger(tenant(1, 'a'), ...machines(1), ...requested(1, 2), reserve(1, 1), failed(1, 1, 'release'), reserve(1, 2));
    expect(judged(events)).toEqual([1]);
    expect(checkInvariants(events, DEFAULTS)[0].positions).toEqual([5n, 7n]);
  });

  it('hardening item 1: 10 machines held against a quota of 2 with QuotaClaimed count null is a quota breach', () => {
    const events = ledger(tenant(1, 'a', { nodeQuota: 2 }), ...machines(10), ...requested(1), claim(1, null), ...Array.from({ length: 10 }, (_, i) => reserve(i + 1, 1)));
    const breaches = checkInvariants(events, DEFAULTS).filter((v) => v.invariant === 3);
    expect(breaches.length).toBe(8);
    expect(breaches[0].message).toBe('tenant 1 holds 3 machines over its quota of 2');
    expect(breaches.at(-1)!.message).toBe('tenant 1 holds 10 machines over its quota of 2');
  });

  it('counts reservations, not what QuotaClaimed says: a claim of 1 with 3 machines reserved breaches a quota of 2', () => {
    expect(judged(ledger(tenant(1, 'a', { nodeQuota: 2 }), ...machines(3), ...requested(1), claim(1, 1), reserve(1, 1), reserve(2, 1), reserve(3, 1)))).toEqual([3]);
  });

  it('a quota of 2 held over several sessions, with machines given back in between, is no breach', () => {
    const events = ledger(tenant(1, 'a', { nodeQuota: 2 }), ...machines(3), ...requested(1, 2), claim(1, 2), reserve(1, 1), reserve(2, 1), released(1, 1), claim(2, 1), reserve(3, 2), failed(3, 2, 'provision'), reserve(1, 2));
    expect(judged(events)).toEqual([]);
  });

  it('the default quota applies when the tenant has none', () => {
    expect(judged(ledger(tenant(1, 'a'), ...machines(6), ...requested(1), ...Array.from({ length: 6 }, (_, i) => reserve(i + 1, 1))))).toEqual([3]);
  });

  it('2: a release or a provisioning of a session that does not hold the machine', () => {
    expect(judged(ledger(tenant(1, 'a'), ...machines(1), released(1, 7)))).toEqual([2]);
    const provisioned: [string, DuffyEvent] = ['machine-m1', { type: 'MachineProvisioned', data: { machineId: 1, sessionId: 9, ipaddr: null, run: RUN, at: AT } }];
    expect(judged(ledger(tenant(1, 'a'), ...machines(1), ...requested(1), reserve(1, 1), provisioned))).toEqual([2]);
  });

  it('ids: an event names the machine, session and tenant of its stream, and a reservation the tenant that requested its session', () => {
    const messages = (...history: Array<[string, DuffyEvent]>) => checkInvariants(ledger(tenant(1, 'a'), tenant(2, 'b'), ...machines(2), ...requested(1), ...history), DEFAULTS).filter((v) => v.invariant === 'ids').map((v) => v.message);
    expect(messages(reserve(1, 1), released(1, 1))).toEqual([]);
    // Two sessions on one machine, the second's reservation naming another machine inside the first machine's stream.
    const [, other] = reserve(2, 1);
    expect(messages(['machine-m1', other])).toEqual(["machine-m1: MachineReserved names machine 2, the stream's machine is 1"]);
    // A reservation naming another tenant than the one that requested the session: its quota would not count it.
    expect(messages(reserve(1, 1, 2))).toEqual(["machine-m1: MachineReserved for session 1 names tenant 2, the session is tenant 1's"]);
    expect(messages(reserve(1, 777, 1))).toEqual(['machine-m1: MachineReserved for session 777, which was never requested']);
    expect(messages(['session-1', { type: 'SessionReleased', data: { sessionId: 2, reason: 'done', at: AT } } as DuffyEvent])).toEqual(['session-1: SessionReleased names session 2']);
    expect(messages(['tenant-b', { type: 'QuotaReturned', data: { tenantId: 1, sessionId: 1, count: 1, at: AT } } as DuffyEvent])).toEqual(["tenant-b: QuotaReturned names tenant 1, the stream's tenant is 2"]);
  });

  it('ids: a session requested twice, a machine event outside its machine\'s stream, and a session showing a machine never reserved for it', () => {
    const ids = (...history: Array<[string, DuffyEvent]>) => checkInvariants(ledger(tenant(1, 'a'), tenant(2, 'b'), ...machines(2), ...requested(1), ...history), DEFAULTS).filter((v) => v.invariant === 'ids').map((v) => v.message);
    const started = (machineIds: number[]): [string, DuffyEvent] => ['session-1', { type: 'SessionStarted', data: { sessionId: 1, machineIds, at: AT } }];
    // As a request is written: the session's events first, its reservations after, in one append.
    expect(ids(started([1]), reserve(1, 1))).toEqual([]);
    expect(ids(started([1, 2]), reserve(1, 1))).toEqual(['session-1: SessionStarted shows machine 2, never reserved for session 1']);
    expect(ids(['session-1', { type: 'MachineRequested', data: { sessionId: 1, tenantId: 2, tenant: 'b', specs: [{ pool: 'p', quantity: 1 }], expiresAt: LATER, at: AT } }])).toEqual([
      "session-1: MachineRequested requests session 1 again (tenant 2; the session is tenant 1's)",
    ]);
    expect(ids(reserve(1, 1), ['session-1', { type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'done', at: LATER } }])).toEqual([
      "session-1: MachineReleased names machine 1 outside that machine's stream",
    ]);
  });

  it('ids: a reservation or claim read before its request (a KurrentDB ledger of appends that were not yet atomic) is judged when the request comes', () => {
    const early = (tenantId: number): Array<[string, DuffyEvent]> => [
      tenant(1, 'a'), tenant(2, 'b'), ...machines(1),
      ['tenant-a', { type: 'QuotaClaimed', data: { tenantId: 1, sessionId: 5, count: 1, at: AT } }],
      reserve(1, 5, tenantId),
      ['session-5', { type: 'MachineRequested', data: { sessionId: 5, tenantId: 1, tenant: 'a', specs: [{ pool: 'p', quantity: 1 }], expiresAt: LATER, at: AT } }],
    ];
    const ids = (history: Array<[string, DuffyEvent]>) => checkInvariants(ledger(...history), DEFAULTS).filter((v) => v.invariant === 'ids');
    expect(ids(early(1))).toEqual([]);
    // The wrong tenant is named at the reservation's own position.
    expect(ids(early(2))).toEqual([{ invariant: 'ids', message: "machine-m1: MachineReserved for session 5 names tenant 2, the session is tenant 1's", positions: [5n] }]);
    expect(ids(early(1).slice(0, -1)).map((v) => v.message)).toEqual([
      'tenant-a: QuotaClaimed for session 5, which was never requested',
      'machine-m1: MachineReserved for session 5, which was never requested',
    ]);
  });

  it('who-had names an unknown host as an error, not as "nobody"', () => {
    expect(() => whoHad(ledger(tenant(1, 'a'), ...machines(1)), 'nosuch.host', new Date(AT))).toThrow('no machine nosuch.host in this ledger');
  });
});
