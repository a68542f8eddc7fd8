import { describe, expect, it } from '@jest/globals';
import { PoolConfig } from '../../src/config/config.js';
import type { DuffyEvent, PlaybookRun } from '../../src/domain/events.js';
import { AnsibleRunner, type DuffyIn, environmentFault, outcomes } from '../../src/adapters/ansible-runner.js';
import { type Job, decideEnvironmentFault, decideReplacement, decideRunOutcome, dueWork, mayStart } from '../../src/domain/provisioning.decide.js';
import { AT, DEFAULTS, LATER, POOLS, given, machine, tenant } from '../support/given.js';
import { decideEndSession, decideRecycle } from '../../src/domain/decide.js';
import { isFree } from '../../src/domain/indexes.js';

const pool = Object.assign(new PoolConfig(), { name: 'metal-intel', type: 'baremetal', arch: 'x86_64', platform: 'intel', contextualize: true, 'release-policy': 'rebuild', 'quarantine-after': 1 });
const ctx = { pools: (n: string) => (n === pool.name ? pool : undefined), now: Date.parse(LATER), runningHere: () => false, instance: 'me', soleInstance: true };
const run: PlaybookRun = { action: 'provision', playbook: 'provision.yml', exitCode: null, durationMs: 1, timedOut: false, tail: 'ansible-playbook not found on PATH' };

/** alice's session 1 holds machine i1, reserved as `provision` (it was unused) or not (ready, contextualize). */
const reserved = (provision: boolean): Array<[string, DuffyEvent]> => [
  tenant(1, 'alice'),
  machine(1, 'i1', 'metal-intel', provision ? 'unused' : 'ready'),
  ['session-1', { type: 'MachineRequested', data: { sessionId: 1, tenantId: 1, tenant: 'alice', specs: [{ pool: 'metal-intel', quantity: 1 }], expiresAt: LATER, at: AT } }],
  ['machine-i1', { type: 'MachineReserved', data: { machineId: 1, hostname: 'i1', sessionId: 1, tenantId: 1, pool: 'metal-intel', platform: 'intel', affinity: 'established', contextualize: true, provision, at: AT } }],
  ['session-1', { type: 'SessionStarted', data: { sessionId: 1, machineIds: [1], at: AT } }],
];
const claim = (action: 'provision' | 'contextualize' | 'health_check', sessionId: number | null = 1): [string, DuffyEvent] => [
  'machine-i1',
  { type: 'PlaybookStarted', data: { machineId: 1, action, sessionId, instance: 'me', deadline: LATER, at: AT } },
];
const ended: Array<[string, DuffyEvent]> = [
  ['session-1', { type: 'SessionFailed', data: { sessionId: 1, reason: 'ansible-playbook not found on PATH', at: AT } }],
  ['machine-i1', { type: 'MachineReleased', data: { machineId: 1, sessionId: 1, reason: 'failed', at: AT } }],
];
const fault = (action: 'provision' | 'contextualize' | 'health_check', spawned = false, sessionId: number | null = 1): [string, DuffyEvent] => [
  'machine-i1',
  { type: 'EnvironmentFault', data: { machineId: 1, sessionId, action, error: 'ansible-playbook not found on PATH', spawned, run: { ...run, action }, at: AT } },
];

describe('faults of Duffy\'s own environment', () => {
  it.each([
    [{ code: 'ENOENT' }, 'ansible-playbook not found on PATH', false, {}],
    [{ code: 'EACCES' }, 'ansible-playbook is not executable (EACCES)', false, {}],
    [{ code: 'EMFILE' }, 'could not start ansible-playbook: EMFILE', false, {}],
    // What a fault holds back: a killed run only its machines, a broken file only its runs, the others everything.
    [{ signal: 'SIGKILL' }, 'ansible-playbook was killed by SIGKILL', true, { scope: 'run' }],
    [{ exitCode: 4 }, 'ansible-playbook could not load the playbook (exit code 4)', true, { scope: 'playbook' }],
    // A broken installation (its Python cannot import ansible) or a role missing: exit 1 before any play ran.
    [{ exitCode: 1 }, 'ansible-playbook stopped before running the playbook (exit code 1)', true, { scope: 'playbook' }],
    // A worker killed under a live controller (Ansible exits 1, no play report): the run's fault, not its file's, which
    // ran tasks (it used to be named a broken playbook on /health and in the log, "stopped before running the playbook").
    [{ exitCode: 1, stderr: 'ERROR! A worker was found in a dead state\n' }, 'an ansible-playbook worker process was killed (A worker was found in a dead state)', true, { scope: 'run' }],
  ])('are told apart from the machines\' failures: %j', (r, reason, spawned, playbook) => {
    expect(environmentFault({ exitCode: null, timedOut: false, hasDuffyOut: false, ...r })).toEqual({ reason, spawned, ...playbook });
  });

  it.each([
    ['a failed task', { exitCode: 2, hasReport: true }],
    ['a hang past the timeout (Duffy killed it)', { timedOut: true, signal: 'SIGKILL' }],
    ['a run that answered', { exitCode: 4, hasDuffyOut: true }],
    ['an unreachable host (exit 4 with a play report)', { exitCode: 4, hasReport: true }],
  ])('leave %s to the machine', (_name, r) => {
    expect(environmentFault({ exitCode: null, timedOut: false, hasDuffyOut: false, ...r })).toBeUndefined();
  });

  it('include a playbook file that is not there: nothing is spawned, every node gets the reason', async () => {
    const input = { action: 'release', nodes: [{ id: 1, hostname: 'i1', ipaddr: null, data: {} }] } as unknown as DuffyIn;
    const r = await new AnsibleRunner().run(input, { timeoutMs: 10_000, playbook: '/nonexistent/release.yml' });
    expect(r.fault).toEqual({ reason: 'playbook /nonexistent/release.yml not found', spawned: false, scope: 'playbook' });
    expect(r.nodes.get('i1')).toMatchObject({ ok: false });
  });

  it('never count against the machine, never quarantine it, and end its claim so the work is due again', () => {
    const job: Job = { pool: 'metal-intel', action: 'health_check', sessionId: null, machineIds: [1] };
    const w = given(machine(1, 'i1', 'metal-intel'), ['machine-i1', { type: 'MachineQuarantined', data: { machineId: 1, reason: 'broken', at: AT } }], claim('health_check', null));
    const m = w.machines.get(1)!;
    const write = decideEnvironmentFault(m, job, { reason: 'ansible-playbook not found on PATH', spawned: false }, run, m.revision, AT);
    expect(write.events.map((e) => e.type)).toEqual(['EnvironmentFault']);
    const after = given(machine(1, 'i1', 'metal-intel'), ['machine-i1', { type: 'MachineQuarantined', data: { machineId: 1, reason: 'broken', at: AT } }], claim('health_check', null), fault('health_check', false, null));
    const a = after.machines.get(1)!;
    expect([a.state, a.failures, a.provisioningFailures, a.job, a.lastHealthCheckAt]).toEqual(['failed', 0, 0, null, null]);
    // The check did not happen: it is due again at once, not after the health-check interval.
    expect(dueWork(after, ctx).jobs).toEqual([{ pool: 'metal-intel', action: 'health_check', sessionId: null, machineIds: [1] }]);
  });

  it('put a fill-level provision back to unused, to be tried again', () => {
    const w = given(machine(1, 'i1', 'metal-intel', 'unused'), claim('provision', null), fault('provision', false, null));
    expect(w.machines.get(1)!.state).toBe('unused');
  });
});

describe('a machine whose session ended before it was handed over', () => {
  it('goes back unused, without a release playbook, when it was never provisioned', () => {
    const w = given(...reserved(true), claim('provision'), fault('provision'), ...ended);
    const work = dueWork(w, ctx);
    expect(work.jobs).toEqual([]);
    expect(work.returns).toEqual([
      { stream: 'machine-i1', expected: w.machines.get(1)!.revision, events: [{ type: 'MachineRecycled', data: { machineId: 1, policy: 'rebuild', state: 'unused', untouched: true, at: LATER } }] },
    ]);
    const back = given(...reserved(true), claim('provision'), fault('provision'), ...ended, ['machine-i1', work.returns[0].events[0]]);
    expect([back.machines.get(1)!.state, back.machines.get(1)!.failures]).toEqual(['unused', 0]);
  });

  it('goes back ready when its contextualize never started (or never spawned)', () => {
    for (const history of [[...reserved(false), ...ended], [...reserved(false), claim('contextualize'), fault('contextualize'), ...ended]]) {
      const work = dueWork(given(...history), ctx);
      expect(work.jobs).toEqual([]);
      expect(work.returns.map((w) => w.events[0])).toMatchObject([{ type: 'MachineRecycled', data: { state: 'ready', untouched: true } }]);
    }
  });

  it('still gets its release playbook when a contextualize ran (a key may be on it)', () => {
    const w = given(...reserved(false), claim('contextualize'), fault('contextualize', true), ...ended);
    expect(dueWork(w, ctx)).toEqual({ jobs: [{ pool: 'metal-intel', action: 'release', sessionId: 1, machineIds: [1] }], returns: [] });
  });

  it('comes in the order runs start: hand-overs first, oldest session first, then releases, then health checks (not machine order)', () => {
    // i1 (the lowest id) to release, i2 to check, i3 and i4 to hand over to sessions 3 and 2.
    const handover = (machineId: number, host: string, sessionId: number): Array<[string, DuffyEvent]> => [
      machine(machineId, host, 'metal-intel', 'unused'),
      [`session-${sessionId}`, { type: 'MachineRequested', data: { sessionId, tenantId: 1, tenant: 'alice', specs: [{ pool: 'metal-intel', quantity: 1 }], expiresAt: LATER, at: AT } }],
      [`machine-${host}`, { type: 'MachineReserved', data: { machineId, hostname: host, sessionId, tenantId: 1, pool: 'metal-intel', platform: 'intel', affinity: 'established', contextualize: true, provision: true, at: AT } }],
      [`session-${sessionId}`, { type: 'SessionStarted', data: { sessionId, machineIds: [machineId], at: AT } }],
    ];
    const w = given(
      ...reserved(false), claim('contextualize'), fault('contextualize', true), ...ended,
      machine(2, 'i2', 'metal-intel'),
      ['machine-i2', { type: 'MachineQuarantined', data: { machineId: 2, reason: 'bad disk', at: AT } }],
      ...handover(3, 'i3', 3), ...handover(4, 'i4', 2),
    );
    expect(dueWork(w, ctx).jobs.map((j) => [j.action, j.sessionId, j.machineIds])).toEqual([
      ['provision', 2, [4]],
      ['provision', 3, [3]],
      ['release', 1, [1]],
      ['health_check', null, [2]],
    ]);
  });

  it('start so that each kind leaves one of the runs to the other: a hand-over never waits for releases, nor releases for hand-overs that keep coming', () => {
    const handover = (sessionId: number): Job => ({ pool: 'p', action: 'provision', sessionId, machineIds: [sessionId] });
    const release = (sessionId: number): Job => ({ pool: 'p', action: 'release', sessionId, machineIds: [100 + sessionId] });
    const [h, r] = [handover(9), release(9)];
    // Three releases under way: the fourth run is the next hand-over's.
    expect(mayStart(r, [release(1), release(2), release(3)], [r, h], 4)).toBe(false);
    expect(mayStart(h, [release(1), release(2), release(3)], [h, r], 4)).toBe(true);
    // Three hand-overs under way: the fourth is a waiting release's (a re-checker saw one wait 5 min 21 s), or another hand-over's when none waits.
    expect(mayStart(h, [handover(1), handover(2), handover(3)], [h, r], 4)).toBe(false);
    expect(mayStart(r, [handover(1), handover(2), handover(3)], [h, r], 4)).toBe(true);
    expect(mayStart(h, [handover(1), handover(2), handover(3)], [h], 4)).toBe(true);
    expect(mayStart(h, [handover(1), handover(2), release(3), release(4)], [h], 4)).toBe(false);
  });

  it('goes back ready when the contextualize that never spawned is recorded after the release', () => {
    const w = given(...reserved(false), claim('contextualize'), ...ended, fault('contextualize'));
    expect(dueWork(w, ctx).returns.map((x) => x.events[0])).toMatchObject([{ type: 'MachineRecycled', data: { state: 'ready', untouched: true } }]);
  });

  it('when cancelled before the session started, goes back the same way', () => {
    const w = given(...reserved(false).slice(0, 4), ['machine-i1', { type: 'MachineReservationCancelled', data: { machineId: 1, sessionId: 1, reason: 'lost a race', at: AT } }]);
    expect(dueWork(w, ctx).returns.map((x) => x.events[0])).toMatchObject([{ type: 'MachineRecycled', data: { state: 'ready', untouched: true } }]);
  });
});

describe('a session ended while another instance runs its hand-over (a shared store)', () => {
  const DEADLINE = '2099-01-01T00:00:00.000Z';
  const theirs = (action: 'provision' | 'contextualize'): [string, DuffyEvent] => [
    'machine-i1',
    { type: 'PlaybookStarted', data: { machineId: 1, action, sessionId: 1, instance: 'them', deadline: DEADLINE, at: AT } },
  ];
  const elsewhere = { ...ctx, soleInstance: false };

  it.each([
    ['contextualize', reserved(false)],
    ['provision', reserved(true)],
  ] as const)('when the session ends during their %s, then no one else releases or returns the machine while their claim is live', (action, history) => {
    const w = given(...history, theirs(action), ...ended);
    expect(dueWork(w, elsewhere)).toEqual({ jobs: [], returns: [] });
    // Past its deadline the claim lapses (they died): the work is due here.
    const work = dueWork(w, { ...elsewhere, now: Date.parse(DEADLINE) + 1 });
    expect([...work.jobs.map((j) => j.action), ...work.returns.map((r) => r.events[0].type)]).toEqual([action === 'contextualize' ? 'release' : 'MachineRecycled']);
  });

  it('when their run is over, then they release it at once', () => {
    const w = given(...reserved(false), theirs('contextualize'), ...ended);
    expect(dueWork(w, { ...elsewhere, instance: 'them' }).jobs).toEqual([{ pool: 'metal-intel', action: 'release', sessionId: 1, machineIds: [1] }]);
  });
});

describe('a session ended while its machine is provisioned, in a pool that recycles at once (reuse, no keys, no artifacts)', () => {
  const instant = Object.assign(new PoolConfig(), { name: 'metal-intel', type: 'baremetal', arch: 'x86_64', platform: 'intel', contextualize: false, 'release-policy': 'reuse' });
  const here = { ...ctx, pools: (n: string) => (n === instant.name ? instant : undefined) };
  const provisioning: Array<[string, DuffyEvent]> = [
    tenant(1, 'alice'),
    machine(1, 'i1', 'metal-intel', 'unused'),
    ['session-1', { type: 'MachineRequested', data: { sessionId: 1, tenantId: 1, tenant: 'alice', specs: [{ pool: 'metal-intel', quantity: 1 }], expiresAt: LATER, at: AT } }],
    ['machine-i1', { type: 'MachineReserved', data: { machineId: 1, hostname: 'i1', sessionId: 1, tenantId: 1, pool: 'metal-intel', platform: 'intel', affinity: 'established', contextualize: false, provision: true, at: AT } }],
    ['session-1', { type: 'SessionStarted', data: { sessionId: 1, machineIds: [1], at: AT } }],
    claim('provision'),
  ];

  it('when it ends, then the machine is released, not recycled under its running provision; it goes back unused once the run is over', () => {
    const w = given(...provisioning);
    const writes = decideEndSession(w, w.sessions.get(1)!, { reason: 'done', now: LATER, recyclesInstantly: () => true });
    expect(writes.find((x) => x.stream === 'machine-i1')!.events.map((e) => e.type)).toEqual(['MachineReleased']);
    const after = given(...provisioning, ...writes.flatMap((x) => x.events.map((e): [string, DuffyEvent] => [x.stream, e])));
    const m = after.machines.get(1)!;
    expect([m.state, isFree(m), decideRecycle(m, 'reuse', LATER)]).toEqual(['deprovisioning', false, null]);
    expect(dueWork(after, { ...here, runningHere: () => true })).toEqual({ jobs: [], returns: [] });
    expect(dueWork(after, here).returns.map((x) => x.events[0])).toMatchObject([{ type: 'MachineRecycled', data: { state: 'unused', untouched: true } }]);
  });
});

describe('failures in a row (quarantine-after 3)', () => {
  const three = { ...pool, 'quarantine-after': 3 } as typeof pool;
  const job = (action: 'contextualize' | 'release', sessionId: number): Job => ({ pool: 'metal-intel', action, sessionId, machineIds: [1] });
  /** Session `s` gets i1, its contextualize fails, the session fails and the release runs (ok or not). */
  const handOverFails = (s: number, releaseOk = true): Array<[string, DuffyEvent]> => [
    [`session-${s}`, { type: 'MachineRequested', data: { sessionId: s, tenantId: 1, tenant: 'alice', specs: [{ pool: 'metal-intel', quantity: 1 }], expiresAt: LATER, at: AT } }],
    ['machine-i1', { type: 'MachineReserved', data: { machineId: 1, hostname: 'i1', sessionId: s, tenantId: 1, pool: 'metal-intel', platform: 'intel', affinity: 'established', contextualize: true, provision: false, at: AT } }],
    [`session-${s}`, { type: 'SessionStarted', data: { sessionId: s, machineIds: [1], at: AT } }],
    ['machine-i1', { type: 'ProvisioningFailed', data: { machineId: 1, sessionId: s, action: 'contextualize', error: 'disk on fire', run, at: AT } }],
    [`session-${s}`, { type: 'SessionFailed', data: { sessionId: s, reason: 'no replacement', at: AT } }],
    ['machine-i1', { type: 'MachineReleased', data: { machineId: 1, sessionId: s, reason: 'failed', at: AT } }],
    releaseOk
      ? ['machine-i1', { type: 'MachineRecycled', data: { machineId: 1, policy: 'rebuild', state: 'ready', run: { ...run, action: 'release' }, at: AT } }]
      : ['machine-i1', { type: 'ProvisioningFailed', data: { machineId: 1, sessionId: s, action: 'release', error: 'ipmi down', run, at: AT } }],
  ];
  const failing = { ok: false, ipaddr: null, error: 'disk on fire' } as const;

  it('given two hand-overs that failed, each followed by a release that worked, when the third fails, then the machine is quarantined', () => {
    const w = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'), ...handOverFails(1), ...handOverFails(2), ...handOverFails(3).slice(0, 3));
    expect(w.machines.get(1)!.failures).toBe(2);
    const outcome = decideRunOutcome(w.machines.get(1)!, three, job('contextualize', 3), failing, { ...run, action: 'contextualize' }, w.machines.get(1)!.revision, AT);
    expect(outcome.events).toEqual([
      expect.objectContaining({ type: 'ProvisioningFailed' }),
      { type: 'MachineQuarantined', data: { machineId: 1, reason: '3 failures in a row, last: contextualize: disk on fire', at: AT } },
    ]);
  });

  it('given releases that failed, when a release works, then the row ends (a release that fails now and then is no row)', () => {
    const releaseFails = (s: number): Array<[string, DuffyEvent]> => [
      ...handOverFails(s).slice(0, 3),
      [`session-${s}`, { type: 'SessionReleased', data: { sessionId: s, reason: 'done', at: AT } }],
      ['machine-i1', { type: 'MachineReleased', data: { machineId: 1, sessionId: s, reason: 'done', at: AT } }],
      ['machine-i1', { type: 'ProvisioningFailed', data: { machineId: 1, sessionId: s, action: 'release', error: 'ipmi down', run, at: AT } }],
    ];
    const recycledOk: [string, DuffyEvent] = ['machine-i1', { type: 'MachineRecycled', data: { machineId: 1, policy: 'rebuild', state: 'ready', run: { ...run, action: 'release' }, at: AT } }];
    const w = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'), ...releaseFails(1));
    expect(w.machines.get(1)!.failures).toBe(1);
    expect(given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'), ...releaseFails(1), recycledOk).machines.get(1)!.failures).toBe(0);
  });

  it('given a failed hand-over and then a failed release, when a release works, then the row goes on (the hand-over still failed)', () => {
    const w = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel'), ...handOverFails(1, false), ['machine-i1', { type: 'MachineRecycled', data: { machineId: 1, policy: 'rebuild', state: 'ready', run: { ...run, action: 'release' }, at: AT } }]);
    expect(w.machines.get(1)!.failures).toBe(2);
  });

  it('given hand-overs that provision first (unused machines) and then fail their contextualize, when the third fails, then the machine is quarantined', () => {
    /** Session `s` gets unused i1: its provision works, its contextualize fails, the release works and i1 is unused again. */
    const provisionedThenFails = (s: number): Array<[string, DuffyEvent]> => {
      const cycle = handOverFails(s);
      const reserved: [string, DuffyEvent] = ['machine-i1', { type: 'MachineReserved', data: { machineId: 1, hostname: 'i1', sessionId: s, tenantId: 1, pool: 'metal-intel', platform: 'intel', affinity: 'established', contextualize: true, provision: true, at: AT } }];
      const provisioned: [string, DuffyEvent] = ['machine-i1', { type: 'MachineProvisioned', data: { machineId: 1, sessionId: s, ipaddr: null, run: { ...run, exitCode: 0, tail: '' }, at: AT } }];
      const unused: [string, DuffyEvent] = ['machine-i1', { type: 'MachineRecycled', data: { machineId: 1, policy: 'shutdown', state: 'unused', run: { ...run, action: 'release' }, at: AT } }];
      return [cycle[0], reserved, cycle[2], provisioned, ...cycle.slice(3, 6), unused];
    };
    const w = given(tenant(1, 'alice'), machine(1, 'i1', 'metal-intel', 'unused'), ...provisionedThenFails(1), ...provisionedThenFails(2), ...provisionedThenFails(3).slice(0, 4));
    expect(w.machines.get(1)!.failures).toBe(2);
    const outcome = decideRunOutcome(w.machines.get(1)!, three, job('contextualize', 3), failing, { ...run, action: 'contextualize' }, w.machines.get(1)!.revision, AT);
    expect(outcome.events.map((e) => e.type)).toEqual(['ProvisioningFailed', 'MachineQuarantined']);
  });
});

describe('a failed replacement', () => {
  it('names what the lost machine failed with', () => {
    const w = given(...reserved(false), ['machine-i1', { type: 'ProvisioningFailed', data: { machineId: 1, sessionId: 1, action: 'contextualize', error: 'disk on fire', run, at: AT } }]);
    const d = decideReplacement(w, w.sessions.get(1)!, POOLS, DEFAULTS, () => true, () => false, AT, 'i1: disk on fire');
    expect(d).toEqual({ fail: expect.stringMatching(/^no replacement for a machine whose hand-over failed \(i1: disk on fire\): /) });
  });

  it('stays within the quota as it is now: an admin lowered it during the hand-over, so no machine is reserved over it', () => {
    // alice's session asked for 2 (i1, i2) under a quota of 2; the quota went down to 1; i1's hand-over failed.
    const history: Array<[string, DuffyEvent]> = [
      tenant(1, 'alice', { nodeQuota: 2 }),
      machine(1, 'i1', 'metal-intel'),
      machine(2, 'i2', 'metal-intel'),
      machine(3, 'i3', 'metal-intel'),
      ['session-1', { type: 'MachineRequested', data: { sessionId: 1, tenantId: 1, tenant: 'alice', specs: [{ pool: 'metal-intel', quantity: 2 }], expiresAt: LATER, at: AT } }],
      ['tenant-alice', { type: 'QuotaClaimed', data: { sessionId: 1, tenantId: 1, count: 2, at: AT } }],
      ...[1, 2].map((id): [string, DuffyEvent] => [`machine-i${id}`, { type: 'MachineReserved', data: { machineId: id, hostname: `i${id}`, sessionId: 1, tenantId: 1, pool: 'metal-intel', platform: 'intel', affinity: 'established', contextualize: true, provision: false, at: AT } }]),
      ['session-1', { type: 'SessionStarted', data: { sessionId: 1, machineIds: [1, 2], at: AT } }],
      ['machine-i1', { type: 'ProvisioningFailed', data: { machineId: 1, sessionId: 1, action: 'contextualize', error: 'disk on fire', run, at: AT } }],
    ];
    const lowered: [string, DuffyEvent] = ['tenant-alice', { type: 'TenantUpdated', data: { tenantId: 1, changes: { nodeQuota: 1 }, at: AT } }];
    const replace = (w: ReturnType<typeof given>) => decideReplacement(w, w.sessions.get(1)!, POOLS, DEFAULTS, () => true, () => false, AT, 'i1: disk on fire');
    expect(replace(given(...history))).toEqual(expect.arrayContaining([expect.objectContaining({ stream: 'machine-i3' })]));
    expect(replace(given(...history, lowered))).toEqual({
      fail: 'no replacement for a machine whose hand-over failed (i1: disk on fire): quota exceeded: tenant alice holds 1 of 1 nodes and the replacement needs 1 more',
    });
  });
});

describe('replacements for a session whose hand-overs fail (a broken playbook)', () => {
  const reserve = (id: number): [string, DuffyEvent] => [`machine-i${id}`, { type: 'MachineReserved', data: { machineId: id, hostname: `i${id}`, sessionId: 1, tenantId: 1, pool: 'metal-intel', platform: 'intel', affinity: 'established', contextualize: true, provision: false, at: AT } }];
  const fails = (id: number): [string, DuffyEvent] => [`machine-i${id}`, { type: 'ProvisioningFailed', data: { machineId: id, sessionId: 1, action: 'contextualize', error: 'broken role', run, at: AT } }];
  const start: Array<[string, DuffyEvent]> = [
    tenant(1, 'alice', { nodeQuota: 5 }),
    ...[1, 2, 3, 4, 5].map((id) => machine(id, `i${id}`, 'metal-intel')),
    ['session-1', { type: 'MachineRequested', data: { sessionId: 1, tenantId: 1, tenant: 'alice', specs: [{ pool: 'metal-intel', quantity: 1 }], expiresAt: LATER, at: AT } }],
    ['tenant-alice', { type: 'QuotaClaimed', data: { sessionId: 1, tenantId: 1, count: 1, at: AT } }],
    reserve(1),
    ['session-1', { type: 'SessionStarted', data: { sessionId: 1, machineIds: [1], at: AT } }],
  ];
  const replace = (w: ReturnType<typeof given>) => decideReplacement(w, w.sessions.get(1)!, POOLS, DEFAULTS, () => true, () => false, AT, 'broken role');
  const reserved = (d: ReturnType<typeof replace>) => (Array.isArray(d) ? d.filter((x) => x.stream.startsWith('machine-')).map((x) => x.stream) : d);

  it('given a machine that failed for the session, when a replacement is chosen, then it is never that machine again', () => {
    // Released and ready again, i1 is the least worn (a failed hand-over counts no allocation): it came back before.
    const recycled: [string, DuffyEvent] = ['machine-i1', { type: 'MachineRecycled', data: { machineId: 1, policy: 'rebuild', state: 'ready', run: { ...run, action: 'release' }, at: AT } }];
    const w = given(...start, fails(1), recycled);
    expect(w.machines.get(1)!.state).toBe('ready');
    expect(reserved(replace(w))).toEqual(['machine-i2']);
    expect(reserved(replace(given(...start, fails(1), reserve(2), fails(2))))).toEqual(['machine-i3']);
  });

  it('given as many failed hand-overs as the machines asked for + 2, when one more fails, then the session fails instead of going through the pool', () => {
    const three = given(...start, fails(1), reserve(2), fails(2), reserve(3), fails(3));
    expect(replace(three)).toEqual({ fail: expect.stringMatching(/^no replacement for a machine whose hand-over failed \(broken role\): 3 hand-overs failed for this session, as many as it tries \(the machines asked for \+ 2\); is the pool's playbook broken\?$/) });
  });
});

describe('a run of several machines that times out', () => {
  const timedOut: PlaybookRun = { ...run, exitCode: null, timedOut: true, tail: '' };
  const fill = [machine(1, 'i1', 'metal-intel', 'unused'), machine(2, 'i2', 'metal-intel', 'unused')];
  const claims = [1, 2].map((id): [string, DuffyEvent] => [`machine-i${id}`, { type: 'PlaybookStarted', data: { machineId: id, action: 'provision', sessionId: null, instance: 'me', deadline: LATER, at: AT } }]);
  const job: Job = { pool: 'metal-intel', action: 'provision', sessionId: null, machineIds: [1, 2] };

  it('blames nobody, and runs each machine again alone', () => {
    const w = given(...fill, ...claims);
    const outcome = [1, 2].map((id) => decideRunOutcome(w.machines.get(id)!, pool, job, { ok: false, ipaddr: null, error: 'playbook timed out' }, timedOut, w.machines.get(id)!.revision, AT, 2));
    expect(outcome.map((o) => o.events.map((e) => e.type))).toEqual([['PlaybookTimedOutInBatch'], ['PlaybookTimedOutInBatch']]);
    const after = given(...fill, ...claims, ...outcome.map((o): [string, DuffyEvent] => [o.stream, o.events[0]]));
    expect([...after.machines.values()].map((m) => [m.state, m.failures, m.job])).toEqual([['unused', 0, null], ['unused', 0, null]]);
    // Both still wanted by the fill level (fill-level 0 here: ask a pool that wants two).
    const two = Object.assign(new PoolConfig(), pool, { 'fill-level': 2 });
    expect(dueWork(after, { ...ctx, pools: () => two }).jobs.map((j) => j.machineIds)).toEqual([[1], [2]]);
  });

  it('alone, counts against the machine as before', () => {
    const w = given(...fill, ...claims);
    const alone = decideRunOutcome(w.machines.get(1)!, pool, { ...job, machineIds: [1] }, { ok: false, ipaddr: null, error: 'playbook timed out' }, timedOut, 1, AT, 1);
    expect(alone.events.map((e) => e.type)).toEqual(['ProvisioningFailed', 'MachineQuarantined']);
  });
});

describe('a run of several machines that fails without saying which (one host unreachable stops the play for all)', () => {
  const unreachable: PlaybookRun = { ...run, exitCode: 4, tail: 'UNREACHABLE!' };
  const fill = [machine(1, 'i1', 'metal-intel', 'unused'), machine(2, 'i2', 'metal-intel', 'unused')];
  const claims = [1, 2].map((id): [string, DuffyEvent] => [`machine-i${id}`, { type: 'PlaybookStarted', data: { machineId: id, action: 'provision', sessionId: null, instance: 'me', deadline: LATER, at: AT } }]);
  const job: Job = { pool: 'metal-intel', action: 'provision', sessionId: null, machineIds: [1, 2] };
  const input = { action: 'provision', nodes: [1, 2].map((id) => ({ id, hostname: `i${id}`, ipaddr: null, data: {} })) } as unknown as DuffyIn;

  it('given a run with no duffy_out, when its outcome is decided, then nobody is blamed and each machine runs again alone', () => {
    const nodes = outcomes(input, '{"plays": []}', { exitCode: 4, timedOut: false });
    expect(nodes.get('i1')).toEqual({ ok: false, ipaddr: null, error: 'playbook failed with exit code 4 (a host unreachable)', unattributed: true });
    const w = given(...fill, ...claims);
    const outcome = [1, 2].map((id) => decideRunOutcome(w.machines.get(id)!, pool, job, nodes.get(`i${id}`)!, unreachable, w.machines.get(id)!.revision, AT, 2));
    expect(outcome.map((o) => o.events.map((e) => [e.type, (e.data as { error?: string }).error]))).toEqual([
      [['PlaybookFailedInBatch', 'playbook failed with exit code 4 (a host unreachable)']],
      [['PlaybookFailedInBatch', 'playbook failed with exit code 4 (a host unreachable)']],
    ]);
    const after = given(...fill, ...claims, ...outcome.map((o): [string, DuffyEvent] => [o.stream, o.events[0]]));
    expect([...after.machines.values()].map((m) => [m.state, m.failures, m.job, m.runAlone])).toEqual([['unused', 0, null, true], ['unused', 0, null, true]]);
  });

  it('given a run whose duffy_out names the failed machine, then only that machine is blamed, as before', () => {
    const nodes = outcomes(input, JSON.stringify({ plays: [{ tasks: [{ hosts: { localhost: { ansible_facts: { duffy_out: { nodes: [{ hostname: 'i1', ok: false, error: 'disk' }, { hostname: 'i2', ok: true }] } } } } }] }] }), { exitCode: 2, timedOut: false });
    const w = given(...fill, ...claims);
    const first = decideRunOutcome(w.machines.get(1)!, pool, job, nodes.get('i1')!, { ...run, exitCode: 2 }, w.machines.get(1)!.revision, AT, 2);
    expect(first.events.map((e) => e.type)).toEqual(['ProvisioningFailed', 'MachineQuarantined']);
  });

  it('given the machine run alone, when it fails with no duffy_out, then it counts against that machine', () => {
    const nodes = outcomes({ ...input, nodes: input.nodes.slice(0, 1) }, '{"plays": []}', { exitCode: 4, timedOut: false });
    const w = given(...fill, ...claims);
    const alone = decideRunOutcome(w.machines.get(1)!, pool, { ...job, machineIds: [1] }, nodes.get('i1')!, unreachable, w.machines.get(1)!.revision, AT, 1);
    expect(alone.events.map((e) => e.type)).toEqual(['ProvisioningFailed', 'MachineQuarantined']);
  });
});
