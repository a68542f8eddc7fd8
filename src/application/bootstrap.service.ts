import { type Machine, type World, canonicalIp, handedOver, hostKey, isRetired, machineIdOfHost } from '../domain/world.js';
import { Injectable, Logger } from '@nestjs/common';
import { mkdirSync, readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { CommandBus } from '@nestjs/cqrs';
import { Catalog, assertAdminKey } from './catalog.js';
import { ConfigError, type MachineConfig } from '../config/config.js';
import { RegisterTenantCommand } from './commands.js';
import { NOTHING_IN_FLIGHT, decideRecordDefaults, defaultsChanges, decideRecordPools, decideRegisterMachines, isRefusal, poolProfileChanges } from '../domain/decide.js';
import { Ledger } from './ledger.service.js';
import { Provisioner } from './provisioner.service.js';
import { ReadSide } from './read-side.service.js';
import { WaitingQueue } from './queue.service.js';
import { Reconciler } from './reconciler.service.js';
import { SessionLifecycle, metaFor } from './session-lifecycle.js';
import { MAX_APPEND_BYTES } from './ports/event-store.port.js';

/** Start-up: fold the ledger, create the first admin on an empty ledger, register configured machines not yet known (in batches). */
@Injectable()
export class Bootstrap {
  private readonly log = new Logger('Bootstrap');

  constructor(
    private readonly ledger: Ledger,
    private readonly catalog: Catalog,
    private readonly commands: CommandBus,
    private readonly reconciler: Reconciler,
    private readonly provisioner: Provisioner,
    private readonly readSide: ReadSide,
    private readonly queue: WaitingQueue,
    private readonly sessions: SessionLifecycle,
  ) {}

  /**
   * `showAdminKey`: given the key of an admin tenant this start created, at once, before anything else the start does
   * can fail or be killed (it was shown once the server listened, and a start killed while it registered a large
   * inventory left an admin nobody had the key of).
   */
  async run(options: { reconcileEveryMs?: number; showAdminKey?: (key: string) => void } = {}): Promise<void> {
    // First (main holds the data directory's lock): their work is void and done again, and the start (folding the
    // ledger, a read-side rebuild, a large inventory) may take minutes they would go on touching machines.
    await this.provisioner.reapLeftovers();
    await this.ledger.start();
    this.checkPoolsOfMachines();
    this.checkInventory();
    this.setAsideUnknownArtifacts();
    await this.readSide.start();
    // Before any decision made under them: a replay judges quotas and leases by what was recorded here.
    const defaultsChanged = defaultsChanges(this.ledger.world, this.catalog.defaults);
    if (defaultsChanged.length > 0) this.log.warn(`the configuration changed the defaults since the last start, for every tenant without a setting of its own (admins too): ${defaultsChanged.join('; ')}`);
    await this.ledger.decide((world, inFlight) => decideRecordDefaults(world, this.catalog.defaults, this.ledger.clock.now(), inFlight), metaFor(null, { process: 'bootstrap' }));
    // A pool's type, arch or platform changed in the file moves its machines to another kind or family: said, and recorded.
    const moved = poolProfileChanges(this.ledger.world, this.catalog.profiles);
    if (moved.length > 0) this.log.warn(`the configuration changed the profile of ${moved.length} pool(s) since the last start: ${moved.join('; ')}; a machine never changes pool: if this is a mistake, put the pool back as it was`);
    await this.ledger.decide((world, inFlight) => decideRecordPools(world, this.catalog.profiles, this.ledger.clock.now(), inFlight), metaFor(null, { process: 'bootstrap' }));
    const s = this.catalog.settings;
    if (this.ledger.world.tenants.size === 0) {
      // Checked only here, where it is used: on a ledger that has its admin the variable is ignored.
      assertAdminKey(s.adminKey);
      const created = await this.commands.execute(
        new RegisterTenantCommand(null, s.adminName, true, { sshKey: '', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null }, s.adminKey),
      );
      if (!s.adminKey) {
        // Shown once, by whoever started Duffy (main prints it on stderr), never in the logs: only its digest is stored.
        this.log.warn(`created admin tenant '${s.adminName}'; its API key is shown once where Duffy was started (set DUFFY_ADMIN_KEY to choose it)`);
        options.showAdminKey?.(created.apiKey);
      }
    }
    await this.forgetOrphanedCallers();
    const added = await this.importInventory();
    if (added > 0) this.log.log(`registered ${added} machine(s) from ${s.configFile}`);
    const warnOf = (hosts: string[], what: string) => {
      if (hosts.length === 0) return;
      const shown = hosts.slice(0, 5).join(', ') + (hosts.length > 5 ? ` and ${hosts.length - 5} more` : '');
      this.log.warn(`${hosts.length} machine(s) ${what}: ${shown}`);
    };
    // The configuration only adds machines: what it says of those the ledger knows, or no longer says, is not acted on.
    warnOf(configDrift(this.ledger.world, s.config.machines), `of ${s.configFile} differ from the ledger, which keeps what they were registered with (the configuration only adds machines; an admin gives a machine its hardware with PUT /api/v1/nodes/{id} {"hardware": {...}})`);
    warnOf(
      configuredButRetired(this.ledger.world, s.config.machines),
      `of ${s.configFile} are retired in the ledger and never serve again, whatever the file says (a retired machine does not come back: its host name comes back only as a new node, by POST /api/v1/nodes; a machine keeps the pool it was registered with, so a renamed pool gets none of them)`,
    );
    warnOf(
      notConfigured(this.ledger.world, s.config.machines),
      `in service are not in ${s.configFile} (removed from it, or added with POST /nodes): the configuration only adds machines, so they stay in service until retired (PUT /api/v1/nodes/ID {"retired": true}, or {"maintenance": true})`,
    );
    this.reconciler.start(options.reconcileEveryMs);
    this.provisioner.start();
    this.queue.start();
  }

  /**
   * On the embedded ledger this process is the only writer, so a request still waiting at start, in the queue or
   * for its hand-over, lost its caller with the previous process: served now, its machines would go to nobody for a
   * whole lease. A waiting one leaves the queue; one in hand-over ends, its machines released. (On a shared
   * KurrentDB another instance may still hold the caller: the wait's end or the hand-over timeout ends it.)
   */
  private async forgetOrphanedCallers(): Promise<void> {
    if (!this.ledger.store.singleWriter) return;
    const world = this.ledger.world;
    const orphans = [...world.openSessions].map((id) => world.sessions.get(id)!).filter((s) => s.status === 'waiting' || (s.status === 'active' && !handedOver(world, s)));
    if (orphans.length === 0) return;
    // Named, so on-call can tell which jobs lost their request (their tenants read why in the session).
    const named = orphans.map((s) => `session ${s.id} (${world.tenants.get(s.tenantId)?.name ?? `tenant ${s.tenantId}`}, ${s.status === 'waiting' ? 'waiting in the queue' : 'in hand-over'})`);
    const why = 'the caller\'s connection went with the previous process';
    for (const s of orphans) {
      await this.sessions.letGo(s.id, { waiting: `Duffy restarted while it waited: ${why}`, handover: `Duffy restarted before the machines were handed over: ${why}` }, 'bootstrap');
    }
    const shown = named.slice(0, 10).join(', ') + (named.length > 10 ? ` and ${named.length - 10} more` : '');
    this.log.warn(`${orphans.length} request(s) waiting in the queue or for their hand-over let go: their callers went with the previous process: ${shown}`);
  }

  /**
   * Artifacts of sessions the ledger does not know (a ledger restored from a backup: their ids will be given again)
   * go to `artifacts/set-aside-<time>/`, so a new session with the same id never serves another tenant's files.
   */
  private setAsideUnknownArtifacts(): void {
    const root = this.catalog.artifactsDir();
    let names: string[];
    try {
      names = readdirSync(root);
    } catch {
      return;
    }
    const unknown = names.filter((n) => /^session-[0-9]+$/.test(n) && Number(n.slice(8)) > this.ledger.world.lastSessionId);
    if (unknown.length === 0) return;
    const aside = join(root, `set-aside-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    mkdirSync(aside, { recursive: true });
    for (const n of unknown) renameSync(join(root, n), join(aside, n));
    this.log.warn(`artifacts of ${unknown.length} session(s) the ledger does not know (a restored ledger?) were set aside in ${aside}: ${unknown.join(', ')}`);
  }

  /**
   * A machine of the ledger whose pool left the configuration would never be provisioned, released or recycled
   * again (it stayed in `deprovisioning` for good): the configuration is refused until its machines are retired.
   */
  private checkPoolsOfMachines(): void {
    const orphans = new Map<string, string[]>();
    for (const m of this.ledger.world.machines.values()) {
      const drained = m.service === 'retired' && m.sessionId === null && m.job === null && m.releasingSession === null;
      if (m.retiredAt !== null || drained || this.catalog.pool(m.pool)) continue;
      orphans.set(m.pool, [...(orphans.get(m.pool) ?? []), m.hostname]);
    }
    if (orphans.size === 0) return;
    const pools = [...orphans].map(([pool, hosts]) => `pool ${pool} (${hosts.length > 5 ? `${hosts.slice(0, 5).join(', ')} and ${hosts.length - 5} more` : hosts.join(', ')})`);
    throw new ConfigError(
      `${this.catalog.settings.configFile}: ${pools.join('; ')}: the pool is gone from the configuration but its machines are not retired; ` +
        'put the pool back, retire them (duffy nodes retire HOST, waiting for the drain), then remove it',
    );
  }

  /**
   * The configured machines the ledger does not know yet must be registrable (an address another node has, added by
   * POST /nodes since): a bad configuration, refused before the start records anything (exit 2, one line).
   */
  private checkInventory(): void {
    const missing = this.missingMachines();
    if (missing.length === 0) return;
    const decision = decideRegisterMachines(this.ledger.world, this.catalog.profiles, { machines: missing, now: this.ledger.clock.now() }, NOTHING_IN_FLIGHT);
    if (!isRefusal(decision)) return;
    // Named where the file has it, as the configuration's own checks do (`machines[21].ipaddr: ...`).
    const named = /^node ([^:\s]+)/.exec(decision.reason)?.[1];
    const index = named === undefined ? -1 : this.catalog.settings.config.machines.findIndex((m) => hostKey(m.hostname) === hostKey(named));
    throw new ConfigError(`${this.catalog.settings.configFile}: machines${index < 0 ? '' : `[${index}]`}: ${decision.reason}`);
  }

  private missingMachines() {
    return this.catalog.settings.config.machines
      .filter((m) => machineIdOfHost(this.ledger.world, m.hostname) === undefined)
      .map((m) => ({ ...m, ipaddr: m.ipaddr ?? null, data: m.data ?? {} }));
  }

  /**
   * Registers the configured machines the ledger does not know yet, IMPORT_CHUNK per append (each append atomic,
   * ids allocated in it). A restart, or a crash half-way, registers only what is still missing.
   */
  private async importInventory(): Promise<number> {
    const meta = metaFor(null, { process: 'bootstrap' });
    const missing = this.missingMachines();
    for (const chunk of importChunks(missing)) {
      // Decided on the World at that moment: a machine another instance registered meanwhile is left out.
      await this.ledger.decide(
        (world, inFlight) =>
          decideRegisterMachines(world, this.catalog.profiles, { machines: chunk.filter((m) => machineIdOfHost(world, m.hostname) === undefined), now: this.ledger.clock.now() }, inFlight),
        meta,
      );
    }
    return missing.length;
  }
}

/** The ledger's machine of a configured host, however its name is spelt. */
function ledgerMachine(world: World, c: MachineConfig): Machine | undefined {
  const id = machineIdOfHost(world, c.hostname);
  return id === undefined ? undefined : world.machines.get(id);
}

/**
 * Configured machines the ledger already knows but with another pool, address or hardware: an operator who edits
 * them and restarts would otherwise see no effect and no word about it. Retired machines are left out.
 */
export function configDrift(world: World, machines: readonly MachineConfig[]): string[] {
  const out: string[] = [];
  for (const c of machines) {
    const m = ledgerMachine(world, c);
    if (!m || isRetired(m)) continue;
    const keys = [
      c.pool !== m.pool && `pool ${m.pool} in the ledger, ${c.pool} in the file`,
      // No address configured: provisioning may have learned one (a VM on DHCP), which is no edit.
      c.ipaddr != null && canonicalIp(c.ipaddr) !== (m.ipaddr === null ? null : canonicalIp(m.ipaddr)) && `ipaddr ${m.ipaddr ?? 'none'} in the ledger, ${c.ipaddr} in the file`,
      !isDeepStrictEqual(c.hardware ?? {}, m.hardware ?? {}) && 'hardware',
    ].filter((k): k is string => k !== false);
    if (keys.length > 0) out.push(`${c.hostname} (${keys.join('; ')})`);
  }
  return out;
}

/**
 * Configured machines the ledger has retired: an operator who retired a pool's machines to rename the pool (as the
 * start-up refusal of a pool gone suggests) would otherwise see the new pool empty with no word why.
 */
export function configuredButRetired(world: World, machines: readonly MachineConfig[]): string[] {
  return machines.flatMap((c) => {
    const m = ledgerMachine(world, c);
    return m && isRetired(m) ? [c.pool === m.pool ? c.hostname : `${c.hostname} (pool ${m.pool}, configured in ${c.pool})`] : [];
  });
}

/**
 * Machines the ledger has in service that the configuration does not list: an operator who deletes a machine from
 * it and restarts would otherwise believe it gone. Said only of a configuration that lists machines at all (a farm
 * run through POST /nodes lists none).
 */
export function notConfigured(world: World, machines: readonly MachineConfig[]): string[] {
  if (machines.length === 0) return [];
  const listed = new Set(machines.map((c) => hostKey(c.hostname)));
  const out: string[] = [];
  for (const m of world.machines.values()) {
    // One an admin put in maintenance is out of service already, as the warning advises: it would be said at every start.
    if (!isRetired(m) && m.service !== 'maintenance' && !listed.has(hostKey(m.hostname))) out.push(m.hostname);
  }
  return out;
}

/** Machines per append: one write per machine plus the id allocation, well under a store's size limit for one append. */
const IMPORT_CHUNK = 1000;
/** Characters of configuration per append, half the store's bound: each event adds its ids, time and hashes, UTF-8 may take more bytes. */
const IMPORT_CHARS = MAX_APPEND_BYTES / 2;
/** What one registration event adds to its machine's configuration (ids, time, metadata with its hashes). */
const EVENT_OVERHEAD_CHARS = 512;

/** The machines in appends of at most IMPORT_CHUNK, and of at most IMPORT_CHARS (machines with much data or hardware). */
function importChunks(machines: readonly MachineConfig[]): MachineConfig[][] {
  const chunks: MachineConfig[][] = [];
  let chunk: MachineConfig[] = [];
  let chars = 0;
  for (const m of machines) {
    const size = JSON.stringify(m).length + EVENT_OVERHEAD_CHARS;
    if (chunk.length > 0 && (chunk.length >= IMPORT_CHUNK || chars + size > IMPORT_CHARS)) {
      chunks.push(chunk);
      [chunk, chars] = [[], 0];
    }
    chunk.push(m);
    chars += size;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}
