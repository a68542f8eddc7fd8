import { describe, expect, it } from '@jest/globals';
import { type Decision, NOTHING_IN_FLIGHT, type Refusal, type Write, decideExtendSession, decideRecordDefaults, defaultsChanges, decideRegisterMachines, decideRegisterTenant, decideUpdateTenant, parseExpiry } from '../../src/domain/decide.js';
import { machineIdOfHost } from '../../src/domain/world.js';
import { decideServiceChange } from '../../src/domain/decide-service.js';
import type { DuffyEvent } from '../../src/domain/events.js';
import { AT, DEFAULTS, LATER, given, heldSession, machine, queuedRequest, startedSession, tenant, written } from '../support/given.js';

const HOUR = 3600_000;
/** A refusal is a value: its kind, or 'accepted'. */
const kind = (d: Decision | number | string) => (typeof d === 'object' && 'refused' in d ? (d as Refusal).refused : 'accepted');
/** The one write of an accepted decision. */
const only = (d: Decision) => {
  if (!Array.isArray(d)) throw new Error(`refused: ${d.reason}`);
  expect(d).toHaveLength(1);
  return d[0];
};


const extendedTo = (by: string, now: string, history = startedSession(), byAdmin = false) => {
  const world = given(...history);
  const d = decideExtendSession(world.sessions.get(1)!, world.tenants.get(1)!, DEFAULTS, by, now, byAdmin);
  return Array.isArray(d) ? (d[0].events[0] as { data: { expiresAt: string } }).data.expiresAt : d;
};

describe('extending a session (Duffy v3: current expiry + delta, clamped to created_at + max)', () => {
  const at = (ms: number) => new Date(Date.parse(AT) + ms).toISOString();

  it('given an expiry in 1 h, when "+2m" is asked 10 minutes in, then it ends 1 h 2 m after creation, not 12 m', () => {
    expect(extendedTo('+2m', at(10 * 60_000))).toBe(at(HOUR + 2 * 60_000));
  });

  it('given an extended session, when extended again, then the deltas add up', () => {
    const once: Array<[string, DuffyEvent]> = [...startedSession(), ['session-1', { type: 'SessionExtended', data: { sessionId: 1, expiresAt: at(HOUR + 30 * 60_000), at: AT } }]];
    expect(extendedTo('+15m', AT, once)).toBe(at(HOUR + 45 * 60_000));
  });

  it('clamps to created_at + session_lifetime_max; takes compound deltas and ISO times', () => {
    expect(extendedTo('+6h', AT)).toBe(at(2 * HOUR));
    expect(extendedTo('+0h30m', AT)).toBe(at(HOUR + 30 * 60_000));
    expect(extendedTo(at(90 * 60_000), AT)).toBe(at(90 * 60_000));
    expect(extendedTo(at(10 * HOUR), AT)).toBe(at(2 * HOUR));
  });

  it('takes what Duffy v3 takes: a negative delta shortens, weeks and ms count, case and spaces do not matter', () => {
    expect(extendedTo('-30m', AT)).toBe(at(30 * 60_000));
    expect(extendedTo('+1W', AT)).toBe(at(2 * HOUR));
    expect(extendedTo('+ 1h 500ms', AT)).toBe(at(2 * HOUR));
    expect(extendedTo('+30m 1500ms', AT)).toBe(at(HOUR + 30 * 60_000 + 1_500));
  });

  it('clamps to no earlier than created_at (a past time ends the session at the next pass), as Duffy v3 does', () => {
    expect(extendedTo('-2h', AT)).toBe(AT);
    expect(extendedTo(new Date(0).toISOString(), AT)).toBe(AT);
  });

  it('records nothing when the expiry does not move', () => {
    expect(decideExtendSession(given(...startedSession()).sessions.get(1)!, given(...startedSession()).tenants.get(1)!, DEFAULTS, '+0s', AT)).toEqual([]);
  });

  it('does not clamp an admin to the tenant\'s maximum, as Duffy v3 does not, but to a time that can be written', () => {
    expect(extendedTo('+6h', AT, startedSession(), true)).toBe(at(7 * HOUR));
    expect(extendedTo('+9999999w9999999d', AT, startedSession(), true)).toMatchObject({ refused: 'invalid', reason: 'expires_at must be before the year 10000' });
    // A tenant is clamped first, so no extension of its is too far.
    expect(extendedTo('+9999999w9999999d', AT)).toBe(at(2 * HOUR));
  });

  it('given a lease an admin took past the maximum, a tenant\'s "+1h" keeps it (v3 would cut it back), and its "-30m" shortens it', () => {
    const granted: Array<[string, DuffyEvent]> = [...startedSession(), ['session-1', { type: 'SessionExtended', data: { sessionId: 1, expiresAt: at(10 * HOUR), at: AT } }]];
    const world = given(...granted);
    expect(decideExtendSession(world.sessions.get(1)!, world.tenants.get(1)!, DEFAULTS, '+1h', AT)).toEqual([]);
    expect(extendedTo('-30m', AT, granted)).toBe(at(9.5 * HOUR));
    expect(extendedTo(at(3 * HOUR), AT, granted)).toBe(at(3 * HOUR));
    // Once shortened below it, the maximum holds again.
    const shortened: Array<[string, DuffyEvent]> = [...granted, ['session-1', { type: 'SessionExtended', data: { sessionId: 1, expiresAt: at(90 * 60_000), at: AT } }]];
    expect(extendedTo('+6h', AT, shortened)).toBe(at(2 * HOUR));
  });

  describe('given a request that waited 50 minutes in the queue (lifetime = maximum = 2 h)', () => {
    const defaults = { ...DEFAULTS, sessionLifetime: 2 * 3600 };
    const served = at(50 * 60_000);
    const waited: Array<[string, DuffyEvent]> = [
      tenant(1, 'alice'),
      machine(1, 'i1', 'metal-intel'),
      ['session-1', { type: 'MachineRequested', data: { sessionId: 1, tenantId: 1, tenant: 'alice', specs: [{ pool: 'metal-intel', quantity: 1 }], expiresAt: at(2 * HOUR), at: AT } }],
      ['session-1', { type: 'RequestQueued', data: { sessionId: 1, reason: 'pool metal-intel: 1 requested, 0 available', waitUntil: at(HOUR), at: AT } }],
      ['tenant-alice', { type: 'QuotaClaimed', data: { tenantId: 1, sessionId: 1, count: 1, at: served } }],
      ['machine-i1', { type: 'MachineReserved', data: { machineId: 1, hostname: 'i1', sessionId: 1, tenantId: 1, pool: 'metal-intel', platform: 'intel', affinity: 'established', contextualize: false, at: served } }],
      ['session-1', { type: 'SessionStarted', data: { sessionId: 1, machineIds: [1], at: served, expiresAt: at(2 * HOUR + 50 * 60_000) } }],
    ];
    const extend = (by: string, history = waited) => {
      const world = given(...history);
      return decideExtendSession(world.sessions.get(1)!, world.tenants.get(1)!, defaults, by, served);
    };

    it('while it still waits, when it asks "+1h", then it is refused saying it waits (not that it is retired)', () => {
      const world = given(...waited.slice(0, 4));
      expect(decideExtendSession(world.sessions.get(1)!, world.tenants.get(1)!, defaults, '+1h', AT)).toEqual({
        refused: 'invalid',
        reason: 'session 1 is waiting for machines: its lease starts when it is served, and can be extended then',
      });
    });

    it('when the tenant asks "+1h", then its lease keeps the time it waited (it is already at the maximum from its start)', () => {
      expect(extend('+1h')).toEqual([]);
    });

    it('when it asks for a later time or a shorter lease, then the maximum counts from when it was served', () => {
      const to = (d: Decision) => (only(d).events[0] as { data: { expiresAt: string } }).data.expiresAt;
      expect(to(extend('-1h'))).toBe(at(HOUR + 50 * 60_000));
      const shortened: Array<[string, DuffyEvent]> = [...waited, ['session-1', { type: 'SessionExtended', data: { sessionId: 1, expiresAt: at(HOUR + 50 * 60_000), at: served } }]];
      expect(to(extend(at(10 * HOUR), shortened))).toBe(at(2 * HOUR + 50 * 60_000));
      expect(to(extend('+6h', shortened))).toBe(at(2 * HOUR + 50 * 60_000));
    });
  });

  it.each(['+', '+1', '1h', '+1x', '+1h+1h', '+-1h', 'tomorrow', ''])('refuses %p', (by) => {
    expect(kind(extendedTo(by, AT))).toBe('invalid');
  });

  it('parseExpiry adds to the base it is given, not to now', () => {
    expect(parseExpiry('+1h', 5 * HOUR)).toBe(6 * HOUR);
    expect(parseExpiry('-1h', 5 * HOUR)).toBe(4 * HOUR);
  });

  describe('an ISO time as Duffy v3 (pydantic) reads it', () => {
    // A time without an offset is UTC whatever the host's TZ: test/e2e/compat.e2e.spec.ts runs it under Asia/Tokyo.
    const utc = Date.UTC(2030, 0, 1, 10);

    it.each(['2030-01-01T10:00:00', '2030-01-01 10:00:00', '2030-01-01t10:00', '2030-01-01T10:00:00Z', '2030-01-01T12:00:00+02:00', '2030-01-01T05:30:00-0430'])('%p is 10:00 UTC', (t) => {
      expect(parseExpiry(t, 0)).toBe(utc);
    });

    it('a date alone is its midnight UTC; fractions of a second count', () => {
      expect(parseExpiry('2030-01-01', 0)).toBe(Date.UTC(2030, 0, 1));
      expect(parseExpiry('2030-01-01T10:00:00.250Z', 0)).toBe(utc + 250);
    });

    it.each(['2030-02-30T10:00:00', '2030-13-01', '2030-01-01T24:00:00', '2030-01-01T10:60', '2030-01-01T10', '2030-01-01T10:00:00+25:00', '1/1/2030', '2030-01-01T10:00:00 GMT'])('refuses %p', (t) => {
      expect(kind(parseExpiry(t, 0))).toBe('invalid');
    });
  });
});

describe('the last active admin', () => {
  const retire = (history: Array<[string, DuffyEvent]>, id: number) => {
    const world = given(...history);
    return decideUpdateTenant(world.tenants.get(id)!, { changes: {}, active: false, now: LATER }, world);
  };

  it('given one admin, when it is retired, then that is refused as a conflict', () => {
    expect(kind(retire([tenant(1, 'admin', { isAdmin: true }), tenant(2, 'alice')], 1))).toBe('conflict');
  });

  it('given a retired second admin, the first is still the last', () => {
    const history: Array<[string, DuffyEvent]> = [tenant(1, 'admin', { isAdmin: true }), tenant(2, 'b', { isAdmin: true }), ['tenant-b', { type: 'TenantRetired', data: { tenantId: 2, at: AT } }]];
    expect(kind(retire(history, 1))).toBe('conflict');
  });

  it('given two admins, when the other one has a write in flight (it may be retiring too), then this one stays', () => {
    const world = given(tenant(1, 'admin', { isAdmin: true }), tenant(2, 'b', { isAdmin: true }));
    const bRetiring = { ...NOTHING_IN_FLIGHT, changing: (s: string) => s === 'tenant-b' };
    expect(kind(decideUpdateTenant(world.tenants.get(1)!, { changes: {}, active: false, now: LATER }, world, bRetiring))).toBe('conflict');
    // Only claiming machines (a write the view accounts for): b stays an active admin, so a can go.
    const bClaiming = { ...NOTHING_IN_FLIGHT, revision: (s: string, known: number) => (s === 'tenant-b' ? known + 1 : known) };
    expect(kind(decideUpdateTenant(world.tenants.get(1)!, { changes: {}, active: false, now: LATER }, world, bClaiming))).toBe('accepted');
  });

  it('given two active admins, when one is retired, then the admins left are appended to the admins stream at its revision, in the same append', () => {
    const two: Array<[string, DuffyEvent]> = [tenant(1, 'admin', { isAdmin: true }), tenant(2, 'b', { isAdmin: true }), tenant(3, 'alice')];
    expect(written(retire(two, 1) as Write[])).toEqual([
      { stream: 'tenant-admin', expected: 0, events: [{ type: 'TenantRetired', data: { tenantId: 1, at: LATER } }] },
      { stream: 'admins', expected: 'no_stream', events: [{ type: 'ActiveAdminsChanged', data: { admins: [2], at: LATER } }] },
    ]);
    const checked: Array<[string, DuffyEvent]> = [...two, ['admins', { type: 'ActiveAdminsChanged', data: { admins: [1, 2], at: AT } }]];
    expect(written(retire(checked, 2) as Write[])[1]).toMatchObject({ stream: 'admins', expected: 0, events: [{ data: { admins: [1] } }] });
  });

  it('given an admin and a tenant, when the tenant is retired, then only its stream is written', () => {
    expect(only(retire([tenant(1, 'admin', { isAdmin: true }), tenant(3, 'alice')], 3)).events.map((e) => e.type)).toEqual(['TenantRetired']);
  });

  it('given a retired admin, when reactivated, then the admins stream gets it back; registering an admin appends it too', () => {
    const id: [string, DuffyEvent] = ['ids-tenant', { type: 'IdAllocated', data: { kind: 'tenant' } }];
    const world = given(id, tenant(1, 'admin', { isAdmin: true }), id, tenant(2, 'b', { isAdmin: true }), ['tenant-b', { type: 'TenantRetired', data: { tenantId: 2, at: AT } }]);
    expect(written(decideUpdateTenant(world.tenants.get(2)!, { changes: {}, active: true, now: LATER }, world) as Write[])[1]).toMatchObject({ stream: 'admins', events: [{ data: { admins: [1, 2] } }] });
    const registered = decideRegisterTenant(world, { name: 'c', apiKeyDigest: 'd', isAdmin: true, settings: { sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null }, now: LATER });
    expect(written(registered as Write[]).at(-1)).toEqual({ stream: 'admins', expected: 'no_stream', events: [{ type: 'ActiveAdminsChanged', data: { admins: [1, 3], at: LATER } }] });
  });
});

describe('retiring a tenant that holds sessions', () => {
  /** alice(1) holds session 1 on i1 and session 2 on i2; bob(2) holds session 3 on a1. */
  const held = (): Array<[string, DuffyEvent]> => [
    tenant(1, 'alice'), tenant(2, 'bob'), machine(1, 'i1', 'metal-intel'), machine(2, 'i2', 'metal-intel'), machine(3, 'a1', 'metal-amd'),
    ...heldSession(1, { tenantId: 1, name: 'alice' }, { machineId: 1, hostname: 'i1', pool: 'metal-intel' }),
    ...heldSession(2, { tenantId: 1, name: 'alice' }, { machineId: 2, hostname: 'i2', pool: 'metal-intel' }),
    ...heldSession(3, { tenantId: 2, name: 'bob' }, { machineId: 3, hostname: 'a1', pool: 'metal-amd' }),
  ];

  it('given two sessions of alice and one of bob, when alice is retired, then one decision ends both of hers, each stream written once', () => {
    const world = given(...held());
    const writes = decideUpdateTenant(world.tenants.get(1)!, { changes: {}, active: false, now: LATER, recyclesInstantly: (pool) => pool === 'metal-intel' }, world) as Write[];
    expect(written(writes)).toEqual([
      {
        stream: 'tenant-alice',
        expected: world.tenants.get(1)!.revision,
        events: [
          { type: 'TenantRetired', data: { tenantId: 1, at: LATER } },
          { type: 'QuotaReturned', data: { tenantId: 1, sessionId: 1, count: 1, at: LATER } },
          { type: 'QuotaReturned', data: { tenantId: 1, sessionId: 2, count: 1, at: LATER } },
        ],
      },
      { stream: 'session-1', expected: 1, events: [{ type: 'SessionReleased', data: { sessionId: 1, reason: 'tenant-retired', at: LATER } }] },
      { stream: 'machine-i1', expected: 1, events: [expect.objectContaining({ type: 'MachineReleased' }), expect.objectContaining({ type: 'MachineRecycled' })] },
      { stream: 'session-2', expected: 1, events: [{ type: 'SessionReleased', data: { sessionId: 2, reason: 'tenant-retired', at: LATER } }] },
      { stream: 'machine-i2', expected: 1, events: [expect.objectContaining({ type: 'MachineReleased' }), expect.objectContaining({ type: 'MachineRecycled' })] },
    ]);
  });

  it('given alice also has a request waiting in the queue, when alice is retired, then it leaves the queue in the same decision', () => {
    const world = given(...held(), ...queuedRequest(4, 1));
    expect(world.sessions.get(4)!.status).toBe('waiting');
    const writes = decideUpdateTenant(world.tenants.get(1)!, { changes: {}, active: false, now: LATER }, world) as Write[];
    expect(writes.map((w) => [w.stream, w.events.map((e) => e.type)])).toEqual([
      ['tenant-alice', ['TenantRetired', 'QuotaReturned', 'QuotaReturned']],
      ['session-1', ['SessionReleased']],
      ['machine-i1', ['MachineReleased']],
      ['session-2', ['SessionReleased']],
      ['machine-i2', ['MachineReleased']],
      ['session-4', ['SessionRejected']],
    ]);
    expect(writes.find((w) => w.stream === 'session-4')).toEqual({ stream: 'session-4', expected: 1, events: [{ type: 'SessionRejected', data: { sessionId: 4, reason: 'tenant alice was retired', at: LATER } }] });
  });

  it('given a retirement that ended only some sessions (written before retirements were one append), when retired again, then the rest end in one decision', () => {
    const partly: Array<[string, DuffyEvent]> = [
      ...held(),
      ['tenant-alice', { type: 'TenantRetired', data: { tenantId: 1, at: LATER } }],
      ['session-1', { type: 'SessionReleased', data: { sessionId: 1, reason: 'tenant-retired', at: LATER } }],
      ['machine-i1', { type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'tenant-retired', at: LATER } }],
      ['tenant-alice', { type: 'QuotaReturned', data: { tenantId: 1, sessionId: 1, count: 1, at: LATER } }],
    ];
    const world = given(...partly);
    const writes = decideUpdateTenant(world.tenants.get(1)!, { changes: {}, active: false, now: LATER }, world) as Write[];
    expect(writes.map((w) => [w.stream, w.events.map((e) => e.type)])).toEqual([
      ['session-2', ['SessionReleased']],
      ['machine-i2', ['MachineReleased']],
      ['tenant-alice', ['QuotaReturned']],
    ]);
    // Nothing left: retiring it again writes nothing.
    const after = given(...partly, ...writes.flatMap((w) => w.events.map((e): [string, DuffyEvent] => [w.stream, e as DuffyEvent])));
    expect(decideUpdateTenant(after.tenants.get(1)!, { changes: {}, active: false, now: LATER }, after)).toEqual([]);
  });
});

describe('changing a retired tenant', () => {
  const retired = () => given(tenant(1, 'admin', { isAdmin: true }), tenant(2, 't'), ['tenant-t', { type: 'TenantRetired', data: { tenantId: 2, at: AT } }]);

  it('given a retired tenant, when changed, then refused as Duffy v3 does; retired again, nothing to write (nothing is left); reactivated, accepted', () => {
    const w = retired();
    expect(decideUpdateTenant(w.tenants.get(2)!, { changes: { nodeQuota: 4 }, now: LATER }, w)).toEqual({ refused: 'invalid', reason: 'tenant t (id=2) is retired' });
    expect(decideUpdateTenant(w.tenants.get(2)!, { changes: {}, active: false, now: LATER }, w)).toEqual([]);
    expect(written(decideUpdateTenant(w.tenants.get(2)!, { changes: { nodeQuota: 4 }, active: true, now: LATER }, w) as Write[])[0].events.map((e) => e.type)).toEqual(['TenantUpdated', 'TenantReactivated']);
  });
});

describe('recording the tenant defaults a start brings', () => {
  const recorded = (d = DEFAULTS): [string, DuffyEvent] => ['defaults', { type: 'DefaultsSet', data: { ...d, at: AT } }];

  it('given none recorded, when Duffy starts, then its defaults are recorded on a new stream', () => {
    expect(written(decideRecordDefaults(given(), DEFAULTS, LATER, NOTHING_IN_FLIGHT) as Write[])).toEqual([
      { stream: 'defaults', expected: 'no_stream', events: [{ type: 'DefaultsSet', data: { ...DEFAULTS, at: LATER } }] },
    ]);
  });

  it('given the same ones recorded, then nothing; given others, then the new ones after the last', () => {
    expect(decideRecordDefaults(given(recorded()), DEFAULTS, LATER, NOTHING_IN_FLIGHT)).toEqual([]);
    const lowered = { ...DEFAULTS, nodeQuota: 2 };
    expect(written(decideRecordDefaults(given(recorded(), recorded({ ...DEFAULTS, sessionLifetime: 60 })), lowered, LATER, NOTHING_IN_FLIGHT) as Write[])).toEqual([
      { stream: 'defaults', expected: 1, events: [{ type: 'DefaultsSet', data: { ...lowered, at: LATER } }] },
    ]);
    expect(given(recorded(), recorded(lowered)).defaults).toEqual(lowered);
  });

  it('given alice (no quota of her own) holding 1 and bob (his own quota) holding 1, when node-quota goes from 5 to 0, then the start says what changed and that alice is over it', () => {
    const world = given(recorded(), ...startedSession(), tenant(2, 'bob', { nodeQuota: 3 }));
    world.tenants.get(2)!.held = 1;
    expect(defaultsChanges(given(), DEFAULTS)).toEqual([]);
    expect(defaultsChanges(world, DEFAULTS)).toEqual([]);
    expect(defaultsChanges(world, { ...DEFAULTS, nodeQuota: 0, sessionLifetime: 60 })).toEqual([
      'node-quota 5 -> 0',
      'session-lifetime 3600 -> 60',
      'now over their quota (they keep what they hold, and get no more until under it): alice holds 1',
    ]);
    expect(defaultsChanges(world, { ...DEFAULTS, nodeQuota: 9 })).toEqual(['node-quota 5 -> 9']);
    // alice's session 1 was created at AT with a lease to LATER (1 h): a maximum of 30 min leaves it longer.
    expect(defaultsChanges(world, { ...DEFAULTS, sessionLifetimeMax: 1800 })).toEqual(['session-lifetime-max 7200 -> 1800', '1 open session(s) keep a lease past the new maximum (sessions 1)']);
    expect(defaultsChanges(world, { ...DEFAULTS, sessionLifetimeMax: 3600 })).toEqual(['session-lifetime-max 7200 -> 3600']);
  });
});

describe('giving a tenant a key', () => {
  it('given a key another tenant has under any of its digests, when given to a second tenant, then refused', () => {
    const world = given(tenant(1, 'admin', { isAdmin: true }), tenant(2, 't'));
    // tenant() stores digest-admin: the key's other spelling (capitals, stored before keys were lowercased).
    expect(decideUpdateTenant(world.tenants.get(2)!, { changes: { apiKeyDigest: 'lower' }, keyDigests: ['lower', 'digest-admin'], now: LATER }, world)).toEqual({ refused: 'conflict', reason: 'that API key is already in use' });
    expect(kind(decideUpdateTenant(world.tenants.get(2)!, { changes: { apiKeyDigest: 'lower' }, keyDigests: ['lower', 'digest-t'], now: LATER }, world))).toBe('accepted');
  });
});

describe('registering a tenant: one name, however its case is spelled', () => {
  const settings = { sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null };
  it('given admin, when Admin is registered, then refused naming the tenant that has it (logins stay exact, as in Duffy v3)', () => {
    const world = given(tenant(1, 'admin', { isAdmin: true }));
    expect(decideRegisterTenant(world, { name: 'Admin', apiKeyDigest: 'x', isAdmin: false, settings, now: LATER })).toEqual({ refused: 'conflict', reason: 'tenant admin already exists (tenant names ignore case)' });
    expect(decideRegisterTenant(world, { name: 'admin', apiKeyDigest: 'x', isAdmin: false, settings, now: LATER })).toEqual({ refused: 'conflict', reason: 'tenant admin already exists' });
    expect(kind(decideRegisterTenant(world, { name: 'admin2', apiKeyDigest: 'x', isAdmin: false, settings, now: LATER }))).toBe('accepted');
  });
});

describe('registering machines: one host, one machine, however its name is spelled', () => {
  const POOLS = [{ name: 'p', type: 'baremetal' as const, arch: 'x86_64', platform: 'intel' }];
  const registration = (hostname: string) => ({ hostname, ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready' as const });
  const register = (world: ReturnType<typeof given>, ...hostnames: string[]) => decideRegisterMachines(world, POOLS, { machines: hostnames.map(registration), now: AT });

  describe('a host name registered again once its machine is retired (as Duffy v3 takes a name again)', () => {
    const retire = (id: number, host: string): [string, DuffyEvent] => [`service-${host}`, { type: 'MachineServiceChanged', data: { machineId: id, hostname: host, service: 'retired', reason: 'eol', actor: 'admin', at: AT } }];

    it('given a.lab retired by an admin, when a.lab is registered, then a new machine goes on its stream and takes the name; the old one keeps its id', () => {
      const history: Array<[string, DuffyEvent]> = [['ids-machine', { type: 'IdAllocated', data: { kind: 'machine' } }], machine(1, 'a.lab', 'p'), ['machine-a.lab', { type: 'MachineQuarantined', data: { machineId: 1, reason: 'disk', at: AT } }], retire(1, 'a.lab')];
      const decision = register(given(...history), 'a.lab') as Write[];
      const write = decision.find((w) => w.stream === 'machine-a.lab')!;
      expect(write.expected).toBe(1);
      const after = given(...history, ...decision.flatMap((w) => w.events.map((e): [string, DuffyEvent] => [w.stream, e])));
      const id = machineIdOfHost(after, 'a.lab')!;
      expect(id).toBe(2);
      expect(after.machines.get(id)).toMatchObject({ hostname: 'a.lab', service: 'in-service', serviceRevision: 0, revision: 2 });
      expect(after.machines.get(1)!.service).toBe('retired');
      // Its service stream goes on too: maintenance on the new machine follows the old one's retirement.
      expect((decideServiceChange(after.machines.get(id)!, { maintenance: true }, 'admin', AT) as Write[])[0].expected).toBe(0);
    });

    it('given a.lab in service, or retired but still held, or retired as A.LAB, then refused, saying why', () => {
      expect(register(given(machine(1, 'a.lab', 'p')), 'a.lab')).toEqual({ refused: 'conflict', reason: 'node a.lab already exists' });
      const held = given(...startedSession(), retire(1, 'i1'));
      expect(held.machines.get(1)!.sessionId).toBe(1);
      expect(register(held, 'i1')).toEqual({ refused: 'conflict', reason: 'node i1 is retired but its last session or release is still under way: register it again once that is over' });
      expect(register(given(machine(1, 'a.lab', 'p'), retire(1, 'a.lab')), 'A.LAB')).toEqual({ refused: 'conflict', reason: 'node A.LAB was a.lab, retired: register it again as a.lab (its ledger stream is named so)' });
    });

    it('given a.lab registered done (through, not retired by an admin), when a.lab is registered, then refused, saying how to free the name; once retired, taken again', () => {
      const [s, e] = machine(1, 'a.lab', 'p');
      const done: [string, DuffyEvent] = [s, { ...e, data: { ...e.data, state: 'done' } } as DuffyEvent];
      expect(register(given(done), 'a.lab')).toEqual({ refused: 'conflict', reason: 'node a.lab already exists, through (done): retire it (PUT {"retired": true}) to register its host name again' });
      expect(kind(register(given(done, retire(1, 'a.lab')), 'a.lab'))).toBe('accepted');
    });
  });

  it('given Node-1.Lab, when node-1.lab. is registered, then refused as the same host, naming the spelling it has', () => {
    const world = given(machine(1, 'Node-1.Lab', 'p'));
    expect(register(world, 'node-1.lab.')).toEqual({ refused: 'conflict', reason: 'node node-1.lab. already exists as Node-1.Lab (host names ignore case and a trailing dot)' });
    expect(register(world, 'Node-1.Lab')).toEqual({ refused: 'conflict', reason: 'node Node-1.Lab already exists' });
    expect(machineIdOfHost(world, 'NODE-1.LAB')).toBe(1);
  });

  it('given nothing, when one import names a host twice in two spellings, then the whole import is refused', () => {
    expect(register(given(), 'a.lab', 'b.lab', 'A.LAB')).toEqual({ refused: 'conflict', reason: 'node A.LAB already exists as a.lab (host names ignore case and a trailing dot)' });
    expect(kind(register(given(), 'a.lab', 'b.lab'))).toBe('accepted');
  });
  describe('one address, one machine (Duffy v3\'s unique index on ipaddr)', () => {
    const at = (hostname: string, ipaddr: string, data: Record<string, unknown> = {}) => ({ ...registration(hostname), ipaddr, data });
    const registered = (id: number, hostname: string, ipaddr: string, data: Record<string, unknown> = {}): [string, DuffyEvent] => [
      `machine-${hostname}`,
      { type: 'MachineRegistered', data: { machineId: id, ...at(hostname, ipaddr, data), at: AT } },
    ];
    const registerAt = (world: ReturnType<typeof given>, ...machines: ReturnType<typeof at>[]) => decideRegisterMachines(world, POOLS, { machines, now: AT });

    it('given a.lab at 10.0.0.1, when b.lab is registered at 10.0.0.1 (or FE80::1 against fe80::1), then refused naming a.lab', () => {
      const world = given(registered(1, 'a.lab', '10.0.0.1'), registered(2, 'v6.lab', 'fe80::1'));
      expect(registerAt(world, at('b.lab', '10.0.0.1'))).toEqual({ refused: 'conflict', reason: "node b.lab: address 10.0.0.1 is node a.lab's" });
      expect(registerAt(world, at('c.lab', 'FE80::1'))).toEqual({ refused: 'conflict', reason: "node c.lab: address FE80::1 is node v6.lab's" });
      expect(kind(registerAt(world, at('b.lab', '10.0.0.2')))).toBe('accepted');
    });

    it('given v6.lab at 2001:db8::1, when another spelling of that address is registered (zeros written out, or left in), then refused naming v6.lab, as v3 (which stores the address as pydantic reads it) does', () => {
      const world = given(registered(2, 'v6.lab', '2001:db8::1'));
      for (const spelling of ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8:0::1', '2001:db8:0:0:0:0:0:1']) {
        expect(registerAt(world, at('c.lab', spelling))).toEqual({ refused: 'conflict', reason: `node c.lab: address ${spelling} is node v6.lab's` });
      }
      expect(registerAt(given(registered(2, 'v6.lab', '2001:0db8::0001')), at('c.lab', '2001:db8::1'))).toEqual({ refused: 'conflict', reason: "node c.lab: address 2001:db8::1 is node v6.lab's" });
      expect(kind(registerAt(world, at('c.lab', '2001:db8::2')))).toBe('accepted');
    });

    it('given no machine, when one is registered at 2001:0DB8:0:0::0001, then its event keeps 2001:db8::1, the address as Duffy v3 stores and answers it', () => {
      const writes = registerAt(given(), at('v6.lab', '2001:0DB8:0:0::0001'));
      if (!Array.isArray(writes)) throw new Error(writes.reason);
      const registeredEvent = writes.flatMap((w) => w.events).find((e) => e.type === 'MachineRegistered');
      expect(registeredEvent?.data).toMatchObject({ hostname: 'v6.lab', ipaddr: '2001:db8::1' });
    });

    it('given a.lab at 10.0.0.1, when b.lab is registered at ::ffff:10.0.0.1 (or ::ffff:a00:1), the IPv4-mapped spelling a socket reaches 10.0.0.1 by, then refused naming a.lab; and the other way round', () => {
      const world = given(registered(1, 'a.lab', '10.0.0.1'), registered(2, 'm.lab', '::ffff:10.0.0.2'));
      for (const spelling of ['::ffff:10.0.0.1', '::FFFF:a00:1', '0:0:0:0:0:ffff:10.0.0.1']) {
        expect(registerAt(world, at('b.lab', spelling))).toEqual({ refused: 'conflict', reason: `node b.lab: address ${spelling} is node a.lab's` });
      }
      expect(registerAt(world, at('c.lab', '10.0.0.2'))).toEqual({ refused: 'conflict', reason: "node c.lab: address 10.0.0.2 is node m.lab's" });
      expect(kind(registerAt(world, at('b.lab', '::ffff:10.0.0.3')))).toBe('accepted');
      expect(kind(registerAt(world, at('b.lab', '::10.0.0.1')))).toBe('accepted');
    });

    it('given a.lab at 10.0.0.1 on ssh port 22, when b.lab is registered there on port 2201, then accepted: two hosts behind one address', () => {
      const world = given(registered(1, 'a.lab', '10.0.0.1'));
      expect(kind(registerAt(world, at('b.lab', '10.0.0.1', { ssh_port: 2201 })))).toBe('accepted');
      expect(registerAt(world, at('b.lab', '10.0.0.1', { ssh_port: 22 }))).toEqual({ refused: 'conflict', reason: "node b.lab: address 10.0.0.1 is node a.lab's" });
    });

    it('given a.lab at 10.0.0.1 retired, or being provisioned, or failed, then its address may be registered again (as v3\'s index leaves them out)', () => {
      const retired = given(registered(1, 'a.lab', '10.0.0.1'), ['machine-a.lab', { type: 'MachineServiceChanged', data: { machineId: 1, hostname: 'a.lab', service: 'retired', reason: null, actor: 'admin', at: AT } }]);
      expect(kind(registerAt(retired, at('b.lab', '10.0.0.1')))).toBe('accepted');
      for (const state of ['provisioning', 'failed'] as const) {
        const world = given(registered(1, 'a.lab', '10.0.0.1'));
        world.machines.get(1)!.state = state;
        expect(kind(registerAt(world, at('b.lab', '10.0.0.1')))).toBe('accepted');
      }
    });

    it('given i1 at 10.0.0.1 retired while a session holds it (draining), or while its release runs, when b.lab is registered at 10.0.0.1, then refused: the same host would go to two tenants', () => {
      const history = startedSession().map(([stream, e]): [string, DuffyEvent] =>
        e.type === 'MachineRegistered' ? [stream, { ...e, data: { ...e.data, ipaddr: '10.0.0.1' } } as DuffyEvent] : [stream, e]);
      const world = given(...history, ['service-i1', { type: 'MachineServiceChanged', data: { machineId: 1, hostname: 'i1', service: 'retired', reason: 'renamed', actor: 'admin', at: AT } }]);
      expect(world.machines.get(1)).toMatchObject({ sessionId: 1, service: 'retired' });
      expect(registerAt(world, at('b.lab', '10.0.0.1'))).toEqual({ refused: 'conflict', reason: "node b.lab: address 10.0.0.1 is node i1's, retired but still in use: register it again once its session ended and its release ran" });
      const m = world.machines.get(1)!;
      m.sessionId = null;
      m.releasingSession = 1;
      expect(registerAt(world, at('b.lab', '10.0.0.1'))).toEqual({ refused: 'conflict', reason: "node b.lab: address 10.0.0.1 is node i1's, retired but still in use: register it again once its session ended and its release ran" });
      m.releasingSession = null;
      expect(kind(registerAt(world, at('b.lab', '10.0.0.1')))).toBe('accepted');
    });

    it('given a machine that provisioning moved to 10.0.0.9, then 10.0.0.9 is taken and its old address is free', () => {
      const run = { action: 'provision' as const, playbook: 'provision.yml', exitCode: 0, durationMs: 1000, timedOut: false, tail: '' };
      const world = given(registered(1, 'vm.lab', '10.0.0.1', {}), ['machine-vm.lab', { type: 'MachineProvisioned', data: { machineId: 1, sessionId: null, ipaddr: '10.0.0.9', run, at: AT } }]);
      expect(registerAt(world, at('b.lab', '10.0.0.9'))).toEqual({ refused: 'conflict', reason: "node b.lab: address 10.0.0.9 is node vm.lab's" });
      expect(kind(registerAt(world, at('b.lab', '10.0.0.1')))).toBe('accepted');
    });

    it('given a.lab at 10.0.0.1 on port 22, when b.lab names port 22 another way ("022", or "22.0" registered before the port rule), then refused: the playbooks read each as 22', () => {
      const world = given(registered(1, 'a.lab', '10.0.0.1', { ssh_port: '22.0' }));
      expect(registerAt(world, at('b.lab', '10.0.0.1', { ssh_port: '022' }))).toEqual({ refused: 'conflict', reason: "node b.lab: address 10.0.0.1 is node a.lab's" });
      expect(registerAt(given(registered(1, 'a.lab', '10.0.0.1', { ssh_port: ' +22' })), at('b.lab', '10.0.0.1'))).toEqual({ refused: 'conflict', reason: "node b.lab: address 10.0.0.1 is node a.lab's" });
      expect(kind(registerAt(world, at('b.lab', '10.0.0.1', { ssh_port: '2201' })))).toBe('accepted');
      // 0 or "" is the playbooks' default, 22; hex is not a port to them (Jinja's int reads 0x16 as 0).
      expect(registerAt(world, at('b.lab', '10.0.0.1', { ssh_port: 0 }))).toEqual({ refused: 'conflict', reason: "node b.lab: address 10.0.0.1 is node a.lab's" });
      expect(kind(registerAt(given(registered(1, 'a.lab', '10.0.0.1', { ssh_port: '0x16' })), at('b.lab', '10.0.0.1')))).toBe('accepted');
    });

    it('given nothing, when a node names its ssh port as anything but a port number, then refused', () => {
      for (const port of [' 22', '22.0', '+22', '0x16', 65536, 22.5, true, [22]]) {
        expect(registerAt(given(), at('a.lab', '10.0.0.1', { ssh_port: port }))).toEqual({ refused: 'invalid', reason: `node a.lab: data.ssh_port must be a port number, 1-65535 (not ${JSON.stringify(port)})` });
      }
    });

    it('given nothing, when a node\'s data or hardware holds a number JSON cannot carry, then refused: stored as null, it would break its own hash', () => {
      expect(registerAt(given(), at('a.lab', '10.0.0.1', { deep: [{ x: Infinity }] }))).toEqual({ refused: 'invalid', reason: 'node a.lab: data.deep[0].x: not a finite number' });
      expect(decideRegisterMachines(given(), POOLS, { machines: [{ ...registration('b.lab'), hardware: { cpus: 8, gpu_mem: NaN } }], now: AT })).toEqual({ refused: 'invalid', reason: 'node b.lab: hardware.gpu_mem: not a finite number' });
      // Nor a member name BSON cannot store (the MongoDB read models would refuse every write holding it).
      expect(registerAt(given(), at('a.lab', '10.0.0.1', { 'a\0b': 1 }))).toEqual({ refused: 'invalid', reason: 'node a.lab: data.a\\u0000b: a member name must not hold a NUL character (\\u0000)' });
    });

    it('given nothing, when a node\'s data holds text with a lone surrogate, then refused: BSON would keep U+FFFD, Ansible fails on it', () => {
      const lone = 'not valid Unicode text: it holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is no character';
      expect(registerAt(given(), at('a.lab', '10.0.0.1', { bmc: ['x', 'a\ud800'] }))).toEqual({ refused: 'invalid', reason: `node a.lab: data.bmc[1]: ${lone}` });
      expect(registerAt(given(), at('a.lab', '10.0.0.1', { ['k\udc00']: 1 }))).toEqual({ refused: 'invalid', reason: `node a.lab: data.k\\udc00: ${lone}` });
      expect(registerAt(given(), at('a.lab', '10.0.0.1', { emoji: '\ud83d\ude00' }))).not.toHaveProperty('refused');
    });

    it('given nothing, when one import names one address twice, then the whole import is refused', () => {
      expect(registerAt(given(), at('a.lab', '10.0.0.1'), at('b.lab', '10.0.0.1'))).toEqual({ refused: 'conflict', reason: "node b.lab: address 10.0.0.1 is node a.lab's" });
    });
  });
});
