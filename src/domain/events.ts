/**
 * Every fact Duffy records. Stored events never change meaning: a new need gets a new type or field.
 * Streams: tenant-<name>, machine-<hostname>, service-<hostname>, session-<id>, ids-<kind> (integer id sequences).
 */
export const MACHINE_STATES = [
  'unused',
  'provisioning',
  'ready',
  'contextualizing',
  'deployed',
  'deprovisioning',
  'done',
  'failed',
] as const;
export type MachineState = (typeof MACHINE_STATES)[number];
/**
 * The states a machine may be registered in. `deployed` and `contextualizing` belong to a session: a machine
 * registered so was never handed out nor released, and no admin action brought it back.
 */
export const REGISTRABLE_STATES: readonly MachineState[] = MACHINE_STATES.filter((s) => s !== 'deployed' && s !== 'contextualizing');

export const MACHINE_TYPES = ['baremetal', 'vm'] as const;
export type MachineType = (typeof MACHINE_TYPES)[number];

/**
 * What a machine is made of, as its operator describes it: `cpus`, `ram_gb`, `disk_gb`, `cpu_model`, and any other
 * key. Requests may require some of it (Beaker's host requirements).
 */
export type Hardware = Record<string, string | number | boolean>;

/** A spec's hardware needs: at least so many CPUs, GB of RAM and disk; `cpu_model` a case-insensitive substring. */
export interface HardwareRequirement {
  min_cpus?: number;
  min_ram_gb?: number;
  min_disk_gb?: number;
  cpu_model?: string;
}

/** One request can't ask for more than this many machines; quota applies on top. */
export const MAX_QUANTITY = 1000;
/** The longest a request may wait in the fair-share queue, in seconds. */
export const MAX_WAIT = 3600;

/** Pool and tenant names, and a spec's arch and platform: checked on API input, in the configuration and by the CLI. */
export const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const NAME_CHARACTERS = 'letters, digits, dot, dash or underscore, starting with a letter or digit';
export const NAME_RULE = `1-128 ${NAME_CHARACTERS}`;
/** A request's arch and platform are names of at most this many characters. */
export const MAX_SPEC_NAME = 64;

/** One line of a request: a pool by name, or a type (+ arch, platform) that the scheduler maps to pools. */
export interface NodeSpec {
  pool?: string;
  type?: MachineType;
  arch?: string;
  platform?: string;
  hardware?: HardwareRequirement;
  quantity: number;
}

/** How many machines a request asks for, all its specs together. */
export const machinesAsked = (specs: readonly NodeSpec[]) => specs.reduce((n, x) => n + x.quantity, 0);

/**
 * Whether an admin lets the scheduler hand a machine out: `maintenance` (back later) and `retired` (for good)
 * take it out; a machine held by a session stays with it until the session ends, then stays out.
 */
export const SERVICE_STATES = ['in-service', 'maintenance', 'retired'] as const;
export type MachineService = (typeof SERVICE_STATES)[number];

export type ReleaseReason = 'done' | 'expired' | 'tenant-retired' | 'failed';

export type PlaybookAction = 'provision' | 'contextualize' | 'decontextualize' | 'release' | 'collect_artifacts' | 'health_check';

/** What a playbook run leaves in the ledger: enough to audit it without its full output. */
export interface PlaybookRun {
  action: PlaybookAction;
  playbook: string;
  exitCode: number | null;
  durationMs: number;
  timedOut: boolean;
  tail: string;
}
export type RecyclePolicy = 'reuse' | 'rebuild' | 'reinstall' | 'shutdown';

export interface TenantSettings {
  sshKey: string;
  nodeQuota: number | null;
  sessionLifetime: number | null;
  sessionLifetimeMax: number | null;
}

/** A list of event types that must name every type of DuffyEvent: a type added to the union and not here fails to compile. */
type EveryEventType<T extends readonly string[]> = [Exclude<DuffyEvent['type'], T[number]>] extends [never] ? T : { missing: Exclude<DuffyEvent['type'], T[number]> };
const everyEventType = <const T extends ReadonlyArray<DuffyEvent['type']>>(types: EveryEventType<T>): ReadonlySet<string> => new Set(types as readonly string[]);

/**
 * Every event type Duffy writes. A ledger holding another was written by a newer Duffy, or edited: the World would
 * skip it and fall behind its stream's revisions, so a start refuses it and `audit verify` names it.
 */
export const EVENT_TYPES = everyEventType([
  'IdAllocated', 'TenantRegistered', 'TenantUpdated', 'TenantRetired', 'TenantReactivated', 'ActiveAdminsChanged',
  'ApiKeyAssigned', 'DefaultsSet', 'PoolsConfigured', 'QuotaClaimed', 'QuotaReturned', 'QueueSpaceClaimed',
  'MachineRegistered', 'MachineReserved', 'MachineReservationCancelled', 'MachineReleased', 'MachineRecycled',
  'PlaybookStarted', 'MachineProvisioned', 'MachineContextualized', 'ArtifactsCollected', 'ProvisioningFailed',
  'EnvironmentFault', 'PlaybookTimedOutInBatch', 'PlaybookFailedInBatch', 'MachineQuarantined',
  'MachineReturnedToService', 'MachineServiceChanged', 'MachineHardwareSet', 'SessionFailed', 'MachineRequested',
  'SessionStarted', 'RequestQueued', 'SessionRejected', 'SessionExtended', 'ReplacementReserved', 'SessionReleased',
  'SessionExpired', 'CheckpointPublished', 'LedgerRestored',
]);

/** A tenant's settings where it has none of its own (the configuration's `defaults`). */
export interface Defaults {
  nodeQuota: number;
  sessionLifetime: number;
  sessionLifetimeMax: number;
}

export type DuffyEvent =
  | { type: 'IdAllocated'; data: { kind: string } }
  | {
      type: 'TenantRegistered';
      data: TenantSettings & { tenantId: number; name: string; apiKeyDigest: string; isAdmin: boolean; at: string };
    }
  | { type: 'TenantUpdated'; data: { tenantId: number; changes: Partial<TenantSettings & { apiKeyDigest: string }>; at: string } }
  | { type: 'TenantRetired'; data: { tenantId: number; at: string } }
  | { type: 'TenantReactivated'; data: { tenantId: number; at: string } }
  /**
   * The active admins after a change to that set (an admin registered, retired or reactivated), on the `admins`
   * stream in the same append: two instances retiring the last two admins at once cannot both commit.
   */
  | { type: 'ActiveAdminsChanged'; data: { admins: number[]; at: string } }
  /**
   * A tenant was given an API key (registered, or its key changed), on the `api-keys` stream in the same append: two
   * instances giving one key to two tenants at once cannot both commit. The key's digest is in the tenant's event.
   */
  | { type: 'ApiKeyAssigned'; data: { tenantId: number; at: string } }
  /**
   * The tenant defaults of the configuration Duffy started with, on the `defaults` stream, whenever they differ from
   * the last ones recorded: the quota and lifetimes of a tenant without its own setting, so a replay judges each
   * decision by the defaults it was made under.
   */
  | { type: 'DefaultsSet'; data: Defaults & { at: string } }
  /**
   * The pools of the configuration Duffy started with (name, type, arch, platform), on the `pools` stream, whenever
   * they differ from the last ones recorded: a pool's profile changed in the file moves its machines to another kind
   * or family, which the ledger then shows (and the start warns of).
   */
  | { type: 'PoolsConfigured'; data: { pools: PoolProfile[]; at: string } }
  | { type: 'QuotaClaimed'; data: { tenantId: number; sessionId: number; count: number; at: string } }
  | { type: 'QuotaReturned'; data: { tenantId: number; sessionId: number; count: number; at: string } }
  /**
   * A request enters the queue asking for `count` machines, on the tenant's stream at its revision, in the same append
   * as its RequestQueued: two instances sharing the ledger cannot both let one tenant wait for more than its quota.
   */
  | { type: 'QueueSpaceClaimed'; data: { tenantId: number; sessionId: number; count: number; at: string } }
  | {
      type: 'MachineRegistered';
      data: {
        machineId: number;
        hostname: string;
        ipaddr: string | null;
        pool: string;
        reusable: boolean;
        data: Record<string, unknown>;
        state: MachineState;
        /** Absent in events written before hardware was recorded. */
        hardware?: Hardware;
        /** Duffy v3's free-text note on a node; absent when none was given. */
        comment?: string;
        at: string;
      };
    }
  | {
      type: 'MachineReserved';
      data: {
        machineId: number;
        hostname: string;
        sessionId: number;
        tenantId: number;
        pool: string;
        platform: string;
        /**
         * How the tenant's platform affinity was honoured (invariant 7): established (first family), kept,
         * fallback (the request named another pool or platform), not-offered (no pool of its family serves this kind),
         * overflow (asked by type: its family had too few free machines of this type and arch, another family served).
         */
        affinity: 'kept' | 'established' | 'fallback' | 'not-offered' | 'overflow';
        /** True when the hand-over runs a contextualize playbook before the machine is deployed. */
        contextualize: boolean;
        /** True when the machine was `unused` and gets provisioned for this session first. */
        provision?: boolean;
        at: string;
      };
    }
  /** No longer written (it undid half-written requests before one request became one append); older ledgers still hold it. */
  | { type: 'MachineReservationCancelled'; data: { machineId: number; sessionId: number; reason: string; at: string } }
  | { type: 'MachineReleased'; data: { machineId: number; sessionId: number; reason: ReleaseReason; at: string } }
  | {
      type: 'MachineRecycled';
      /** `untouched`: the machine was never handed over (its session ended before), so no release playbook ran. */
      data: { machineId: number; policy: RecyclePolicy; state: MachineState; run?: PlaybookRun; untouched?: true; at: string };
    }
  | {
      type: 'PlaybookStarted';
      data: { machineId: number; action: PlaybookAction; sessionId: number | null; instance: string; deadline: string; at: string };
    }
  | { type: 'MachineProvisioned'; data: { machineId: number; sessionId: number | null; ipaddr: string | null; run: PlaybookRun; at: string } }
  | { type: 'MachineContextualized'; data: { machineId: number; sessionId: number; run: PlaybookRun; at: string } }
  /**
   * `leftOut`: what the pool's artifacts limit kept out, said in words (absent before limits existed); `unnamed`: files
   * collected beyond what `files` may name (ARTIFACT_NAMES_MAX; before 2026-12-02 said in `leftOut`).
   */
  | { type: 'ArtifactsCollected'; data: { machineId: number; sessionId: number | null; files: string[]; error: string | null; leftOut?: string; unnamed?: number; run: PlaybookRun; at: string } }
  | {
      type: 'ProvisioningFailed';
      data: { machineId: number; sessionId: number | null; action: PlaybookAction; error: string; run: PlaybookRun; at: string };
    }
  /**
   * A claimed run failed on Duffy's side (no Ansible, a playbook file missing, the controller killed): the
   * claim ends and the work is due again later; it never counts against the machine. `spawned` is false when
   * ansible-playbook never started, so nothing touched the machine.
   */
  | {
      type: 'EnvironmentFault';
      data: { machineId: number; sessionId: number | null; action: PlaybookAction; error: string; spawned: boolean; run: PlaybookRun; at: string };
    }
  /**
   * A run of several machines hung past its timeout: which one hung is unknown, so none is blamed; each is run
   * again alone, where a timeout counts against the machine.
   */
  | {
      type: 'PlaybookTimedOutInBatch';
      data: { machineId: number; sessionId: number | null; action: PlaybookAction; machines: number; run: PlaybookRun; at: string };
    }
  /**
   * A run of several machines failed as a whole without saying which machine failed (no `duffy_out`: one host
   * unreachable stops the play for all): none is blamed; each is run again alone, where a failure is its own.
   */
  | {
      type: 'PlaybookFailedInBatch';
      data: { machineId: number; sessionId: number | null; action: PlaybookAction; machines: number; error: string; run: PlaybookRun; at: string };
    }
  | { type: 'MachineQuarantined'; data: { machineId: number; reason: string; at: string } }
  | { type: 'MachineReturnedToService'; data: { machineId: number; run: PlaybookRun; at: string } }
  /**
   * An admin took a machine out of service or put it back (also out of quarantine). Written to the machine's
   * `service-<hostname>` stream, so it never races a playbook's outcome or a reservation on `machine-<hostname>`.
   */
  | { type: 'MachineServiceChanged'; data: { machineId: number; hostname: string; service: MachineService; reason: string | null; actor: string | null; at: string } }
  /**
   * An admin's account of a machine's hardware, replacing the one it was registered with (a machine registered
   * before `hardware` existed, or one given more memory since). On its `service-<hostname>` stream too.
   */
  | { type: 'MachineHardwareSet'; data: { machineId: number; hostname: string; hardware: Hardware; reason: string | null; actor: string | null; at: string } }
  | { type: 'SessionFailed'; data: { sessionId: number; reason: string; at: string } }
  | {
      type: 'MachineRequested';
      data: { sessionId: number; tenantId: number; tenant: string; specs: NodeSpec[]; expiresAt: string; at: string };
    }
  | { type: 'SessionStarted'; data: { sessionId: number; machineIds: number[]; at: string; /** set when served from the queue */ expiresAt?: string } }
  /** The request asked to wait for capacity: it is served in fair-share order, or rejected at `waitUntil`. */
  | { type: 'RequestQueued'; data: { sessionId: number; reason: string; waitUntil: string; at: string } }
  | { type: 'SessionRejected'; data: { sessionId: number; reason: string; at: string } }
  | { type: 'SessionExtended'; data: { sessionId: number; expiresAt: string; at: string } }
  /**
   * Machines reserved for an active session in place of ones whose hand-over failed, on the session's stream in the
   * same append as their MachineReserved: the session's end and its replacements cannot pass each other.
   */
  | { type: 'ReplacementReserved'; data: { sessionId: number; machineIds: number[]; reason?: string; at: string } }
  | { type: 'SessionReleased'; data: { sessionId: number; reason: ReleaseReason; at: string } }
  | { type: 'SessionExpired'; data: { sessionId: number; at: string } }
  /** A signed Merkle tree head of the ledger's first `size` events (src/audit/checkpoint.ts), in stream audit-checkpoints. */
  | { type: 'CheckpointPublished'; data: { size: number; lastPosition: string; rootHash: string; time: string; signature?: string; publicKey?: string; frontier?: string[] } }
  /**
   * `duffy restore` put a backup back over a ledger that had gone on after it (the lost hours): written by the
   * restore, on stream `restores`. New session ids start above `sessionIdsUpTo`, so a job's `done N` of then never
   * ends a session made since; the machines those hours used are put in maintenance in the same append.
   */
  | { type: 'LedgerRestored'; data: LostHours & { at: string } };

/** Why a machine the hours a restore undid used is in maintenance (`at`: the restore's time). */
export const usedInUndoneHours = (at: string) => `used after the backup restored on ${at.slice(0, 10)} (duffy restore): wipe it, then put it back`;

/** What a restore replaced that the backup does not hold: the replaced ledger's events after the two histories part. */
export interface LostHours {
  /** The backup directory put back. */
  backup: string;
  /** Where the replaced ledger is kept. */
  replacedKeptIn: string;
  /** The last position both histories hold (the backup's end, for a backup of this history). */
  sharedUpTo: string;
  /** The highest session id the replaced ledger had given (0: none). */
  sessionIdsUpTo: number;
  /** Sessions the replaced ledger made after the histories part. */
  lostSessions: number;
  /** Machines whose streams moved after the histories part (taken, released, provisioned...): what they hold now is unknown. */
  machines: string[];
}

/** A pool as requests see it: what it offers (type, arch) and its platform family; what PoolsConfigured records. */
export interface PoolProfile {
  name: string;
  type: MachineType;
  arch: string;
  platform: string;
}

/** What of a pool's profile differs between `was` and `now`. */
export const profileChanges = (was: PoolProfile, now: PoolProfile) => (['type', 'arch', 'platform'] as const).filter((k) => was[k] !== now[k]);

export const stream = {
  tenant: (name: string) => `tenant-${name}`,
  machine: (hostname: string) => `machine-${hostname}`,
  /** Admin decisions about a machine (maintenance, retirement, its hardware): kept off the machine stream, see MachineServiceChanged. */
  service: (hostname: string) => `service-${hostname}`,
  session: (id: number) => `session-${id}`,
  ids: (kind: 'tenant' | 'machine') => `ids-${kind}`,
  admins: 'admins',
  apiKeys: 'api-keys',
  defaults: 'defaults',
  pools: 'pools',
  /** What each `duffy restore` left out (LedgerRestored). */
  restores: 'restores',
};

/** BSON's member names end at a NUL character: no JSON or YAML member name may hold one. */
export const NUL_NAME = 'a member name must not hold a NUL character (\\u0000)';
/**
 * A lone UTF-16 surrogate (JSON's `"\ud800"`) is no character: MongoDB's BSON (UTF-8) would keep U+FFFD in its place,
 * and Ansible's modules fail on it (a tenant's ssh_key holding one failed the contextualizing of its machines).
 */
const LONE_SURROGATE = /\p{Cs}/u;
export const hasLoneSurrogate = (text: string) => LONE_SURROGATE.test(text);
export const LONE_SURROGATE_TEXT = 'not valid Unicode text: it holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is no character';
/** A name with its NUL characters and lone surrogates written as JSON writes them, for a message. */
export const shownName = (name: string) => name.replace(/[\0\p{Cs}]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/**
 * Where a value holds what the stores cannot keep as given, as a path below `path` and what is wrong, or null: a
 * number JSON cannot carry (Infinity, NaN: `1e999` parses as Infinity, YAML has `.inf`), which an event would store as
 * `null` and hash as itself (the ledger would then fail its own audit for good); a member name holding a NUL
 * character, which BSON cannot store (every MongoDB read-model write holding it would fail, retried forever); text
 * holding a lone surrogate, in a name or a value (see hasLoneSurrogate).
 */
export function unstorableAt(value: unknown, path: string): { at: string; problem: string } | null {
  if (typeof value === 'number') return Number.isFinite(value) ? null : { at: path, problem: 'not a finite number' };
  if (typeof value === 'string') return hasLoneSurrogate(value) ? { at: shownName(path), problem: LONE_SURROGATE_TEXT } : null;
  if (typeof value !== 'object' || value === null) return null;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = unstorableAt(value[i], `${path}[${i}]`);
      if (found !== null) return found;
    }
    return null;
  }
  for (const [k, v] of Object.entries(value)) {
    const at = path === '' ? k : `${path}.${k}`;
    if (k.includes('\0')) return { at: shownName(at), problem: NUL_NAME };
    if (hasLoneSurrogate(k)) return { at: shownName(at), problem: LONE_SURROGATE_TEXT };
    const found = unstorableAt(v, at);
    if (found !== null) return found;
  }
  return null;
}

/** The events written to a machine's `service-<hostname>` stream: an admin's decisions about it. */
export const SERVICE_EVENTS: ReadonlySet<string> = new Set<DuffyEvent['type']>(['MachineServiceChanged', 'MachineHardwareSet']);

/** The session id of a session stream's name, else undefined. */
export function sessionOfStream(name: string): number | undefined {
  if (!name.startsWith('session-')) return undefined;
  const id = Number(name.slice(8));
  return Number.isSafeInteger(id) ? id : undefined;
}

/** The `actor` of what Duffy decides itself (an expiry, a failed hand-over, a stop), in every such event's metadata. */
export const DUFFY_ACTOR = 'duffy';

/** The largest id a path, a query or a body may give: 15 digits, safe as a JavaScript number. */
export const MAX_ID = 999_999_999_999_999;

// pydantic's int from text: spaces around, a sign, `_` between digits, leading zeros, a fraction of zeros ("1.0", "1_000", "06").
const INT_TEXT = /^\s*[+-]?[0-9](?:_?[0-9])*(?:\.0+)?\s*$/;

/** Text as pydantic reads an int (Duffy v3's bodies, paths and queries), or undefined when it reads none. */
export const pydanticInt = (text: string): number | undefined => (text.length <= 100 && INT_TEXT.test(text) ? Number(text.replace(/_/g, '')) + 0 : undefined);

/** An id as typed (a path, a query, cico's ssid, the CLI), read as Duffy v3 reads it (`06` and `+6` are 6); negative or past MAX_ID, none. */
export function idOf(raw: unknown): number | undefined {
  const id = typeof raw === 'string' ? pydanticInt(raw) : undefined;
  return id !== undefined && id >= 0 && id <= MAX_ID ? id : undefined;
}
