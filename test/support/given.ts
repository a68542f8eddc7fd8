import type { RecordedEvent } from '../../src/application/ports/event-store.port.js';
import type { Write } from '../../src/domain/decide.js';
import type { DuffyEvent } from '../../src/domain/events.js';
import { type World, emptyWorld, evolve } from '../../src/domain/world.js';

/** Given-when-then on events: the World folded from `given`, the events a decision writes out. */
export function given(...history: Array<[stream: string, event: DuffyEvent]>): World {
  const world = emptyWorld();
  const revisions = new Map<string, number>();
  let position = 0n;
  for (const [stream, event] of history) {
    const revision = (revisions.get(stream) ?? -1) + 1;
    revisions.set(stream, revision);
    evolve(world, { ...event, revision, position: ++position } as never);
  }
  return world;
}

/** Ledger fixtures as recorded events, in position order, each at its stream's next revision; `actor` goes to the metadata. */
export function recorded(...history: Array<[stream: string, event: DuffyEvent, actor?: string]>): RecordedEvent[] {
  const revisions = new Map<string, number>();
  return history.map(([stream, e, actor], i) => {
    const revision = (revisions.get(stream) ?? -1) + 1;
    revisions.set(stream, revision);
    return { id: String(i), stream, revision, position: BigInt(i + 1), type: e.type, data: e.data as never, metadata: actor ? { actor } : {} };
  });
}

/** The events of writes, with their streams and guards, for `expect(...).toEqual`. */
export const written = (writes: Write[]) => writes.map((w) => ({ stream: w.stream, expected: w.expected, events: w.events }));

export const AT = '2026-01-01T00:00:00.000Z';
export const LATER = '2026-01-01T01:00:00.000Z';

export const tenant = (tenantId: number, name: string, extra: Partial<{ nodeQuota: number | null; isAdmin: boolean }> = {}): [string, DuffyEvent] => [
  `tenant-${name}`,
  {
    type: 'TenantRegistered',
    data: { tenantId, name, apiKeyDigest: `digest-${name}`, isAdmin: extra.isAdmin ?? false, sshKey: 'ssh-ed25519 AAAA', nodeQuota: extra.nodeQuota ?? null, sessionLifetime: null, sessionLifetimeMax: null, at: AT },
  },
];

export const machine = (machineId: number, hostname: string, pool: string, state: 'ready' | 'unused' = 'ready'): [string, DuffyEvent] => [
  `machine-${hostname}`,
  { type: 'MachineRegistered', data: { machineId, hostname, ipaddr: null, pool, reusable: true, data: {}, state, at: AT } },
];

/** `count` machines of `pool` in quarantine: none free, but the pool has them (a request may wait for them). */
export const quarantined = (pool: string, count: number, firstId = 901): Array<[string, DuffyEvent]> =>
  Array.from({ length: count }, (_, i) => {
    const [stream, registered] = machine(firstId + i, `q${firstId + i}`, pool);
    return [
      [stream, registered],
      [stream, { type: 'MachineQuarantined', data: { machineId: firstId + i, reason: 'out of order', at: AT } }],
    ] as Array<[string, DuffyEvent]>;
  }).flat();

export const POOLS = [
  { name: 'metal-intel', type: 'baremetal' as const, arch: 'x86_64', platform: 'intel' },
  { name: 'metal-amd', type: 'baremetal' as const, arch: 'x86_64', platform: 'amd' },
  { name: 'vm-intel', type: 'vm' as const, arch: 'x86_64', platform: 'intel' },
];

export const DEFAULTS = { nodeQuota: 5, sessionLifetime: 3600, sessionLifetimeMax: 7200 };

/** A one-machine session of a registered tenant on a registered machine, started at AT, expiring at LATER. */
export const heldSession = (sessionId: number, holder: { tenantId: number; name: string }, on: { machineId: number; hostname: string; pool: string }): Array<[string, DuffyEvent]> => [
  [`session-${sessionId}`, { type: 'MachineRequested', data: { sessionId, tenantId: holder.tenantId, tenant: holder.name, specs: [{ pool: on.pool, quantity: 1 }], expiresAt: LATER, at: AT } }],
  [`tenant-${holder.name}`, { type: 'QuotaClaimed', data: { tenantId: holder.tenantId, sessionId, count: 1, at: AT } }],
  [`machine-${on.hostname}`, { type: 'MachineReserved', data: { machineId: on.machineId, hostname: on.hostname, sessionId, tenantId: holder.tenantId, pool: on.pool, platform: 'intel', affinity: 'established', contextualize: false, at: AT } }],
  [`session-${sessionId}`, { type: 'SessionStarted', data: { sessionId, machineIds: [on.machineId], at: AT } }],
];

/** A request of `quantity` machines of `pool` waiting in the queue (its wait ends at LATER); alice's unless said. */
export const queuedRequest = (sessionId: number, quantity: number, holder = { tenantId: 1, name: 'alice' }, pool = 'metal-intel'): Array<[string, DuffyEvent]> => [
  [`session-${sessionId}`, { type: 'MachineRequested', data: { sessionId, tenantId: holder.tenantId, tenant: holder.name, specs: [{ pool, quantity }], expiresAt: LATER, at: AT } }],
  [`session-${sessionId}`, { type: 'RequestQueued', data: { sessionId, reason: `pool ${pool}: none free`, waitUntil: LATER, at: AT } }],
];

/** alice(1) holds session 1 on metal-intel i1, created at AT, expiring at LATER (AT + 1 h); DEFAULTS allow 2 h at most. */
export const startedSession = (): Array<[string, DuffyEvent]> => [
  tenant(1, 'alice'),
  machine(1, 'i1', 'metal-intel'),
  ...heldSession(1, { tenantId: 1, name: 'alice' }, { machineId: 1, hostname: 'i1', pool: 'metal-intel' }),
];
