import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { SqliteEventStore } from '../src/adapters/eventstore/sqlite-event-store.js';
import { headFileOf } from '../src/adapters/eventstore/data-dir-lock.js';
import { GENESIS, eventHash, globalLink } from '../src/audit/chain.js';
import { type DuffyEvent, stream } from '../src/domain/events.js';
import type { PoolProfile } from '../src/domain/policy.js';

export const POOLS: PoolProfile[] = [
  { name: 'metal-intel-x86_64', type: 'baremetal', arch: 'x86_64', platform: 'intel' },
  { name: 'metal-amd-x86_64', type: 'baremetal', arch: 'x86_64', platform: 'amd' },
  { name: 'metal-arm-aarch64', type: 'baremetal', arch: 'aarch64', platform: 'arm' },
  { name: 'vm-intel-x86_64', type: 'vm', arch: 'x86_64', platform: 'intel' },
  { name: 'vm-arm-aarch64', type: 'vm', arch: 'aarch64', platform: 'arm' },
];
/** Share of machines per pool, as in the simulator's default farm (20/16/10/8/6 of 60). */
const POOL_SHARE = [20 / 60, 16 / 60, 10 / 60, 8 / 60, 6 / 60];
export const poolFor = (i: number, n: number) => {
  let edge = 0;
  for (let p = 0; p < POOLS.length; p++) {
    edge += POOL_SHARE[p] * n;
    if (i < edge) return POOLS[p].name;
  }
  return POOLS[POOLS.length - 1].name;
};

/**
 * A ledger file as the server records one: tenants, machines, then whole session cycles round the machines (a
 * request's append: MachineRequested, QuotaClaimed, MachineReserved, SessionStarted; a release's: SessionReleased,
 * MachineReleased, QuotaReturned, MachineRecycled), then IdAllocated events up to `total`. Rows are the server's: its
 * stream names and revisions, a UUID id, data and chained metadata as JSON text. Written straight into the file
 * (synchronous off), so a million events take seconds, not the minutes appends through the writer would.
 * Returns how many events it wrote.
 */
export async function writeLedgerFile(file: string, total: number, farm: { machines: number; tenants: number }): Promise<number> {
  const { machines, tenants } = farm;
  // The store makes the file (its schema, its append-only triggers); the rows go in directly, chained as it chains them.
  await new SqliteEventStore(file).close();
  rmSync(headFileOf(file), { force: true });
  const db = new Database(file);
  db.pragma('synchronous = OFF');
  const insert = db.prepare('INSERT INTO events (stream, revision, id, type, data, metadata, chain) VALUES (?, ?, ?, ?, ?, ?, ?)');
  const begin = db.prepare('BEGIN');
  const commit = db.prepare('COMMIT');
  let written = 0;
  let clock = Date.parse('2026-01-01T00:00:00.000Z');
  const at = () => new Date((clock += 1000)).toISOString();
  const heads = new Map<string, string>();
  let chain = GENESIS;
  const write = (stream: string, revision: number, event: DuffyEvent) => {
    if (written % 10_000 === 0) begin.run();
    written += 1;
    const covered = { correlationId: randomUUID(), actor: 'bench', at: (event.data as { at?: string }).at ?? at() };
    const prevHash = heads.get(stream) ?? GENESIS;
    const hash = eventHash(prevHash, { stream, revision, type: event.type, data: event.data, metadata: covered });
    heads.set(stream, hash);
    chain = globalLink(chain, BigInt(written), hash);
    insert.run(stream, revision, randomUUID(), event.type, JSON.stringify(event.data), JSON.stringify({ ...covered, prevHash, hash }), chain);
    if (written % 10_000 === 0) commit.run();
  };
  for (let t = 1; t <= tenants; t++) {
    const data = { tenantId: t, name: `tenant-${t}`, apiKeyDigest: `digest-${t}`, isAdmin: false, sshKey: 'ssh-ed25519 AAAA', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null, at: at() };
    write(stream.tenant(`tenant-${t}`), 0, { type: 'TenantRegistered', data });
  }
  for (let id = 1; id <= machines; id++) {
    const data = { machineId: id, hostname: `m${id}.bench`, ipaddr: null, pool: poolFor(id - 1, machines), reusable: true, data: {}, state: 'ready' as const, at: at() };
    write(stream.machine(data.hostname), 0, { type: 'MachineRegistered', data });
  }
  let sessionId = 0;
  while (written + 8 <= total) {
    sessionId += 1;
    const machineId = ((sessionId - 1) % machines) + 1;
    const tenantId = ((sessionId - 1) % tenants) + 1;
    const pool = POOLS.find((p) => p.name === poolFor(machineId - 1, machines))!;
    // Stream revisions follow from the round: each cycle adds 3 events to its machine's stream and 2 to its tenant's.
    const [m, t] = [3 * Math.floor((sessionId - 1) / machines), 2 * Math.floor((sessionId - 1) / tenants)];
    const [machine, tenant, session] = [stream.machine(`m${machineId}.bench`), stream.tenant(`tenant-${tenantId}`), stream.session(sessionId)];
    const now = at();
    write(session, 0, { type: 'MachineRequested', data: { sessionId, tenantId, tenant: `tenant-${tenantId}`, specs: [{ pool: pool.name, quantity: 1 }], expiresAt: now, at: now } });
    write(tenant, t + 1, { type: 'QuotaClaimed', data: { tenantId, sessionId, count: 1, at: now } });
    write(machine, m + 1, {
      type: 'MachineReserved',
      data: { machineId, hostname: `m${machineId}.bench`, sessionId, tenantId, pool: pool.name, platform: pool.platform, affinity: 'kept', contextualize: false, at: now },
    });
    write(session, 1, { type: 'SessionStarted', data: { sessionId, machineIds: [machineId], at: now } });
    const later = at();
    write(session, 2, { type: 'SessionReleased', data: { sessionId, reason: 'done', at: later } });
    write(machine, m + 2, { type: 'MachineReleased', data: { machineId, sessionId, reason: 'done', at: later } });
    write(tenant, t + 2, { type: 'QuotaReturned', data: { tenantId, sessionId, count: 1, at: later } });
    write(machine, m + 3, { type: 'MachineRecycled', data: { machineId, policy: 'reuse', state: 'ready', at: later } });
  }
  // The real ledger has IdAllocated events too (ids of tenants and machines): they make up the round figure.
  for (let revision = 0; written < total; revision++) write(stream.ids('machine'), revision, { type: 'IdAllocated', data: { kind: 'machine' } });
  if (db.inTransaction) commit.run();
  db.close();
  return written;
}
