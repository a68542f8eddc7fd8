#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { writeFile } from 'node:fs/promises';
import { dirname, resolve, sep } from 'node:path';
import type { ClientRequest } from 'node:http';
import { isDeepStrictEqual } from 'node:util';
import { BadQuestionError, NotFoundError } from '../audit/not-found.js';
import { parseDuration } from '../domain/duration.js';
import { parseExpiry } from '../domain/decide.js';
import { MACHINE_TYPES, MAX_QUANTITY, MAX_SPEC_NAME, MAX_WAIT, NAME, NAME_CHARACTERS, NAME_RULE, idOf } from '../domain/events.js';
import { hostKey } from '../domain/world.js';
import { formatTable } from '../domain/text-table.js';
import { printable } from './printable.js';
import { makeDirs, whyNotMade } from '../adapters/make-dirs.js';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ApiError, type ClientConfig, DuffyClient, EXIT, UsageError, clientConfig } from './client.js';
import { v3ClientCommands, v3LogLevelOption } from './v3-client.js';

type Session = {
  id: number;
  active: boolean;
  expires_at: string | null;
  retired_at?: string | null;
  // An ended session's nodes have no state (as in Duffy v3).
  nodes: Array<{ hostname: string; ipaddr: string | null; pool: string; state: string | null }>;
  data?: { nodes_specs?: unknown[]; queue?: { position: number; reason: string; until: string }; failed?: string; rejected?: string; ended?: string };
};
type Node = { id: number; hostname: string; state: string; service?: string; service_reason?: string | null };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Io {
  out: (line: string) => void;
  /** Progress goes to stderr, and only on a terminal: scripts get clean output. */
  progress?: (line: string) => void;
}

type Register = (duffy: Command, out: (line: string) => void) => void;

/**
 * The commands run on the Duffy host (the auditor's, key recovery, backups) load the ledger's stores and Nest: about
 * a second of CPU, which every `duffy request` and `duffy done` on a busy CI agent paid. Loaded only for a run that
 * may name one (any of them, or none: the help lists them).
 */
async function hostCommandsFor(args: string[]): Promise<Register[]> {
  const word = subcommandOf(args);
  if (word === undefined ? args.includes('-V') || args.includes('--version') : word !== 'help' && !HOST_COMMANDS.includes(word)) return [];
  // One after another: Jest's module linker (the CLI's e2e tests run it in-process) loses a module shared by
  // imports that load at once ("request for 'commander' is not in cache").
  const audit = await import('./audit.js');
  const recover = await import('./recover.js');
  const backup = await import('./backup.js');
  return [audit.auditCommands, recover.recoveryCommands, backup.backupCommands];
}

const HOST_COMMANDS = ['audit', 'admin-key', 'backup', 'restore'];
/** The global options that take a value: the word after one is no command. */
const VALUED = ['--url', '--tenant', '--key', '-c', '--config', '-l', '--loglevel'];

/** The command a command line names (its first word that is no global option nor an option's value). */
function subcommandOf(args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--') return args[i + 1];
    if (!args[i].startsWith('-')) return args[i];
    if (VALUED.includes(args[i])) i++;
  }
  return undefined;
}

export function program(out: (line: string) => void = (l) => process.stdout.write(l + '\n'), io: Partial<Io> = {}, hostCommands: Register[] = []): Command {
  const progress = io.progress ?? (process.stderr.isTTY ? (l: string) => process.stderr.write(`\r\x1b[2K${l}`) : undefined);
  const duffy = new Command('duffy')
    .description('Duffy: machines for CI, on an event-sourced ledger')
    .option('--url <url>', 'Duffy base URL (DUFFY_URL, default http://localhost:8080)')
    .option('--tenant <name>', 'tenant name (DUFFY_TENANT)')
    .option('--key <api-key>', 'API key (DUFFY_KEY)')
    .option('--json', 'print JSON answers, for scripts')
    .option('-c, --config <path>', "read the client configuration from this YAML file or directory (repeatable; default: DUFFY_CLIENT_CONFIG, else Duffy v3's /etc/duffy and ~/.config/duffy)", (v: string, before: string[] = []) => [...before, v])
    .addOption(v3LogLevelOption())
    .version(ownVersion(), '-V, --version')
    .exitOverride();
  const client = () => new DuffyClient(clientConfig(duffy.opts()));
  const json = () => duffy.opts().json === true;
  const show = (s: Session) => {
    if (json()) return out(JSON.stringify(s));
    // Words a playbook's output may have gone into: shown, never interpreted by the terminal.
    const why = s.data?.failed
      ? ` (failed: ${printable(s.data.failed)})`
      : s.data?.rejected
        ? ` (refused: ${printable(s.data.rejected)})`
        : s.data?.ended === 'expired'
          ? ` (expired at ${s.retired_at})`
          : '';
    out(`session ${s.id} ${s.active ? (Date.parse(String(s.expires_at)) <= Date.now() ? `active, its lease ended at ${s.expires_at}: ending now` : `active until ${s.expires_at}`) : s.data?.queue ? `waiting in the queue, position ${s.data.queue.position}` : `ended${why}`}`);
    for (const n of s.nodes) out(`${n.hostname}\t${n.ipaddr ?? '-'}\t${n.pool}\t${n.state ?? '-'}`);
    if (s.active && s.nodes.length) out(`ssh root@${s.nodes[0].hostname}`);
  };
  const positive = (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer');
    return n;
  };

  // The server's rule for the names a request gives: one it refuses is a usage error here, not its 422 (exit 1).
  const name = (max?: number) => (v: string) => {
    const rule = max === undefined ? NAME_RULE : `1-${max} ${NAME_CHARACTERS}`;
    if (!NAME.test(v) || (max !== undefined && v.length > max)) throw new InvalidArgumentError(`must be ${rule}`);
    return v;
  };

  duffy
    .command('request')
    .description('ask for machines: by --pool, or by --type (+ --arch, --platform)')
    .option('--pool <name>', 'a pool by name', name())
    .addOption(new Option('--type <type>').choices(MACHINE_TYPES))
    .option('--arch <arch>', 'the architecture (x86_64, aarch64)', name(MAX_SPEC_NAME))
    .option('--platform <family>', 'the platform family (intel, amd, arm)', name(MAX_SPEC_NAME))
    .option('--count <n>', `how many (1-${MAX_QUANTITY})`, (v: string) => {
      // As --wait: past the server's bound is a usage error here, not its 422 (exit 1) after a round trip.
      const n = positive(v);
      if (n > MAX_QUANTITY) throw new InvalidArgumentError(`must be at most ${MAX_QUANTITY}`);
      return n;
    }, 1)
    .option('--wait <seconds>', `wait up to this long in Duffy's fair-share queue while no machine is free (0-${MAX_WAIT}; 0: do not wait)`, (v: string) => {
      // 0 as the API takes it: a parameterised job's WAIT=0 is no usage error.
      const n = v.trim() === '0' ? 0 : positive(v);
      if (n > MAX_WAIT) throw new InvalidArgumentError(`must be at most ${MAX_WAIT}`);
      return n;
    })
    .action(async (o: { pool?: string; type?: string; arch?: string; platform?: string; count: number; wait?: number }) => {
      if (!o.pool && !o.type) throw new UsageError('request: give --pool or --type');
      const spec = Object.fromEntries(Object.entries({ pool: o.pool, type: o.type, arch: o.arch, platform: o.platform, quantity: o.count }).filter(([, v]) => v !== undefined));
      try {
        return show(await requestSession(client(), [spec], o.wait ?? 0, o.count, progress));
      } catch (err) {
        throw sentUnanswered(err, 'the request may have been served all the same (Duffy stopped as it answered): `duffy list` shows it; `duffy done` gives it back, or it is held until its lease ends');
      }
    });

  duffy
    .command('list')
    .description('my active sessions (admin: all)')
    .action(async () => {
      const r = await client().call<{ sessions: Session[] }>('GET', '/sessions');
      if (json()) return out(JSON.stringify(r.sessions));
      for (const s of r.sessions) out(`${s.id}\t${s.data?.queue ? 'waiting' : s.expires_at}\t${s.nodes.map((n) => n.hostname).join(',')}`);
    });

  duffy
    .command('show <session>')
    .action(async (id: string) => show((await client().call<{ session: Session }>('GET', `/sessions/${sessionArg(id)}`)).session));

  duffy
    .command('done <session>')
    .description('give the machines back')
    .action(async (id: string) => {
      const { session } = await client().call<{ session: Session }>('PUT', `/sessions/${sessionArg(id)}`, { active: false });
      // Ended before this call by its lease (or its tenant's retirement): its machines were taken back then, which a
      // test that ran on them may need to know. Still exit 0: the machines are given back either way.
      const before = session.data?.ended;
      if (before === 'expired' || before === 'tenant-retired') process.stderr.write(`duffy: session ${session.id} had already ended (${before === 'expired' ? `its lease expired at ${session.retired_at}` : 'its tenant was retired'}): its machines were taken back then\n`);
      show(session);
    });

  duffy
    .command('extend <session> [by]')
    .description('keep the machines longer: +2h (+1h when not given), +30m or an ISO time (clamped to your maximum); -30m shortens')
    // `-30m` is a time, not an option: taken as the argument (a real option of this command does not exist).
    .allowUnknownOption()
    .action(async (id: string, by = '+1h') => {
      if (by.startsWith('--')) throw new UsageError(`extend: unknown option ${by}`);
      // `2h` alone is neither a time nor a relative one (the server would refuse it): say what was meant, in a form
      // the server takes (bare seconds, `30`, need their unit once signed: `+30s`).
      const seconds = /^\s*[+-]/.test(by) ? undefined : parseDuration(by);
      if (seconds !== undefined) {
        const meant = parseDuration(`+${by.trim()}`, { signed: true }) === undefined ? `+${seconds}s` : `+${by.trim()}`;
        throw new UsageError(`extend: give the time to add with a sign, as in ${meant}, or an ISO time`);
      }
      // Read as the server reads it: one it would refuse (`+1x`) is a usage error before any call, not the 422's exit 1.
      if (typeof parseExpiry(by, Date.now()) !== 'number') throw new UsageError(`extend: not a time: ${JSON.stringify(by.slice(0, 40))}; give one like +2h, +30m, -1h or an ISO 8601 time`);
      try {
        show((await client().call<{ session: Session }>('PUT', `/sessions/${sessionArg(id)}`, { expires_at: by })).session);
      } catch (err) {
        throw sentUnanswered(err, `the extension may have been made all the same: \`duffy show ${id}\` says, before trying again`);
      }
    });

  duffy
    .command('artifacts <session>')
    .description("download the files collected from a session's machines at release")
    .option('--out <dir>', 'where to put them (created if missing)', '.')
    .option('--wait <seconds>', 'right after done the release is still collecting them: wait up to this long for it', positive, 600)
    .action(async (id: string, o: { out: string; wait: number }) => {
      const c = client();
      const base = `/sessions/${sessionArg(id)}/artifacts`;
      type Listing = { collecting?: boolean; incomplete?: string[]; artifacts: Array<{ path: string; size: number }> };
      let answer = await c.call<Listing>('GET', base);
      for (const until = Date.now() + o.wait * 1000; answer.collecting && Date.now() < until; answer = await c.call<Listing>('GET', base)) {
        progress?.(`waiting for the release of session ${id} to collect its artifacts`);
        await sleep(1000);
      }
      progress?.('');
      if (answer.collecting) throw new Error(`session ${id}: its artifacts were still being collected after ${o.wait} s; try again later`);
      const list = answer.artifacts;
      const root = resolve(o.out);
      for (const a of list) {
        // The server confines paths to the session; check again, a file must not land outside --out.
        const target = resolve(root, ...a.path.split('/'));
        if (!target.startsWith(root + sep)) throw new Error(`refusing to write ${printable(a.path)} outside ${root}`);
        try {
          makeDirs(dirname(target));
        } catch (err) {
          throw new Error(`the directory ${dirname(target)} cannot be created (${whyNotMade(err)}): give --out a directory where this user can write`);
        }
        await writeFile(target, await c.raw('GET', `${base}/${a.path.split('/').map(encodeURIComponent).join('/')}`));
        // Names come from what ran on the machine: a newline would forge a line, an escape reach the terminal.
        if (!json()) out(`${printable(a.path)}\t${a.size}`);
      }
      // The job's log says so: a collection that failed or hit the pool's limits did not bring every file.
      for (const why of answer.incomplete ?? []) process.stderr.write(`duffy: session ${id}: not every artifact was collected: ${printable(why)}\n`);
      if (json()) out(JSON.stringify(list.map((a) => ({ ...a, file: resolve(root, ...a.path.split('/')) }))));
      else if (list.length === 0) {
        // A job that forgot `duffy done` would read "none" as a release that collected nothing.
        const active = (await c.call<{ session: Session }>('GET', `/sessions/${sessionArg(id)}`)).session.active;
        out(active ? `session ${id} has no artifacts yet: they are collected when it is released (duffy done ${id})` : `session ${id} has no artifacts`);
      }
    });

  /** A table of the columns people read (all of them with --json). */
  const listing = (rows: Array<Record<string, unknown>>, columns: Array<[field: string, header: string]>) => {
    if (json()) return out(JSON.stringify(rows));
    const cell = (v: unknown) => printable(v === null || v === undefined ? '-' : typeof v === 'object' ? JSON.stringify(v) : String(v));
    out(formatTable(columns.map(([, h]) => h), rows.map((r) => columns.map(([f]) => cell(r[f]))), columns.map((_, i) => i)));
  };
  duffy
    .command('tenants')
    .description('list tenants (admins: all; a tenant: itself)')
    .action(async () =>
      listing((await client().call('GET', '/tenants')).tenants, [
        ['id', 'id'], ['name', 'name'], ['active', 'active'], ['is_admin', 'admin'], ['effective_node_quota', 'quota'],
        ['effective_session_lifetime', 'lifetime s'], ['effective_session_lifetime_max', 'max s'], ['created_at', 'created'],
      ]),
    );
  duffy
    .command('pools')
    .description('list pools: what each offers')
    .action(async () => {
      const pools = (await client().call('GET', '/pool-profiles')).pool_profiles as Array<Record<string, unknown>>;
      listing(pools, Object.keys(pools[0] ?? { name: '' }).map((k) => [k, k]));
    });

  const nodes = duffy
    .command('nodes')
    .description('list nodes (admins: all; a tenant: those it holds); admins take them in and out of service')
    .action(async () =>
      listing((await client().call('GET', '/nodes?retired=true')).nodes, [
        ['id', 'id'], ['hostname', 'hostname'], ['pool', 'pool'], ['state', 'state'], ['service', 'service'], ['ipaddr', 'ipaddr'], ['service_reason', 'reason'],
      ]),
    );
  /** HOST is a node id, or a hostname looked up in the nodes the caller may see (admins: all). */
  const nodeId = async (host: string) => {
    if (/^[0-9]+$/.test(host)) return Number(host);
    const all = (await client().call<{ nodes: Node[] }>('GET', '/nodes?retired=true')).nodes;
    // A host name registered again after its machine was retired names two nodes: the one in the ledger's hands now
    // (not retired, else the newest) is meant, as the API's host name lookup means it; the retired one keeps its id.
    const matches = all.filter((x) => hostKey(x.hostname) === hostKey(host) || String(x.id) === host);
    const n = matches.find((x) => x.service !== 'retired') ?? matches.reduce<Node | undefined>((a, x) => (a === undefined || x.id > a.id ? x : a), undefined);
    if (!n) throw new ApiError(404, `node ${host} not found among the nodes you can see (a tenant sees those it holds; only admins take nodes in and out of service)`);
    return n.id;
  };
  const service = async (host: string, body: Record<string, unknown>) => {
    const n = (await client().call<{ node: Node }>('PUT', `/nodes/${await nodeId(host)}`, body)).node;
    if (json()) return out(JSON.stringify(n));
    out([n.hostname, n.state, n.service, n.service_reason ?? ''].map((x) => printable(x ?? '')).join('\t').trimEnd());
  };
  nodes
    .command('maintenance <host>')
    .description('hand it out no more; a held node drains: it stays with its session, then stays out')
    .option('--reason <text>', 'why, for the ledger and the ops page')
    .action((host: string, o: { reason?: string }) => service(host, { maintenance: true, reason: o.reason ?? null }));
  nodes
    .command('return <host>')
    .description('back in service, from maintenance or quarantine')
    .option('--reason <text>')
    .action((host: string, o: { reason?: string }) => service(host, { maintenance: false, reason: o.reason ?? null }));
  nodes
    .command('retire <host>')
    .description('out of service for good (its history stays in the ledger)')
    .option('--reason <text>')
    .action((host: string, o: { reason?: string }) => service(host, { retired: true, reason: o.reason ?? null }));

  for (const register of hostCommands) register(duffy, out);
  const given = (o: Partial<ClientConfig>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  v3ClientCommands(duffy, out, (o) => clientConfig({ ...duffy.opts(), ...given(o) }));
  return duffy;
}

/**
 * POST /sessions. With `"wait"`, Duffy keeps the request in its fair-share queue and answers once it is served (or
 * its time is up); meanwhile follow the waiting session: its place and reason as progress, and its id, so that an
 * interrupted CLI takes it out of the queue instead of leaving it to be served to nobody. Waiting or not, a job
 * stopped (SIGINT, SIGTERM) while its answer is on its way gives back what it was served.
 */
async function requestSession(c: DuffyClient, specs: unknown[], wait: number, count: number, progress?: (line: string) => void): Promise<Session> {
  const waitingOnes = async () => (await c.call<{ sessions: Session[] }>('GET', '/sessions')).sessions.filter((s) => !s.active && s.data?.queue);
  // Only to show its place on a terminal: a job without one holds its place with its one request, no polling.
  const before = progress && wait > 0 ? new Set((await waitingOnes()).map((s) => s.id)) : undefined;
  let settled = false;
  let served: Session | undefined;
  let asking: ClientRequest | undefined;
  const answer = c
    .call<{ session: Session }>('POST', '/sessions', wait > 0 ? { nodes_specs: specs, wait } : { nodes_specs: specs }, true, (req) => (asking = req))
    .then((r) => ((served = r.session), r))
    .finally(() => (settled = true));
  let mine: number | undefined;
  // Once interrupted, the answer (422 "cancelled") is not the outcome: the exit code is the signal's.
  let stopping: Promise<never> | undefined;
  const interrupted = (signal: NodeJS.Signals) => {
    stopping = new Promise<never>(() => undefined);
    progress?.('');
    // Served as the job stops (the answer came, not yet printed): given back, or held until its lease ends. Still
    // waiting: taken out of the queue by its id when known; else by the connection this exit closes (Duffy cancels a
    // waiting request whose caller went away).
    const giveBack = (id: number, said: string) => c.call('PUT', `/sessions/${id}`, { active: false }, false).then(() => process.stderr.write(`duffy: ${said}\n`), () => undefined);
    const id = served?.id ?? mine;
    // Once, at once: the job is stopping (a Duffy out of reach still drops the request with this exit's connection).
    let cancel: Promise<unknown> = id === undefined ? Promise.resolve() : giveBack(id, served ? `gave back session ${id}, served as the job stopped` : `left the queue (session ${id})`);
    if (id === undefined && !settled && asking) {
      // Not known whether it was served: Duffy may have answered already, its 201 on its way (it then cannot tell
      // that nobody will read it), or not (it cancels a waiting request, ends a hand-over, when its caller goes).
      // Close only our side of the connection, which tells Duffy, and read what it sent before it knew: a session
      // served as the job stopped is given back, not held by nobody until its lease ends.
      const req = asking;
      if (req.socket && !req.socket.destroyed) req.socket.end();
      else req.destroy();
      cancel = Promise.race([
        answer.then((r) => giveBack(r.session.id, `gave back session ${r.session.id}, served as the job stopped`), () => undefined),
        sleep(10_000),
      ]);
    }
    void cancel.finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const started = Date.now();
  try {
    for (let look = 0; before && !settled; look++) {
      await Promise.race([answer.catch(() => undefined), sleep(look === 0 ? 300 : 1000)]);
      if (settled) break;
      // Ours: a session that started waiting after we asked, for what we asked. Another CLI of the same tenant
      // may ask the same meanwhile: then it is not known which is ours, and the connection is left to cancel it.
      const ours = (await waitingOnes().catch(() => [] as Session[])).filter((s) => !before.has(s.id) && isDeepStrictEqual(s.data?.nodes_specs, specs));
      mine = ours.length === 1 ? ours[0].id : undefined;
      const q = ours[0]?.data?.queue;
      if (q) progress?.(`waiting for ${count} machine(s) in the queue: ${mine === undefined ? '' : `session ${mine}, `}position ${q.position}: ${q.reason} (${Math.round((Date.now() - started) / 1000)} s)`);
    }
    const { session } = await answer;
    if (stopping) await stopping;
    return session;
  } catch (err) {
    if (stopping) await stopping;
    throw err;
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    progress?.('');
  }
}

/** No answer is no refusal: what was sent may have been done. Said, so a script asks before it tries again. */
function sentUnanswered(err: unknown, mayHaveBeen: string): unknown {
  if ((err as { sent?: boolean }).sent) (err as Error).message += `; ${mayHaveBeen}`;
  return err;
}

/** A session id as typed, read as the server reads one: a usage error (exit 2) otherwise, before any call (the server's 422 would exit 1). */
function sessionArg(id: string): string {
  const n = idOf(id);
  if (n === undefined) throw new UsageError(`a session id is a number (as \`duffy list\` shows it), got ${JSON.stringify(String(id).slice(0, 40))}`);
  return String(n);
}

/** Runs the CLI; returns the exit code (EXIT: 0 ok, 2 usage, 3 auth, 4 not found, 5 no capacity, 6 unavailable, 7 unreachable, 8 never servable). */
export async function run(argv: string[], out?: (line: string) => void, io?: Partial<Io>): Promise<number> {
  try {
    await program(out, io, await hostCommandsFor(argv.slice(2))).parseAsync(argv);
    return Number(process.exitCode ?? 0);
  } catch (err) {
    const e = err as { code?: string; exitCode?: number; message?: string; unreachable?: boolean };
    // `duffy help [command]` says commander.help with exit code 0; a command named without its subcommand (`duffy
    // audit`), the same code with 1: only that is a usage error.
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || (e.code === 'commander.help' && e.exitCode === 0)) return EXIT.ok;
    // Commander has printed its own usage errors already.
    if (e.code?.startsWith('commander.')) return EXIT.usage;
    // A KurrentDB ledger out of reach (audit, admin-key) said only `UnavailableError`. (Its client, loaded for this only.)
    const store = err instanceof ApiError || err instanceof UsageError ? undefined : (await import('../adapters/eventstore/kurrentdb-event-store.js')).retryableWrite(err);
    // The message may quote what others wrote (a tenant, a playbook's output): no escape sequence or bidi control
    // reaches the terminal from it. Its own lines stay lines (a configuration error's excerpt).
    const said = (e.message ?? String(err)).split('\n').map(printable).join('\n');
    process.stderr.write(store ? `duffy: ${store} (${said}): check --ledger, --eventstore or DUFFY_EVENTSTORE\n` : `duffy: ${said}\n`);
    if (e.unreachable) return EXIT.unreachable;
    if (err instanceof NotFoundError) return EXIT.notFound;
    return err instanceof ApiError ? err.exitCode : err instanceof UsageError || err instanceof BadQuestionError ? EXIT.usage : EXIT.failure;
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('/duffy')) {
  // The reader went away (`duffy audit export | head -1`): stop quietly, as tools killed by SIGPIPE do (128 + 13).
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(141);
  });
  // No process.exit: it would cut off stdout still draining into a pipe (`duffy audit export | gzip`).
  run(process.argv).then((code) => {
    process.exitCode = code;
  });
}

/** The version in Duffy's package.json, found from src/cli or dist/src/cli alike. */
function ownVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++, dir = dirname(dir)) {
    try {
      return (JSON.parse(readFileSync(resolve(dir, 'package.json'), 'utf8')) as { version: string }).version;
    } catch {
      /* not here: one level up */
    }
  }
  return 'unknown';
}

