import 'reflect-metadata';
import { plainToInstance, Type } from 'class-transformer';
import {
  IsBoolean,
  IsIn,
  IsInt,
  IsIP,
  IsObject,
  IsOptional,
  IsString,
  Matches,
  Max,
  MaxLength,
  Min,
  ValidateNested,
  validateSync,
  type ValidationError,
} from 'class-validator';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { PLAYBOOK_ACTIONS, playbookFile } from '../adapters/ansible-runner.js';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { hardwareProblem } from '../domain/hardware.js';
import { isTemplate, renderTemplate, templateProblem } from './jinja.js';
import { HOST_NAME, addressKey, hostKey, sshPortProblem } from '../domain/world.js';
import { MAX_LIFETIME } from '../domain/decide.js';
import { MACHINE_TYPES, NAME, NAME_RULE, REGISTRABLE_STATES, type MachineState, type MachineType, type RecyclePolicy, unstorableAt } from '../domain/events.js';

export class PoolConfig {
  @Matches(NAME, { message: `name must be ${NAME_RULE}` }) name!: string;
  @IsIn(MACHINE_TYPES) type!: MachineType;
  // Names, as requests give them (a spec's arch and platform are names too).
  @Matches(NAME, { message: 'arch must be letters, digits, dot, dash or underscore' }) arch!: string;
  @Matches(NAME, { message: 'platform must be letters, digits, dot, dash or underscore' }) platform!: string;
  @IsIn(['local', 'baremetal', 'vm']) driver: 'local' | 'baremetal' | 'vm' = 'local';
  @IsInt() @Min(0) 'fill-level': number = 0;
  @IsIn(['reuse', 'rebuild', 'reinstall', 'shutdown']) 'release-policy': RecyclePolicy = 'reuse';
  /** Inject the tenant's SSH key with the contextualize playbook before hand-over. */
  @IsBoolean() contextualize = false;
  /** Run the collect-artifacts playbook before release; files land under <data dir>/artifacts/session-<id>/. */
  @IsBoolean() 'collect-artifacts' = false;
  /** What one machine's collection may keep (MiB, files): a session cannot fill Duffy's disk; the rest is left out. */
  @IsInt() @Min(1) @Max(1048576) 'artifacts-max-mb' = 1024;
  @IsInt() @Min(1) @Max(1000000) 'artifacts-max-files' = 10000;
  /** Seconds one playbook run may take before its process group is killed. */
  @IsInt() @Min(1) @Max(86400) 'playbook-timeout' = 1800;
  /** Seconds a request waits for provisioning and hand-over before it is answered 503. */
  @IsInt() @Min(1) @Max(86400) 'handover-timeout' = 900;
  /** Failures in a row after which a machine is quarantined. */
  @IsInt() @Min(1) @Max(100) 'quarantine-after' = 3;
  /** Seconds between health checks of a quarantined machine. */
  @IsInt() @Min(1) 'health-check-interval' = 600;
  /** Playbook paths (relative to ansible/ or absolute) overriding the generic ones, per action. */
  @IsOptional() @IsObject() playbooks: Partial<Record<'provision' | 'contextualize' | 'decontextualize' | 'release' | 'collect_artifacts' | 'health_check', string>> = {};
  @IsOptional() @IsObject() vars: Record<string, unknown> = {};
}

export class MachineConfig {
  @Matches(HOST_NAME, { message: 'hostname must be a DNS name' }) hostname!: string;
  @IsOptional() @IsIP() ipaddr: string | null = null;
  @IsString() pool!: string;
  @IsBoolean() reusable = true;
  @IsIn(REGISTRABLE_STATES, { message: `state must be one of ${REGISTRABLE_STATES.join(', ')}` }) state: MachineState = 'ready';
  @IsOptional() @IsObject() data: Record<string, unknown> = {};
  /** `cpus`, `ram_gb`, `disk_gb`, `cpu_model` and any other key: what requests may require. */
  @IsOptional() @IsObject() hardware?: Record<string, string | number | boolean>;
  @IsOptional() @IsString() @MaxLength(1024) comment?: string;
}

/**
 * One line of the legacy cico map: regexes on ver, arch and flavor (absent = any); first match wins. `pool` may be a
 * Jinja template of them, as in Duffy v3's metaclient poolmap (`physical-centos{{ ver | replace('-', '') }}-{{ arch }}`).
 */
export class LegacyRule {
  @IsOptional() @IsString() ver?: string;
  @IsOptional() @IsString() arch?: string;
  @IsOptional() @IsString() flavor?: string;
  @IsString() pool!: string;
}

export class DefaultsConfig {
  @IsInt() @Min(1) @Max(100000) 'node-quota' = 10;
  // Bounded as a tenant's own settings are: an unbounded one made every request's expiry a RangeError (a 500).
  @IsInt() @Min(1) @Max(MAX_LIFETIME) 'session-lifetime' = 6 * 3600;
  @IsInt() @Min(1) @Max(MAX_LIFETIME) 'session-lifetime-max' = 12 * 3600;
}

export class DuffyConfig {
  @ValidateNested({ each: true }) @Type(() => PoolConfig) pools: PoolConfig[] = [];
  @ValidateNested({ each: true }) @Type(() => MachineConfig) machines: MachineConfig[] = [];
  @ValidateNested({ each: true }) @Type(() => LegacyRule) legacy: LegacyRule[] = [];
  /**
   * `GET /Inventory` without a key lists every active session's nodes, as Duffy v3 does: python-cicoclient's
   * `cico node get`, `cico inventory` and `cico node done` read that list. false: it answers its failure string.
   */
  @IsBoolean() 'legacy-public-inventory' = true;
  /**
   * Duffy v3's metaclient `mangle_hostname`: a Jinja template of `hostname` for the host names the legacy calls
   * answer (`{{ hostname | replace('.ci.centos.org', '') }}`).
   */
  @IsOptional() @IsString() 'legacy-mangle-hostname'?: string;
  @ValidateNested() @Type(() => DefaultsConfig) defaults: DefaultsConfig = new DefaultsConfig();
}

export interface Settings {
  port: number;
  dataDir: string;
  configFile: string;
  eventStoreUrl?: string;
  readModelsUrl?: string;
  adminName: string;
  adminKey?: string;
  config: DuffyConfig;
  /** Open HTTP connections at most (DUFFY_MAX_CONNECTIONS): past it new ones are dropped, so clients never take the file descriptors the ledger and the playbooks need. */
  maxConnections?: number;
  /** Seconds a client has to send a whole request (DUFFY_REQUEST_TIMEOUT_SECONDS); a slow sender gets 408. */
  requestTimeoutSeconds?: number;
}

/** The connections a server takes at most: DUFFY_MAX_CONNECTIONS as loaded, else the default. */
export const maxConnectionsOf = (settings: Pick<Settings, 'maxConnections'>) => settings.maxConnections ?? defaultMaxConnections();

/** Callers a server lets wait in the queue at once: half its connections, the rest kept for releases and reads. */
export const waitingCallersAtMost = (settings: Pick<Settings, 'maxConnections'>) => Math.floor(maxConnectionsOf(settings) / 2);

/** The request timeout unless set: a 1 MB body needs seconds; Node's own (300 s) let slow senders hold sockets for minutes. */
export const REQUEST_TIMEOUT_SECONDS = 30;

/**
 * Connections at most unless set: the process's open-files limit (Node raises the soft limit to the hard one at
 * start) less room for what Duffy opens itself (its ledger and read-model files, playbook runs' pipes and files),
 * at most 10,000 (about 150 MB of sockets).
 */
export function defaultMaxConnections(limits = '/proc/self/limits'): number {
  let soft = 1024;
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(limits, 'utf8'));
    if (m) soft = m[1] === 'unlimited' ? Infinity : Number(m[1]);
  } catch {
    /* not Linux: the usual soft limit */
  }
  return Math.max(64, Math.min(10_000, soft - 512));
}

export class ConfigError extends Error {}

const here = dirname(fileURLToPath(import.meta.url));
/** The bundled demo inventory, found from src/ or dist/src/ alike. */
export const DEMO_CONFIG = resolve(here, here.includes(`${'/'}dist${'/'}`) ? '../../../config/demo.yaml' : '../../config/demo.yaml');

const LISTS_OF_MAPPINGS: ReadonlyArray<[string, string]> = [
  ['pools', '{name: ..., type: ..., arch: ..., platform: ...}'],
  ['machines', '{hostname: ..., pool: ...}'],
  ['legacy', '{ver: ..., arch: ..., pool: ...}'],
];

/** Uses of one YAML anchor, times the aliases inside it, that a configuration may make (machines at most 100,000). */
const MAX_ALIAS_USES = 1_000_000;

/** At most this many problems are named in one refusal (a body's, a configuration's), then how many more. */
const MAX_PROBLEMS_NAMED = 10;
export const namedAtMost = (problems: string[]): string[] =>
  problems.length > MAX_PROBLEMS_NAMED ? [...problems.slice(0, MAX_PROBLEMS_NAMED), `and ${problems.length - MAX_PROBLEMS_NAMED} more`] : problems;

export function loadConfig(file: string): DuffyConfig {
  let raw: unknown;
  try {
    // An inventory shares its hardware by anchors (`hardware: *xeon-gold` on each of 20,000 machines): the yaml
    // package's default of 100 uses of one anchor refused such a file as "a resource exhaustion attack". Nested
    // aliases (a billion laughs) still multiply past this bound and are refused.
    raw = parse(readFileSync(file, 'utf8'), { maxAliasCount: MAX_ALIAS_USES });
  } catch (err) {
    throw new ConfigError(`${file}: cannot read YAML: ${(err as Error).message}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(`${file}: top level must be a mapping`);
  // YAML's .inf and .nan (or 1e999), a "\0" in a key: what the stores cannot keep as given (see unstorableAt).
  const unstorable = unstorableAt(raw, '');
  if (unstorable !== null) throw new ConfigError(`${file}: ${unstorable.at}: ${unstorable.problem}`);
  // Each entry of a list a mapping: class-validator would take a list inside the list as many entries, and say
  // "unknown pool undefined" of it, or "must be either object or array" of a string.
  for (const [key, example] of LISTS_OF_MAPPINGS) {
    const list = (raw as Record<string, unknown>)[key];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) throw new ConfigError(`${file}: ${key}: must be a list of mappings like ${example}`);
    const bad = list.findIndex((entry) => entry === null || typeof entry !== 'object' || Array.isArray(entry));
    if (bad >= 0) throw new ConfigError(`${file}: ${key}[${bad}]: must be a mapping like ${example}, got ${Array.isArray(list[bad]) ? 'a list' : JSON.stringify(list[bad])}`);
  }
  const config = plainToInstance(DuffyConfig, raw, { exposeDefaultValues: true });
  const errors = validateSync(config, { forbidUnknownValues: true, whitelist: true, forbidNonWhitelisted: true });
  if (errors.length > 0) throw new ConfigError(`${file}: ${namedAtMost(describeValidation(errors)).join('; ')}`);
  const pools = new Set<string>();
  config.pools.forEach((p, i) => {
    if (pools.has(p.name)) throw new ConfigError(`${file}: pools[${i}].name: duplicate pool ${p.name}`);
    pools.add(p.name);
    // A misspelt action would be ignored, and the pool would quietly run the generic playbook.
    for (const [action, path] of Object.entries(p.playbooks ?? {})) {
      if (!(PLAYBOOK_ACTIONS as string[]).includes(action)) throw new ConfigError(`${file}: pools[${i}].playbooks.${action}: unknown action (one of ${PLAYBOOK_ACTIONS.join(', ')})`);
      if (typeof path !== 'string' || path.trim() === '') throw new ConfigError(`${file}: pools[${i}].playbooks.${action}: must be a playbook path`);
    }
  });
  const hosts = new Map<string, string>();
  const addresses = new Map<string, string>();
  config.machines.forEach((m, i) => {
    if (!pools.has(m.pool)) throw new ConfigError(`${file}: machines[${i}].pool: unknown pool ${m.pool}`);
    const badHardware = m.hardware === undefined ? null : hardwareProblem(m.hardware);
    if (badHardware) throw new ConfigError(`${file}: machines[${i}].${badHardware}`);
    const twin = hosts.get(hostKey(m.hostname));
    if (twin !== undefined) throw new ConfigError(`${file}: machines[${i}].hostname: duplicate ${m.hostname}${twin === m.hostname ? '' : ` (of ${twin}: host names ignore case and a trailing dot)`}`);
    hosts.set(hostKey(m.hostname), m.hostname);
    const badPort = sshPortProblem(m.data ?? {});
    if (badPort) throw new ConfigError(`${file}: machines[${i}].${badPort}`);
    if (m.ipaddr !== null) {
      const at = addressKey({ ipaddr: m.ipaddr, data: m.data ?? {} });
      const holder = addresses.get(at);
      if (holder !== undefined) throw new ConfigError(`${file}: machines[${i}].ipaddr: ${m.ipaddr} is ${holder}'s too (one address, one machine; machines behind one address differ by data.ssh_port)`);
      addresses.set(at, m.hostname);
    }
  });
  config.legacy.forEach((r, i) => {
    // A template's pools are known only once rendered: an unknown one fails that call, as in Duffy v3.
    const problem = templateProblem(r.pool, { ver: '7', arch: 'x86_64' });
    if (problem) throw new ConfigError(`${file}: legacy[${i}].pool: ${problem}`);
    if (!isTemplate(r.pool) && !pools.has(r.pool)) throw new ConfigError(`${file}: legacy[${i}].pool: unknown pool ${r.pool}`);
    for (const key of ['ver', 'arch', 'flavor'] as const) {
      const pattern = r[key];
      if (pattern === undefined) continue;
      try {
        new RegExp(`^(?:${pattern})$`);
      } catch {
        throw new ConfigError(`${file}: legacy[${i}].${key}: invalid pattern ${pattern}`);
      }
    }
  });
  const mangle = config['legacy-mangle-hostname'];
  const problem = mangle === undefined ? undefined : templateProblem(mangle, { hostname: 'n1.example.org' });
  if (problem) throw new ConfigError(`${file}: legacy-mangle-hostname: ${problem}`);
  return config;
}

/** Constraints on a value's type: when one fails, the others (its range, its length) say nothing more. */
const TYPE_CONSTRAINTS = new Set(['isInt', 'isNumber', 'isString', 'isBoolean', 'isArray', 'isObject']);

/** class-validator errors as `path.to[0].field: message` lines; a value of the wrong type gets one line, its type's. */
export function describeValidation(errors: ValidationError[], prefix = ''): string[] {
  return errors.flatMap((e) => {
    const path = /^\d+$/.test(e.property) ? `${prefix}[${e.property}]` : prefix ? `${prefix}.${e.property}` : e.property;
    const failed = Object.entries(e.constraints ?? {});
    const ofType = failed.filter(([name]) => TYPE_CONSTRAINTS.has(name));
    const own = (ofType.length > 0 ? ofType : failed).map(([, m]) => `${path}: ${m}`);
    return [...own, ...describeValidation(e.children ?? [], path)];
  });
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** A positive whole number from the environment, `fallback` when unset; anything else stops start-up, named. */
export function positiveIntEnv(name: string, fallback: number, env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^[0-9]{1,9}$/.test(raw) || Number(raw) < 1) throw new ConfigError(`${name}: must be a positive whole number, got ${JSON.stringify(raw)}`);
  return Number(raw);
}

/** The production stores' URL schemes, by the variable that gives them. */
const STORE_URLS = {
  DUFFY_EVENTSTORE: { scheme: /^(esdb|kurrentdb|kurrent|kdb)(\+discover)?:\/\//, expected: 'kurrentdb://... (esdb://... still works)' },
  DUFFY_READMODELS: { scheme: /^mongodb(\+srv)?:\/\//, expected: 'mongodb://...' },
};

/** Whether a location names a KurrentDB ledger (the auditor's `--ledger` takes a URL or a file). */
export const isEventStoreUrl = (location: string) => STORE_URLS.DUFFY_EVENTSTORE.scheme.test(location);

/**
 * A production store's URL, undefined when unset or empty (the embedded store); an unknown scheme is refused, named.
 * The one check: start-up (loadSettings) and the store factories (used by the CLI too) both call it.
 */
export function storeUrl(name: keyof typeof STORE_URLS, value: string | undefined): string | undefined {
  const url = value || undefined;
  const { scheme, expected } = STORE_URLS[name];
  if (url !== undefined && !scheme.test(url)) throw new ConfigError(`${name}: unsupported URL ${JSON.stringify(withoutPassword(url))} (expected ${expected}, or unset for the embedded store)`);
  return url;
}

/** The URL as it may be logged: a password in it (`scheme://user:password@host`) is starred, up to the last `@`. */
export const withoutPassword = (url: string): string => url.replace(/^([^:/]*:\/\/[^:@/]*):.*@/, '$1:***@');

/** DUFFY_DATA_DIR, absolute; empty is unset (./data), not the working directory. The server's and the CLI's. */
export const dataDirOf = (env: NodeJS.ProcessEnv = process.env): string => resolve(env.DUFFY_DATA_DIR || './data');

export function loadSettings(env: NodeJS.ProcessEnv = process.env): Settings {
  // Digits only, and empty is unset as for the other variables: Number() took "" as 0 (a random port) and "0x50" as 80.
  const rawPort = env.DUFFY_PORT || '8080';
  const port = /^[0-9]{1,5}$/.test(rawPort) ? Number(rawPort) : NaN;
  if (!(port <= 65535)) throw new ConfigError(`DUFFY_PORT: not a port number: ${env.DUFFY_PORT}`);
  if (env.DUFFY_LOG_LEVEL && !LOG_LEVELS.includes(env.DUFFY_LOG_LEVEL)) throw new ConfigError(`DUFFY_LOG_LEVEL: must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(env.DUFFY_LOG_LEVEL)}`);
  for (const name of ['DUFFY_CHECKPOINT_EVERY_EVENTS', 'DUFFY_CHECKPOINT_EVERY_SECONDS']) positiveIntEnv(name, 1, env);
  // A tenant name as the API takes it: an admin named "ad:min" could never log in (Basic auth splits at the colon).
  if (env.DUFFY_ADMIN_NAME && !NAME.test(env.DUFFY_ADMIN_NAME)) throw new ConfigError(`DUFFY_ADMIN_NAME: must be ${NAME_RULE}, got ${JSON.stringify(env.DUFFY_ADMIN_NAME)}`);
  const configFile = env.DUFFY_CONFIG ? resolve(env.DUFFY_CONFIG) : DEMO_CONFIG;
  return {
    port,
    dataDir: dataDirOf(env),
    configFile,
    eventStoreUrl: storeUrl('DUFFY_EVENTSTORE', env.DUFFY_EVENTSTORE),
    readModelsUrl: storeUrl('DUFFY_READMODELS', env.DUFFY_READMODELS),
    adminName: env.DUFFY_ADMIN_NAME || 'admin',
    adminKey: env.DUFFY_ADMIN_KEY || undefined,
    config: withPlaybooks(loadConfig(configFile), configFile),
    maxConnections: positiveIntEnv('DUFFY_MAX_CONNECTIONS', defaultMaxConnections(), env),
    requestTimeoutSeconds: positiveIntEnv('DUFFY_REQUEST_TIMEOUT_SECONDS', REQUEST_TIMEOUT_SECONDS, env),
  };
}

/**
 * The server's check (not the auditor's, who reads the file for its defaults): a pool's playbook that is not there
 * would fail every run of it for the whole life of the process; refused at start, where the operator looks.
 */
function withPlaybooks(config: DuffyConfig, file: string): DuffyConfig {
  config.pools.forEach((p, i) => {
    for (const [action, path] of Object.entries(p.playbooks ?? {})) {
      const found = playbookFile(action as keyof typeof p.playbooks, path);
      if (!existsSync(found)) throw new ConfigError(`${file}: pools[${i}].playbooks.${action}: no such playbook ${found}`);
      if (!statSync(found).isFile()) throw new ConfigError(`${file}: pools[${i}].playbooks.${action}: ${found} is not a file (a playbook is a YAML file)`);
    }
  });
  return config;
}

export function legacyPool(rules: readonly LegacyRule[], q: { ver: string; arch: string; flavor?: string }): string | undefined {
  const test = (pattern: string | undefined, value: string | undefined) =>
    pattern === undefined || new RegExp(`^(?:${pattern})$`).test(value ?? '');
  const rule = rules.find((r) => test(r.ver, q.ver) && test(r.arch, q.arch) && test(r.flavor, q.flavor));
  return rule && renderTemplate(rule.pool, q);
}

/** A host name as the legacy calls answer it: through `legacy-mangle-hostname` when the configuration has one. */
export const legacyHostname = (config: DuffyConfig, hostname: string) => {
  const mangle = config['legacy-mangle-hostname'];
  return mangle === undefined ? hostname : renderTemplate(mangle, { hostname });
};
