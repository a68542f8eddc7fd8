import { describe, expect, it } from '@jest/globals';
import { replay } from '../../src/audit/audit.js';
import type { RecordedEvent } from '../../src/application/ports/event-store.port.js';
import type { DuffyEvent } from '../../src/domain/events.js';
import { AT, DEFAULTS, machine, recorded as ledger, startedSession, tenant } from '../support/given.js';

const at = (s: number) => new Date(Date.parse(AT) + s * 1000).toISOString();

const breaches = (events: RecordedEvent[], rule: string | number) => replay(events, DEFAULTS).filter((v) => v.invariant === rule);

const reserve = (machineId: number, hostname: string, sessionId: number, s = 10): [string, DuffyEvent] => [
  `machine-${hostname}`,
  { type: 'MachineReserved', data: { machineId, hostname, sessionId, tenantId: 1, pool: 'p', platform: 'intel', affinity: 'established', contextualize: false, at: at(s) } },
];
const service = (machineId: number, hostname: string, to: 'maintenance' | 'retired' | 'in-service', s = 5): [string, DuffyEvent] => [
  `service-${hostname}`,
  { type: 'MachineServiceChanged', data: { machineId, hostname, service: to, reason: null, actor: 'admin', at: at(s) } },
];

describe('audit replay: rule free (a reservation takes only a free machine)', () => {
  it('reports a machine reserved while in maintenance or retired, and none once it is back in service', () => {
    const base = [tenant(1, 't'), machine(1, 'a.test', 'p')];
    expect(breaches(ledger(...base, service(1, 'a.test', 'maintenance'), reserve(1, 'a.test', 7)), 'free')).toEqual([
      { invariant: 'free', message: 'machine a.test reserved for session 7 while in maintenance', positions: [4n] },
    ]);
    expect(breaches(ledger(...base, service(1, 'a.test', 'retired'), reserve(1, 'a.test', 7)), 'free')[0].message).toBe('machine a.test reserved for session 7 while retired');
    expect(breaches(ledger(...base, service(1, 'a.test', 'maintenance'), service(1, 'a.test', 'in-service', 6), reserve(1, 'a.test', 7)), 'free')).toEqual([]);
    expect(breaches(ledger(...base, reserve(1, 'a.test', 7)), 'free')).toEqual([]);
  });

  it('reports a machine reserved while quarantined or while its playbook runs', () => {
    const base = [tenant(1, 't'), machine(1, 'a.test', 'p')];
    const quarantined: [string, DuffyEvent] = ['machine-a.test', { type: 'MachineQuarantined', data: { machineId: 1, reason: 'disk', at: at(5) } }];
    expect(breaches(ledger(...base, quarantined, reserve(1, 'a.test', 7)), 'free')[0].message).toBe('machine a.test reserved for session 7 while failed');
    const running: [string, DuffyEvent] = ['machine-a.test', { type: 'PlaybookStarted', data: { machineId: 1, action: 'health_check', sessionId: null, instance: 'i', deadline: at(600), at: at(5) } }];
    expect(breaches(ledger(...base, running, reserve(1, 'a.test', 7)), 'free')[0].message).toBe('machine a.test reserved for session 7 while running its health_check playbook');
  });

  it('leaves a machine another session holds to invariant 1', () => {
    const events = ledger(tenant(1, 't'), machine(1, 'a.test', 'p'), reserve(1, 'a.test', 7), reserve(1, 'a.test', 8, 20));
    expect(breaches(events, 'free')).toEqual([]);
    expect(replay(events, DEFAULTS).map((v) => v.invariant)).toContain(1);
  });
});

describe('audit replay: rule lease (no extension past the maximum lifetime, but by an admin)', () => {
  // alice's session 1 was created at AT; DEFAULTS allow 7,200 s at most.
  const extended = (to: number, actor: string): [string, DuffyEvent, string] => ['session-1', { type: 'SessionExtended', data: { sessionId: 1, expiresAt: at(to), at: at(60) } }, actor];
  const started = (): Array<[string, DuffyEvent, string?]> => [tenant(9, 'root', { isAdmin: true }), ...startedSession()];

  it('reports a tenant extending its own lease past created + max, and not one up to it', () => {
    expect(breaches(ledger(...started(), extended(7201, 'alice')), 'lease')).toEqual([
      { invariant: 'lease', message: `session 1 extended by alice to ${at(7201)}, past its maximum lifetime of 7200 s (until ${at(7200)})`, positions: [8n] },
    ]);
    expect(breaches(ledger(...started(), extended(7200, 'alice')), 'lease')).toEqual([]);
  });

  it('lets a tenant shorten a lease an admin took past the maximum, and not lengthen it', () => {
    expect(breaches(ledger(...started(), extended(90_000, 'root'), extended(80_000, 'alice')), 'lease')).toEqual([]);
    expect(breaches(ledger(...started(), extended(90_000, 'root'), extended(90_001, 'alice')), 'lease')).toHaveLength(1);
  });

  it('lets an admin extend past it, and judges by the tenant own maximum when it has one', () => {
    expect(breaches(ledger(...started(), extended(90_000, 'root')), 'lease')).toEqual([]);
    const lowered: [string, DuffyEvent] = ['tenant-alice', { type: 'TenantUpdated', data: { tenantId: 1, changes: { sessionLifetimeMax: 3600 }, at: at(30) } }];
    expect(breaches(ledger(...started(), lowered, extended(3601, 'alice')), 'lease')).toHaveLength(1);
    expect(breaches(ledger(...started(), lowered, extended(3600, 'alice')), 'lease')).toEqual([]);
  });

  it('holds an extension to the maximum unless its actor is an admin: one with no actor recorded, or an actor that is no tenant, is judged as a tenant\'s', () => {
    // Every Duffy recorded who extended a lease; Duffy itself never does: no actor, or a name no tenant has, is an edit.
    const anonymous: [string, DuffyEvent] = ['session-1', { type: 'SessionExtended', data: { sessionId: 1, expiresAt: at(90_000), at: at(60) } }];
    expect(breaches(ledger(...started(), anonymous), 'lease')).toEqual([
      { invariant: 'lease', message: `session 1 extended by no one recorded to ${at(90_000)}, past its maximum lifetime of 7200 s (until ${at(7200)})`, positions: [8n] },
    ]);
    for (const actor of ['nobody', 'duffy', 'ROOT']) expect(breaches(ledger(...started(), extended(90_000, actor)), 'lease')).toHaveLength(1);
  });
});

describe('audit replay: rule lease, an extension to no time', () => {
  const started = (): Array<[string, DuffyEvent, string?]> => [tenant(9, 'root', { isAdmin: true }), ...startedSession()];
  const toNoTime = (expiresAt: string, actor: string): [string, DuffyEvent, string] => ['session-1', { type: 'SessionExtended', data: { sessionId: 1, expiresAt, at: at(60) } }, actor];

  it('reports a lease extended to a time no reader can read, by a tenant or an admin (the replay said OK: NaN is past no maximum)', () => {
    expect(breaches(ledger(...started(), toNoTime('never', 'alice')), 'lease')).toEqual([
      { invariant: 'lease', message: 'session 1 extended by alice to "never", which is no time: no lease Duffy gives ends at it', positions: [8n] },
    ]);
    expect(breaches(ledger(...started(), toNoTime('never', 'root')), 'lease')).toHaveLength(1);
    expect(breaches(ledger(...started(), toNoTime(at(600), 'alice')), 'lease')).toEqual([]);
  });
});

describe('audit replay: quota and lease judged by the tenant defaults recorded when the event was written', () => {
  const defaultsSet = (d: typeof DEFAULTS, s: number): [string, DuffyEvent] => ['defaults', { type: 'DefaultsSet', data: { ...d, at: at(s) } }];
  const extended = (to: number): [string, DuffyEvent, string] => ['session-1', { type: 'SessionExtended', data: { sessionId: 1, expiresAt: at(to), at: at(60) } }, 'alice'];

  it('uses the recorded maximum lifetime, not the replay configuration, once the ledger holds one', () => {
    // Recorded 3 h at most; the replay's configuration (DEFAULTS) says 2 h.
    const longer = defaultsSet({ ...DEFAULTS, sessionLifetimeMax: 10_800 }, 0);
    expect(breaches(ledger(longer, ...startedSession(), extended(9000)), 'lease')).toEqual([]);
    expect(breaches(ledger(longer, ...startedSession(), extended(10_801)), 'lease')[0].message).toContain('past its maximum lifetime of 10800 s');
    // Without DefaultsSet (a ledger from before Duffy recorded them) the configuration given to the replay applies.
    expect(breaches(ledger(...startedSession(), extended(9000)), 'lease')).toHaveLength(1);
  });

  it('judges each reservation by the defaults in force then: a quota lowered later does not flag what came before', () => {
    const reserveFor = (machineId: number, sessionId: number): [string, DuffyEvent] => [
      `machine-m${machineId}`,
      { type: 'MachineReserved', data: { machineId, hostname: `m${machineId}`, sessionId, tenantId: 1, pool: 'p', platform: 'intel', affinity: 'established', contextualize: false, at: at(machineId) } },
    ];
    const machines = [1, 2, 3].map((i) => machine(i, `m${i}`, 'p'));
    const three = [reserveFor(1, 1), reserveFor(2, 2), reserveFor(3, 3)];
    const quotaBreaches = (events: RecordedEvent[]) => replay(events, { ...DEFAULTS, nodeQuota: 3 }).filter((v) => v.invariant === 3);
    // Three held under a recorded default of 3; the default lowered to 2 afterwards: no breach.
    expect(quotaBreaches(ledger(defaultsSet({ ...DEFAULTS, nodeQuota: 3 }, 0), tenant(1, 'alice'), ...machines, ...three, defaultsSet({ ...DEFAULTS, nodeQuota: 2 }, 9)))).toEqual([]);
    // Recorded 2 while the third was reserved: a breach, whatever the replay's configuration (3) says.
    expect(quotaBreaches(ledger(defaultsSet({ ...DEFAULTS, nodeQuota: 2 }, 0), tenant(1, 'alice'), ...machines, ...three)).map((v) => v.message)).toEqual(['tenant 1 holds 3 machines over its quota of 2']);
  });
});

describe('audit replay: rule end (a session is ended by its tenant, an admin or Duffy) and invariant 10 at the end of the ledger', () => {
  const released = (actor: string): Array<[string, DuffyEvent, string?]> => [
    ['session-1', { type: 'SessionReleased', data: { sessionId: 1, reason: 'done', at: at(60) } }, actor],
    ['machine-i1', { type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'done', at: at(60) } }, actor],
  ];
  const started = (): Array<[string, DuffyEvent, string?]> => [tenant(9, 'root', { isAdmin: true }), tenant(2, 'bob'), ...startedSession()];

  it('reports another tenant ending a session (an append with valid hashes and actor bob passed replay)', () => {
    expect(breaches(ledger(...started(), ...released('bob')), 'end')).toEqual([
      { invariant: 'end', message: 'session 1 of alice ended by bob, neither its tenant nor an admin', positions: [9n] },
    ]);
  });

  it('takes the session\'s tenant, an admin and Duffy itself', () => {
    for (const actor of ['alice', 'root', 'duffy']) expect(breaches(ledger(...started(), ...released(actor)), 'end')).toEqual([]);
  });

  it('reports a machine still held by a session that ended (its release never written), and none when it was', () => {
    const ended = ledger(...started(), released('alice')[0]);
    expect(replay(ended, DEFAULTS).filter((v) => v.invariant === 10)).toEqual([
      { invariant: 10, message: 'machine 1 is still held by session 1, which ended: nobody would ever release it', positions: [7n, 9n] },
    ]);
    expect(replay(ledger(...started(), ...released('alice')), DEFAULTS)).toEqual([]);
  });
});

describe('audit replay: invariant 7 (a tenant kept on its platform family unless its request allowed another)', () => {
  // alice holds i1 on intel (session 1); session 2 asks for one baremetal by type and gets a1, an amd machine.
  const second = (affinity: 'established' | 'kept' | 'overflow' | 'fallback', specs: Array<Record<string, unknown>> = [{ type: 'baremetal', quantity: 1 }]): Array<[string, DuffyEvent]> => [
    ...startedSession(),
    machine(2, 'a1', 'metal-amd'),
    ['session-2', { type: 'MachineRequested', data: { sessionId: 2, tenantId: 1, tenant: 'alice', specs: specs as never, expiresAt: at(3600), at: at(10) } }],
    ['machine-a1', { type: 'MachineReserved', data: { machineId: 2, hostname: 'a1', sessionId: 2, tenantId: 1, pool: 'metal-amd', platform: 'amd', affinity, contextualize: false, at: at(10) } }],
  ];

  it('reports a machine of another family given to a request by type whatever its label says, unless it says overflow', () => {
    // Before: only a `fallback` label was judged, so a second `established` family (two first requests at once) passed.
    for (const label of ['established', 'kept', 'fallback'] as const) {
      expect(breaches(ledger(...second(label)), 7)).toEqual([
        { invariant: 7, message: "session 2 got a1 on platform amd, off its tenant's family intel, without asking for it", positions: [9n] },
      ]);
    }
    // Overflow (its family had too few free machines) is what the policy allows; a request naming the pool or platform chose it.
    expect(breaches(ledger(...second('overflow')), 7)).toEqual([]);
    expect(breaches(ledger(...second('fallback', [{ pool: 'metal-amd', quantity: 1 }])), 7)).toEqual([]);
    expect(breaches(ledger(...second('fallback', [{ type: 'baremetal', platform: 'amd', quantity: 1 }])), 7)).toEqual([]);
  });
});
