import { describe, expect, it } from '@jest/globals';
import {
  decideAbandonRequest,
  decideEndSession,
  decideExtendSession,
  decideRecycle,
  decideRequestSession,
  decideSettleSession,
  visibleSession,
} from '../../src/ledger/decide.js';
import { DomainError } from '../../src/ledger/errors.js';
import type { DuffyEvent, NodeSpec } from '../../src/ledger/events.js';
import { AT, DEFAULTS, LATER, POOLS, given, machine, tenant, written } from '../support/given.js';

const request = (world: ReturnType<typeof given>, specs: NodeSpec[], extra: Partial<{ sessionId: number; tenantId: number; busy: (id: number) => boolean; pendingQuota: number }> = {}) =>
  decideRequestSession(world, POOLS, DEFAULTS, {
    sessionId: extra.sessionId ?? 1,
    tenantId: extra.tenantId ?? 1,
    specs,
    now: AT,
    contextualize: () => false,
    busy: extra.busy ?? (() => false),
    pendingQuota: extra.pendingQuota ?? 0,
  });

const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    if (e instanceof DomainError) return { kind: e.kind, message: e.message };
    throw e;
  }
  throw new Error('expected a refusal');
};

/** A tenant alice(1) holding session 1 on metal-intel-1. */
const started = (): Array<[string, DuffyEvent]> => [
  tenant(1, 'alice'),
  machine(1, 'i1', 'metal-intel'),
  ['session-1', { type: 'MachineRequested', data: { sessionId: 1, tenantId: 1, tenant: 'alice', specs: [{ pool: 'metal-intel', quantity: 1 }], expiresAt: LATER, at: AT } }],
  ['tenant-alice', { type: 'QuotaClaimed', data: { tenantId: 1, sessionId: 1, count: 1, at: AT } }],
  ['machine-i1', { type: 'MachineReserved', data: { machineId: 1, hostname: 'i1', sessionId: 1, tenantId: 1, pool: 'metal-intel', platform: 'intel', affinity: 'established', contextualize: false, at: AT } }],
  ['session-1', { type: 'SessionStarted', data: { sessionId: 1, machineIds: [1], at: AT } }],
];

describe('requesting machines', () => {
  it('given a ready machine, when a tenant asks for it, then request, quota claim, reservation and start are written with their guards', () => {
    const world = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'));
    const plan = request(world, [{ pool: 'metal-intel', quantity: 1 }]);
    expect(written([plan.requested, plan.claim, ...plan.reserves, plan.started])).toEqual([
      { stream: 'session-1', expected: 'no_stream', events: [{ type: 'MachineRequested', data: { sessionId: 1, tenantId: 1, tenant: 'alice', specs: [{ pool: 'metal-intel', quantity: 1 }], expiresAt: '2026-01-01T01:00:00.000Z', at: AT } }] },
      { stream: 'tenant-alice', expected: 0, events: [{ type: 'QuotaClaimed', data: { tenantId: 1, sessionId: 1, count: 1, at: AT } }] },
      { stream: 'machine-i1', expected: 0, events: [{ type: 'MachineReserved', data: { machineId: 1, hostname: 'i1', sessionId: 1, tenantId: 1, pool: 'metal-intel', platform: 'intel', affinity: 'established', contextualize: false, at: AT } }] },
      { stream: 'session-1', expected: 0, events: [{ type: 'SessionStarted', data: { sessionId: 1, machineIds: [1], at: AT } }] },
    ]);
  });

  it('given the only machine is held, when another tenant asks, then 422-style capacity refusal naming what is missing', () => {
    const world = given(...started(), tenant(2, 'bob'));
    expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 1 }], { sessionId: 2, tenantId: 2 }))).toEqual({
      kind: 'capacity',
      message: "can't reserve nodes: pool metal-intel: 1 requested, 0 available",
    });
  });

  it('given a machine promised to a request still being written, when another asks, then it is not handed out twice', () => {
    const world = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'));
    expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 1 }], { busy: (id) => id === 1 })).kind).toBe('capacity');
  });

  it('given a quota of 2 with 1 held, when the tenant asks for 2 more, then quota refusal with the numbers', () => {
    const world = given(...started(), machine(2, 'i2', 'metal-intel'), machine(3, 'i3', 'metal-intel'), ['tenant-alice', { type: 'TenantUpdated', data: { tenantId: 1, changes: { nodeQuota: 2 }, at: AT } }]);
    expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 2 }], { sessionId: 2 }))).toEqual({
      kind: 'quota',
      message: 'quota exceeded: tenant alice has 1 of 2 nodes and asked for 2 more',
    });
  });

  it('given an unknown pool, when asked, then not found', () => {
    const world = given(tenant(1, 'alice'));
    expect(refusal(() => request(world, [{ pool: 'nope', quantity: 1 }])).kind).toBe('not_found');
  });

  it('given a retired tenant, when it asks, then forbidden', () => {
    const world = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'), ['tenant-alice', { type: 'TenantRetired', data: { tenantId: 1, at: AT } }]);
    expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 1 }])).kind).toBe('forbidden');
  });

  it('given a request cut short after its reservation, when abandoned, then the machine, quota and session are all undone', () => {
    const history = started().slice(0, 5);
    const world = given(...history);
    expect(written(decideAbandonRequest(world, 1, 'interrupted', LATER))).toEqual([
      { stream: 'machine-i1', expected: 1, events: [{ type: 'MachineReservationCancelled', data: { machineId: 1, sessionId: 1, reason: 'interrupted', at: LATER } }] },
      { stream: 'tenant-alice', expected: 1, events: [{ type: 'QuotaReturned', data: { tenantId: 1, sessionId: 1, count: 1, at: LATER } }] },
      { stream: 'session-1', expected: 0, events: [{ type: 'SessionRejected', data: { sessionId: 1, reason: 'interrupted', at: LATER } }] },
    ]);
  });
});

describe('ending sessions', () => {
  it('given an active session, when done, then SessionReleased; when settled, then the machine is released and the quota returned', () => {
    const world = given(...started());
    const end = decideEndSession(world.sessions.get(1)!, 'done', LATER)!;
    expect(written([end])).toEqual([{ stream: 'session-1', expected: 1, events: [{ type: 'SessionReleased', data: { sessionId: 1, reason: 'done', at: LATER } }] }]);
    const after = given(...started(), ['session-1', end.events[0]]);
    expect(written(decideSettleSession(after, after.sessions.get(1)!, LATER))).toEqual([
      { stream: 'machine-i1', expected: 1, events: [{ type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'done', at: LATER } }] },
      { stream: 'tenant-alice', expected: 1, events: [{ type: 'QuotaReturned', data: { tenantId: 1, sessionId: 1, count: 1, at: LATER } }] },
    ]);
  });

  it('given a settled session, when settled again, then nothing new is written', () => {
    const world = given(
      ...started(),
      ['session-1', { type: 'SessionReleased', data: { sessionId: 1, reason: 'done', at: LATER } }],
      ['machine-i1', { type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'done', at: LATER } }],
      ['tenant-alice', { type: 'QuotaReturned', data: { tenantId: 1, sessionId: 1, count: 1, at: LATER } }],
    );
    expect(decideSettleSession(world, world.sessions.get(1)!, LATER)).toEqual([]);
    expect(decideEndSession(world.sessions.get(1)!, 'done', LATER)).toBeNull();
    expect(world.machines.get(1)!.busyMs).toBe(3600_000);
  });

  it('given a released machine of a reuse pool, when recycled, then it is ready again', () => {
    const world = given(...started(), ['machine-i1', { type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'done', at: LATER } }]);
    expect(written([decideRecycle(world.machines.get(1)!, 'reuse', LATER)!])).toEqual([
      { stream: 'machine-i1', expected: 2, events: [{ type: 'MachineRecycled', data: { machineId: 1, policy: 'reuse', state: 'ready', at: LATER } }] },
    ]);
  });

  it('given an active session, when extended past the maximum, then the expiry is clamped to created + max lifetime', () => {
    const world = given(...started());
    const w = decideExtendSession(world.sessions.get(1)!, world.tenants.get(1)!, DEFAULTS, '+10h', AT);
    expect(w.events).toEqual([{ type: 'SessionExtended', data: { sessionId: 1, expiresAt: '2026-01-01T02:00:00.000Z', at: AT } }]);
    expect(refusal(() => decideExtendSession(world.sessions.get(1)!, world.tenants.get(1)!, DEFAULTS, 'tomorrow', AT)).kind).toBe('invalid');
  });

  it("given bob, when he looks at alice's session, then it does not exist for him", () => {
    const world = given(...started(), tenant(2, 'bob'));
    expect(refusal(() => visibleSession(world, 1, world.tenants.get(2)!)).kind).toBe('not_found');
    expect(visibleSession(world, 1, world.tenants.get(1)!).id).toBe(1);
  });
});
