import { describe, expect, it } from '@jest/globals';
import {
  type Decision,
  type InFlightView,
  NOTHING_IN_FLIGHT,
  decideEndSession,
  decideExtendSession,
  decideRecycle,
  decideRequestSession,
  isRefusal,
  refusalAfterWait,
  visibleSession,
} from '../../src/domain/decide.js';
import { DomainError } from '../../src/domain/errors.js';
import { type Session, isRetired } from '../../src/domain/world.js';
import type { DuffyEvent, NodeSpec } from '../../src/domain/events.js';
import { AT, DEFAULTS, LATER, POOLS, given, machine, queuedRequest, quarantined, startedSession, tenant, written } from '../support/given.js';

const request = (world: ReturnType<typeof given>, specs: NodeSpec[], extra: Partial<{ sessionId: number; tenantId: number; waitSeconds: number; inFlight: InFlightView; waiting: Session }> = {}) =>
  decideRequestSession(
    world,
    POOLS,
    DEFAULTS,
    { sessionId: extra.sessionId ?? 1, tenantId: extra.tenantId ?? 1, specs, now: AT, contextualize: () => false, waitSeconds: extra.waitSeconds, waiting: extra.waiting },
    extra.inFlight ?? NOTHING_IN_FLIGHT,
  );

const writesOf = (d: Decision) => {
  if (isRefusal(d)) throw new Error(`refused: ${d.reason}`);
  return written(d);
};

/** A decider's refusal value, or a thrown DomainError (the API-side helpers), as {kind, message}. */
const refusal = (fn: () => unknown) => {
  let result: unknown;
  try {
    result = fn();
  } catch (e) {
    if (e instanceof DomainError) return { kind: e.kind, message: e.message };
    throw e;
  }
  if (result && typeof result === 'object' && 'refused' in result) {
    const r = result as { refused: string; reason: string };
    return { kind: r.refused, message: r.reason };
  }
  throw new Error('expected a refusal');
};


describe('requesting machines', () => {
  it('given a ready machine, when a tenant asks for it, then request, start, quota claim and reservation are one decision with their guards', () => {
    const world = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'));
    expect(writesOf(request(world, [{ pool: 'metal-intel', quantity: 1 }]))).toEqual([
      {
        stream: 'session-1',
        expected: 'no_stream',
        events: [
          { type: 'MachineRequested', data: { sessionId: 1, tenantId: 1, tenant: 'alice', specs: [{ pool: 'metal-intel', quantity: 1 }], expiresAt: '2026-01-01T01:00:00.000Z', at: AT } },
          { type: 'SessionStarted', data: { sessionId: 1, machineIds: [1], expiresAt: '2026-01-01T01:00:00.000Z', at: AT } },
        ],
      },
      { stream: 'tenant-alice', expected: 0, events: [{ type: 'QuotaClaimed', data: { tenantId: 1, sessionId: 1, count: 1, at: AT } }] },
      { stream: 'machine-i1', expected: 0, events: [{ type: 'MachineReserved', data: { machineId: 1, hostname: 'i1', sessionId: 1, tenantId: 1, pool: 'metal-intel', platform: 'intel', affinity: 'established', contextualize: false, at: AT } }] },
    ]);
  });

  it('given nothing free and a wait, when a tenant asks, then the request is recorded as waiting, holding nothing', () => {
    const world = given(tenant(1, 'alice'), ...quarantined('metal-intel', 1));
    expect(writesOf(request(world, [{ pool: 'metal-intel', quantity: 1 }], { waitSeconds: 60 }))).toEqual([
      {
        stream: 'session-1',
        expected: 'no_stream',
        events: [
          { type: 'MachineRequested', data: { sessionId: 1, tenantId: 1, tenant: 'alice', specs: [{ pool: 'metal-intel', quantity: 1 }], expiresAt: '2026-01-01T01:00:00.000Z', at: AT } },
          { type: 'RequestQueued', data: { sessionId: 1, reason: 'pool metal-intel: 1 requested, 0 available', waitUntil: '2026-01-01T00:01:00.000Z', at: AT } },
        ],
      },
      // On the tenant's stream at its revision: instances sharing a ledger cannot both queue past the quota.
      { stream: 'tenant-alice', expected: 0, events: [{ type: 'QueueSpaceClaimed', data: { tenantId: 1, sessionId: 1, count: 1, at: AT } }] },
    ]);
  });

  describe('a request larger than its pools will ever be does not wait', () => {
    const retire = (machineId: number, hostname: string): [string, DuffyEvent] => [
      `machine-${hostname}`,
      { type: 'MachineServiceChanged', data: { machineId, hostname, service: 'retired', reason: 'scrapped', actor: 'admin', at: AT } },
    ];

    it('given metal-intel with 3 machines, 1 retired and 1 quarantined, when alice asks for 3 with a wait, then refused at once, naming what the pool has', () => {
      const world = given(tenant(1, 'alice'), tenant(2, 'bob'), machine(1, 'i1', 'metal-intel'), machine(2, 'i2', 'metal-intel'), retire(2, 'i2'), ...quarantined('metal-intel', 1));
      expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 3 }], { waitSeconds: 600 }))).toEqual({
        kind: 'invalid',
        message: "can't reserve nodes: pool metal-intel has 2 machine(s) that are not retired and 3 were asked for, so waiting cannot help",
      });
    });

    it('given the same pool, when alice asks for 2 with a wait, then it waits (the quarantined one may come back)', () => {
      const world = given(tenant(1, 'alice'), tenant(2, 'bob'), machine(1, 'i1', 'metal-intel'), machine(2, 'i2', 'metal-intel'), retire(2, 'i2'), ...quarantined('metal-intel', 1));
      const taken = writesOf(request(world, [{ pool: 'metal-intel', quantity: 1 }], { sessionId: 1, tenantId: 2 }));
      const busy = given(tenant(1, 'alice'), tenant(2, 'bob'), machine(1, 'i1', 'metal-intel'), machine(2, 'i2', 'metal-intel'), retire(2, 'i2'), ...quarantined('metal-intel', 1),
        ...taken.flatMap((w) => w.events.map((e): [string, DuffyEvent] => [w.stream, e])));
      expect(writesOf(request(busy, [{ pool: 'metal-intel', quantity: 2 }], { sessionId: 2, waitSeconds: 600 }))[0].events.map((e) => e.type)).toEqual(['MachineRequested', 'RequestQueued']);
    });

    it('given a machine registered `done` (through, in Duffy v3\'s words), then it counts as retired: a request for it is refused at once', () => {
      const done: [string, DuffyEvent] = ['machine-i2', { type: 'MachineRegistered', data: { machineId: 2, hostname: 'i2', ipaddr: null, pool: 'metal-intel', reusable: true, data: {}, state: 'done', at: AT } }];
      const world = given(tenant(1, 'alice'), tenant(2, 'bob'), machine(1, 'i1', 'metal-intel'), done);
      expect(isRetired(world.machines.get(2)!)).toBe(true);
      expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 2 }], { waitSeconds: 600 })).message).toBe(
        "can't reserve nodes: pool metal-intel has 1 machine(s) that are not retired and 2 were asked for, so waiting cannot help",
      );
    });

    it('given a request by type, then every pool of that type counts', () => {
      const world = given(tenant(1, 'alice'), ...quarantined('metal-intel', 1), ...quarantined('metal-amd', 1, 950));
      expect(writesOf(request(world, [{ type: 'baremetal', quantity: 2 }], { waitSeconds: 600 }))[0].events.map((e) => e.type)).toEqual(['MachineRequested', 'RequestQueued']);
      expect(refusal(() => request(world, [{ type: 'baremetal', quantity: 3 }], { waitSeconds: 600 })).message).toMatch(/baremetal has 2 machine\(s\) that are not retired and 3 were asked for/);
    });

    it('given specs that each fit their pools alone but not together, then refused at once: they share machines', () => {
      const world = given(tenant(1, 'alice'), ...quarantined('metal-intel', 2), ...quarantined('metal-amd', 1, 950));
      const queued = (specs: NodeSpec[]) => writesOf(request(world, specs, { waitSeconds: 600 }))[0].events.map((e) => e.type);
      expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 2 }, { pool: 'metal-intel', quantity: 2 }], { waitSeconds: 600 }))).toEqual({
        kind: 'invalid',
        message: "can't reserve nodes: the 2 specs together ask for 4 machines and their pools have at most 2 for them that are not retired, so waiting cannot help",
      });
      // By type across pools: baremetal is intel and amd (3), of which the named pool's 2 are shared.
      expect(refusal(() => request(world, [{ type: 'baremetal', quantity: 2 }, { pool: 'metal-intel', quantity: 2 }], { waitSeconds: 600 })).message).toMatch(/ask for 4 machines .* at most 3/);
      expect(queued([{ type: 'baremetal', quantity: 1 }, { pool: 'metal-intel', quantity: 2 }])).toEqual(['MachineRequested', 'RequestQueued']);
      expect(queued([{ pool: 'metal-amd', quantity: 1 }, { type: 'baremetal', quantity: 2 }])).toEqual(['MachineRequested', 'RequestQueued']);
    });

    it('given hardware no machine of the pool has, then refused at once; hardware some have still waits', () => {
      const big = (machineId: number, hostname: string): [string, DuffyEvent] => [
        `machine-${hostname}`,
        { type: 'MachineRegistered', data: { machineId, hostname, ipaddr: null, pool: 'metal-intel', reusable: true, data: {}, state: 'ready', hardware: { ram_gb: 512 }, at: AT } },
      ];
      const world = given(tenant(1, 'alice'), ...quarantined('metal-intel', 2), big(3, 'big'), [`machine-big`, { type: 'MachineQuarantined', data: { machineId: 3, reason: 'fan', at: AT } }]);
      expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 1, hardware: { min_ram_gb: 1024 } }], { waitSeconds: 600 })).message).toBe(
        "can't reserve nodes: pool metal-intel with min_ram_gb 1024 has 0 machine(s) that are not retired and 1 were asked for, so waiting cannot help",
      );
      expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 2, hardware: { min_ram_gb: 256 } }], { waitSeconds: 600 })).message).toMatch(/has 1 machine\(s\)/);
      expect(writesOf(request(world, [{ pool: 'metal-intel', quantity: 1, hardware: { min_ram_gb: 256 } }, { pool: 'metal-intel', quantity: 2 }], { waitSeconds: 600 }))[0].events.map((e) => e.type)).toEqual(['MachineRequested', 'RequestQueued']);
      expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 1, hardware: { min_ram_gb: 256 } }, { pool: 'metal-intel', quantity: 3 }], { waitSeconds: 600 })).kind).toBe('invalid');
    });
  });

  describe('the answer to a request that left the queue unserved', () => {
    const left: Array<[string, DuffyEvent]> = [
      ['session-1', { type: 'MachineRequested', data: { sessionId: 1, tenantId: 1, tenant: 'alice', specs: [{ pool: 'metal-intel', quantity: 2 }], expiresAt: LATER, at: AT } }],
      ['session-1', { type: 'RequestQueued', data: { sessionId: 1, reason: 'pool metal-intel: none free', waitUntil: LATER, at: AT } }],
      ['session-1', { type: 'SessionRejected', data: { sessionId: 1, reason: 'waited until 2026-01-01T00:01:00.000Z: pool metal-intel: 2 requested, 0 available', at: AT } }],
    ];
    const answer = (world: ReturnType<typeof given>) => refusalAfterWait(world, DEFAULTS, POOLS, world.sessions.get(1)!);

    it('given its wait ended, then a capacity refusal that says so', () => {
      const world = given(tenant(1, 'alice', { nodeQuota: 3 }), ...quarantined('metal-intel', 3), ...left);
      expect(answer(world)).toEqual({ kind: 'capacity', message: "can't reserve nodes: waited until 2026-01-01T00:01:00.000Z: pool metal-intel: 2 requested, 0 available" });
    });

    // Seen in the chaos test: a 403 whose words were the wait's end (the retirement landed before the answer).
    it('given its wait ended and its tenant was retired before the answer, then 403 for the retirement, in words that say so', () => {
      const world = given(tenant(1, 'alice', { nodeQuota: 3 }), ...quarantined('metal-intel', 3), ...left, ['tenant-alice', { type: 'TenantRetired', data: { tenantId: 1, at: AT } }]);
      expect(answer(world)).toEqual({ kind: 'forbidden', message: "can't reserve nodes: tenant alice was retired" });
    });

    it('given its wait ended and its quota was lowered under it before the answer, then the quota refusal a new request gets', () => {
      const world = given(tenant(1, 'alice', { nodeQuota: 3 }), ...quarantined('metal-intel', 3), ...left, ['tenant-alice', { type: 'TenantUpdated', data: { tenantId: 1, changes: { nodeQuota: 1 }, at: AT } }]);
      expect(answer(world)).toEqual({ kind: 'quota', message: "quota exceeded: tenant alice's quota is now 1, fewer than the 2 nodes asked for" });
    });
  });

  describe('what a tenant may queue is bounded by its quota', () => {
    const queued = (sessionId: number, quantity: number, tenantId = 1, name = 'alice') => queuedRequest(sessionId, quantity, { tenantId, name });

    it('given alice (quota 3) waiting for 2 machines, when she asks to wait for 2 more, then refused for quota, naming what waits', () => {
      const world = given(tenant(1, 'alice', { nodeQuota: 3 }), ...quarantined('metal-intel', 3), ...queued(1, 2));
      expect(world.tenants.get(1)!.waiting).toBe(2);
      expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 2 }], { sessionId: 2, waitSeconds: 60 }))).toEqual({
        kind: 'quota',
        message: 'quota exceeded: tenant alice has 0 of 3 nodes and 2 more waiting, and asked for 2 more',
      });
    });

    it('given alice (quota 3) waiting for 2 machines, when she asks for 2 that are free now, then refused too: they would take the room her queued request was let in with; 1 is served', () => {
      const world = given(tenant(1, 'alice', { nodeQuota: 3 }), machine(1, 'i1', 'metal-intel'), machine(2, 'i2', 'metal-intel'), ...queued(1, 2));
      expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 2 }], { sessionId: 2 }))).toEqual({
        kind: 'quota',
        message: 'quota exceeded: tenant alice has 0 of 3 nodes and 2 more waiting, and asked for 2 more',
      });
      expect(writesOf(request(world, [{ pool: 'metal-intel', quantity: 1 }], { sessionId: 2 })).flatMap((w) => w.events.map((e) => e.type))).toContain('SessionStarted');
      // Her queued request itself, served: its own machines are what waits.
      const waiting = world.sessions.get(1)!;
      expect(writesOf(request(world, [{ pool: 'metal-intel', quantity: 2 }], { sessionId: 1, waiting })).flatMap((w) => w.events.map((e) => e.type))).toContain('SessionStarted');
    });

    it('given alice (quota 3) with 2 machines on their way into the queue, when she asks to wait for 2 more, then refused too', () => {
      const world = given(tenant(1, 'alice', { nodeQuota: 3 }), ...quarantined('metal-intel', 3));
      const inFlight: InFlightView = { ...NOTHING_IN_FLIGHT, waiting: (t) => (t === 1 ? 2 : 0) };
      expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 2 }], { sessionId: 2, waitSeconds: 60, inFlight })).kind).toBe('quota');
    });

    it('given alice (quota 3) waiting for 2 machines, when she asks to wait for 1 more, then it waits', () => {
      const world = given(tenant(1, 'alice', { nodeQuota: 3 }), ...quarantined('metal-intel', 3), ...queued(1, 2));
      expect(writesOf(request(world, [{ pool: 'metal-intel', quantity: 1 }], { sessionId: 2, waitSeconds: 60 }))[0].events.map((e) => e.type)).toEqual(['MachineRequested', 'RequestQueued']);
    });

    it('given waiting requests that were served, rejected or cancelled, then they no longer count, and another tenant\'s never did', () => {
      const world = given(
        tenant(1, 'alice', { nodeQuota: 3 }),
        tenant(2, 'bob', { nodeQuota: 3 }),
        machine(1, 'i1', 'metal-intel'),
        ...quarantined('metal-intel', 2),
        ...queued(1, 1),
        ...queued(2, 1),
        ...queued(3, 1),
        ...queued(4, 3, 2, 'bob'),
        ['session-1', { type: 'SessionStarted', data: { sessionId: 1, machineIds: [1], expiresAt: LATER, at: AT } }],
        ['session-2', { type: 'SessionRejected', data: { sessionId: 2, reason: 'waited until the end', at: AT } }],
      );
      expect([world.tenants.get(1)!.waiting, world.tenants.get(2)!.waiting]).toEqual([1, 3]);
      expect(writesOf(request(world, [{ pool: 'metal-intel', quantity: 2 }], { sessionId: 5, waitSeconds: 60 }))[0].events.map((e) => e.type)).toEqual(['MachineRequested', 'RequestQueued']);
    });
  });

  it('given alice established on intel and more intel than amd machines free, when a new tenant asks by type, then it is established on amd, the less crowded family', () => {
    const world = given(...startedSession(), machine(2, 'i2', 'metal-intel'), machine(3, 'i3', 'metal-intel'), machine(4, 'a1', 'metal-amd'), tenant(2, 'bob'));
    const reserved = writesOf(request(world, [{ type: 'baremetal', quantity: 1 }], { sessionId: 2, tenantId: 2 }))
      .flatMap((w) => w.events)
      .filter((e) => e.type === 'MachineReserved');
    expect(reserved.map((e) => [e.data.hostname, e.data.platform, e.data.affinity])).toEqual([['a1', 'amd', 'established']]);
  });

  it("given bob's first reservation (on intel) still in flight and more amd than intel machines free, when bob asks by type again, then it is intel, kept", () => {
    const world = given(machine(1, 'i1', 'metal-intel'), machine(2, 'i2', 'metal-intel'), machine(3, 'a1', 'metal-amd'), machine(4, 'a2', 'metal-amd'), machine(5, 'a3', 'metal-amd'), tenant(2, 'bob'));
    const inFlight: InFlightView = { ...NOTHING_IN_FLIGHT, busy: (id) => id === 1, quota: (t) => (t === 2 ? 1 : 0), lastSessionId: () => 1, platform: (t) => (t === 2 ? 'intel' : null) };
    const reserved = writesOf(request(world, [{ type: 'baremetal', quantity: 1 }], { sessionId: 2, tenantId: 2, inFlight }))
      .flatMap((w) => w.events)
      .filter((e) => e.type === 'MachineReserved');
    expect(reserved.map((e) => [e.data.hostname, e.data.platform, e.data.affinity])).toEqual([['i2', 'intel', 'kept']]);
  });

  it('given a spec without a numeric quantity (a malformed body that reached the domain), when asked, then refused, never compared with the quota', () => {
    const world = given(tenant(1, 'alice', { nodeQuota: 2 }), machine(1, 'i1', 'metal-intel'));
    for (const specs of [[[]], [{ pool: 'metal-intel' }], [null], [{ pool: 'metal-intel', quantity: 1.5 }]] as unknown as NodeSpec[][]) {
      expect(refusal(() => request(world, specs)).kind).toBe('invalid');
    }
  });

  it('given a tenant lifetime above its maximum, when served, then the lease ends at the maximum', () => {
    const world = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'), ['tenant-alice', { type: 'TenantUpdated', data: { tenantId: 1, changes: { sessionLifetime: 86400, sessionLifetimeMax: 7200 }, at: AT } }]);
    const d = writesOf(request(world, [{ pool: 'metal-intel', quantity: 1 }]));
    expect((d[0].events[0] as Extract<DuffyEvent, { type: 'MachineRequested' }>).data.expiresAt).toBe('2026-01-01T02:00:00.000Z');
  });

  it('given the only machine is held, when another tenant asks, then 422-style capacity refusal naming what is missing', () => {
    const world = given(...startedSession(), tenant(2, 'bob'));
    expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 1 }], { sessionId: 2, tenantId: 2 }))).toEqual({
      kind: 'capacity',
      message: "can't reserve nodes: pool metal-intel: 1 requested, 0 available",
    });
  });

  it('given a machine promised to a request still being written, when another asks, then it is not handed out twice', () => {
    const world = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'));
    const inFlight: InFlightView = { ...NOTHING_IN_FLIGHT, busy: (id) => id === 1 };
    expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 1 }], { inFlight })).kind).toBe('capacity');
  });

  it('given another request of the same tenant in flight, when it asks, then its quota counts and the tenant write builds on that head', () => {
    const world = given(tenant(1, 'alice', { nodeQuota: 2 }), machine(1, 'i1', 'metal-intel'), machine(2, 'i2', 'metal-intel'));
    const inFlight: InFlightView = { ...NOTHING_IN_FLIGHT, busy: (id) => id === 1, quota: (t) => (t === 1 ? 1 : 0), revision: (s, known) => (s === 'tenant-alice' ? 1 : known), lastSessionId: () => 1 };
    const d = writesOf(request(world, [{ pool: 'metal-intel', quantity: 1 }], { sessionId: 2, inFlight }));
    expect(d[1]).toEqual({ stream: 'tenant-alice', expected: 1, events: [{ type: 'QuotaClaimed', data: { tenantId: 1, sessionId: 2, count: 1, at: AT } }] });
    expect(d[2].stream).toBe('machine-i2');
    expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 2 }], { sessionId: 2, inFlight })).kind).toBe('quota');
  });

  it('given a quota of 2 with 1 held, when the tenant asks for 2 more, then quota refusal with the numbers', () => {
    const world = given(...startedSession(), machine(2, 'i2', 'metal-intel'), machine(3, 'i3', 'metal-intel'), ['tenant-alice', { type: 'TenantUpdated', data: { tenantId: 1, changes: { nodeQuota: 2 }, at: AT } }]);
    expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 2 }], { sessionId: 2 }))).toEqual({
      kind: 'quota',
      message: 'quota exceeded: tenant alice has 1 of 2 nodes and asked for 2 more',
    });
  });

  it('given an unknown pool, when asked, then invalid (422, as Duffy v3)', () => {
    const world = given(tenant(1, 'alice'));
    expect(refusal(() => request(world, [{ pool: 'nope', quantity: 1 }]))).toEqual({ kind: 'invalid', message: "can't reserve nodes: unknown pool nope" });
  });

  it('given a spec naming a pool and a type, arch or platform the pool is not, when asked, then invalid, naming the clash', () => {
    const world = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'));
    expect(refusal(() => request(world, [{ pool: 'metal-intel', type: 'vm', quantity: 1 }]))).toEqual({ kind: 'invalid', message: "can't reserve nodes: pool metal-intel is baremetal x86_64 intel, not type vm" });
    expect(refusal(() => request(world, [{ pool: 'metal-intel', platform: 'amd', quantity: 1 }])).message).toMatch(/not platform amd$/);
    expect(writesOf(request(world, [{ pool: 'metal-intel', type: 'baremetal', platform: 'intel', quantity: 1 }]))).toHaveLength(3);
  });

  it('given a spec by type, arch or platform that no pool offers, when asked (also to wait), then invalid, naming what was asked', () => {
    const world = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'));
    expect(refusal(() => request(world, [{ type: 'vm', platform: 'amd', quantity: 1 }], { waitSeconds: 600 }))).toEqual({ kind: 'invalid', message: "can't reserve nodes: no pool offers vm amd" });
    expect(refusal(() => request(world, [{ type: 'baremetal', arch: 'aarch64', quantity: 1 }])).message).toBe("can't reserve nodes: no pool offers baremetal aarch64");
    expect(writesOf(request(world, [{ type: 'baremetal', platform: 'intel', quantity: 1 }]))).toHaveLength(3);
  });

  it('given an unknown tenant id, when an admin asks for it, then invalid with Duffy v3\'s words', () => {
    expect(refusal(() => request(given(tenant(1, 'alice')), [{ pool: 'metal-intel', quantity: 1 }], { tenantId: 99 }))).toEqual({ kind: 'invalid', message: "can't find tenant with id 99" });
  });

  it('given a retired tenant, when asked for, then invalid with Duffy v3\'s words', () => {
    const world = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'), ['tenant-alice', { type: 'TenantRetired', data: { tenantId: 1, at: AT } }]);
    expect(refusal(() => request(world, [{ pool: 'metal-intel', quantity: 1 }]))).toEqual({ kind: 'invalid', message: "tenant 'alice' isn't active" });
  });

});

describe('ending sessions', () => {
  it('given an active session, when done, then its end, the machine release and the quota return are one decision', () => {
    const world = given(...startedSession());
    expect(written(decideEndSession(world, world.sessions.get(1)!, { reason: 'done', now: LATER, recyclesInstantly: () => false }))).toEqual([
      { stream: 'session-1', expected: 1, events: [{ type: 'SessionReleased', data: { sessionId: 1, reason: 'done', at: LATER } }] },
      { stream: 'machine-i1', expected: 1, events: [{ type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'done', at: LATER } }] },
      { stream: 'tenant-alice', expected: 1, events: [{ type: 'QuotaReturned', data: { tenantId: 1, sessionId: 1, count: 1, at: LATER } }] },
    ]);
  });

  it('given a pool that needs no release playbook, when done, then the machine is back in service in the same write', () => {
    const world = given(...startedSession());
    const [, m] = decideEndSession(world, world.sessions.get(1)!, { reason: 'done', now: LATER, recyclesInstantly: () => true });
    expect(m.events.map((e) => e.type)).toEqual(['MachineReleased', 'MachineRecycled']);
  });

  it('given an ended session, when ended again, then nothing new is written', () => {
    const world = given(
      ...startedSession(),
      ['session-1', { type: 'SessionReleased', data: { sessionId: 1, reason: 'done', at: LATER } }],
      ['machine-i1', { type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'done', at: LATER } }],
      ['tenant-alice', { type: 'QuotaReturned', data: { tenantId: 1, sessionId: 1, count: 1, at: LATER } }],
    );
    expect(decideEndSession(world, world.sessions.get(1)!, { reason: 'done', now: LATER, recyclesInstantly: () => false })).toEqual([]);
    expect(world.machines.get(1)!.busyMs).toBe(3600_000);
  });

  it('given a session extended after its expiry was noticed, when the expiry is decided, then nothing is written', () => {
    const due = given(...startedSession());
    expect(decideEndSession(due, due.sessions.get(1)!, { reason: 'expired', now: LATER, recyclesInstantly: () => false }).map((w) => w.events[0].type)).toEqual(['SessionExpired', 'MachineReleased', 'QuotaReturned']);
    const extended = given(...startedSession(), ['session-1', { type: 'SessionExtended', data: { sessionId: 1, expiresAt: '2026-01-01T02:00:00.000Z', at: LATER } }]);
    expect(decideEndSession(extended, extended.sessions.get(1)!, { reason: 'expired', now: LATER, recyclesInstantly: () => false })).toEqual([]);
    expect(decideEndSession(extended, extended.sessions.get(1)!, { reason: 'done', now: LATER, recyclesInstantly: () => false })).not.toEqual([]);
  });

  it('given a released machine of a reuse pool, when recycled, then it is ready again', () => {
    const world = given(...startedSession(), ['machine-i1', { type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'done', at: LATER } }]);
    expect(written([decideRecycle(world.machines.get(1)!, 'reuse', LATER)!])).toEqual([
      { stream: 'machine-i1', expected: 2, events: [{ type: 'MachineRecycled', data: { machineId: 1, policy: 'reuse', state: 'ready', at: LATER } }] },
    ]);
  });

  it('given an active session, when extended past the maximum, then the expiry is clamped to created + max lifetime', () => {
    const world = given(...startedSession());
    expect(decideExtendSession(world.sessions.get(1)!, world.tenants.get(1)!, DEFAULTS, '+10h', AT)).toEqual([
      { stream: 'session-1', expected: 1, events: [{ type: 'SessionExtended', data: { sessionId: 1, expiresAt: '2026-01-01T02:00:00.000Z', at: AT } }] },
    ]);
    expect(decideExtendSession(world.sessions.get(1)!, world.tenants.get(1)!, DEFAULTS, 'tomorrow', AT)).toMatchObject({ refused: 'invalid' });
  });

  it("given bob, when he looks at alice's session, then it does not exist for him", () => {
    const world = given(...startedSession(), tenant(2, 'bob'));
    expect(refusal(() => visibleSession(world, 1, world.tenants.get(2)!)).kind).toBe('not_found');
    expect(visibleSession(world, 1, world.tenants.get(1)!).id).toBe(1);
  });
});
