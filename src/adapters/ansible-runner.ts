import { execa } from 'execa';
import { constants, readFileSync, readdirSync } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PlaybookAction, PlaybookRun } from '../domain/events.js';
import { FULL_DISK_BYTES, freeBytes } from './disk-space.js';

export type { PlaybookAction };

const PLAYBOOK: Record<PlaybookAction, string> = {
  provision: 'provision.yml',
  contextualize: 'contextualize.yml',
  decontextualize: 'decontextualize.yml',
  release: 'release.yml',
  collect_artifacts: 'collect-artifacts.yml',
  health_check: 'health-check.yml',
};

export const PLAYBOOK_ACTIONS = Object.keys(PLAYBOOK) as PlaybookAction[];

const here = fileURLToPath(new URL('.', import.meta.url));
/** ansible/ beside src/ (or beside dist/src/). */
export const ANSIBLE_DIR = resolve(here, here.includes('/dist/') ? '../../../ansible' : '../../ansible');

/** The playbook file a pool runs for an action: its override (relative to ansible/, or absolute) or the generic one. */
export function playbookFile(action: PlaybookAction, override?: string, ansibleDir = ANSIBLE_DIR): string {
  return override ? resolve(ansibleDir, override) : join(ansibleDir, 'playbooks', PLAYBOOK[action]);
}

export interface PlaybookNode {
  id: number;
  hostname: string;
  ipaddr: string | null;
  data: Record<string, unknown>;
}

/** What Duffy hands a playbook as `duffy_in` (see ansible/README.md). */
export interface DuffyIn {
  action: PlaybookAction;
  pool: { name: string; type: string; driver: string; arch: string; platform: string; vars: Record<string, unknown> };
  session: { id: number; tenant: string; ssh_key: string } | null;
  policy?: string;
  nodes: PlaybookNode[];
  data_dir: string;
  artifacts_dir?: string;
  /** collect_artifacts: what one machine's collection may keep (the pool's artifacts-max-mb and -files). */
  artifacts_limit?: { bytes: number; files: number };
}

export interface NodeOutcome {
  ok: boolean;
  ipaddr: string | null;
  error?: string;
  note?: string;
  /** Failed with the whole run, which said nothing of this node. */
  unattributed?: boolean;
}

/** Recorded in the outcome event (see `PlaybookRun` in the ledger's events). */
export type RunRecord = PlaybookRun;

/**
 * A run that failed for a reason on Duffy's side (no Ansible, a playbook file missing, the controller killed):
 * it says nothing about the machines, so it must never count against them (invariant 10).
 */
export interface EnvironmentFault {
  reason: string;
  /** False when ansible-playbook never started: nothing touched the machines. */
  spawned: boolean;
  /**
   * What it holds back, when not every run: `playbook`, the file's fault (missing, unparsable); `run`, this run's
   * (its controller was killed: the OOM killer picks the run that grew, an operator the one they meant).
   */
  scope?: 'playbook' | 'run';
}

export interface RunResult {
  run: RunRecord;
  nodes: Map<string, NodeOutcome>;
  fault?: EnvironmentFault;
}

export interface PlaybookRunner {
  run(input: DuffyIn, options: { timeoutMs: number; playbook?: string }): Promise<RunResult>;
  /** Kills every run under way (Duffy is stopping: their claims are void for the next process). */
  stopAll?(): void;
  /** Kills the runs a previous process on this data directory left behind (kill -9), and removes their inputs; says what each was. */
  reap?(dataDir: string): Promise<string[]>;
  /** What runs the playbooks, in one line (for /health); rejects when it cannot run at all. */
  version(): Promise<string>;
}

/** Each run's input and process group live here, under the data directory, until the run is over. */
const RUNS_DIR = 'runs';
const GROUP_FILE = 'pgid';
const INPUT_FILE = 'duffy_in.json';

export const PLAYBOOK_RUNNER = Symbol('PLAYBOOK_RUNNER');
const TAIL = 2000;

/**
 * Runs `ansible-playbook` with the JSON callback. Extra vars go in a private JSON file, never a shell string;
 * the run gets its own process group so a timeout kills Ansible's workers and the module they run too.
 */
export class AnsibleRunner implements PlaybookRunner {
  /** Process groups of the runs under way, each with its modules' temporary directory (see killRun). */
  private readonly groups = new Map<number, string>();
  /** Once stopping, no run starts (one asked for meanwhile is not run), and one spawned in the gap is killed. */
  private stopping = false;

  constructor(
    private readonly ansibleDir = ANSIBLE_DIR,
    /** Output kept per stream; the JSON callback prints its whole report at the end, so past this it is unreadable. */
    private readonly outputLimit = 64 * 1024 * 1024,
  ) {}

  /** Ansible's version line; rejects with what is wrong with the installation, in words for /health. */
  async version(): Promise<string> {
    const r = await execa('ansible-playbook', ['--version'], { timeout: 10_000, reject: false });
    if (r.exitCode === 0) return String(r.stdout).split('\n')[0];
    const spawnFault = r.code ? environmentFault({ code: r.code, exitCode: null, timedOut: false, hasDuffyOut: false })?.reason : undefined;
    const said = lastLine(String(r.stderr ?? ''));
    throw new Error(spawnFault ?? `ansible-playbook --version failed (${r.timedOut ? 'timed out' : `exit code ${r.exitCode}`})${said ? `: ${said}` : ''}`);
  }

  stopAll(): void {
    this.stopping = true;
    for (const [pgid, tmp] of this.groups) killRun(pgid, tmp);
  }

  async reap(dataDir: string): Promise<string[]> {
    const root = join(resolve(dataDir), RUNS_DIR);
    const reaped: string[] = [];
    for (const name of await readdir(root).catch(() => [] as string[])) {
      const pgid = await runGroup(join(root, name));
      // Its async jobs too, even once its controller is gone (the OOM killer's pick, say, while its task runs on):
      // named either way, since what it ran is done again.
      const killed = killRun(pgid, join(root, name, 'tmp'));
      if (pgid !== undefined || killed > 0) reaped.push(await describeRun(join(root, name, INPUT_FILE)));
      await rm(join(root, name), { recursive: true, force: true });
    }
    return reaped;
  }

  async run(input: DuffyIn, options: { timeoutMs: number; playbook?: string }): Promise<RunResult> {
    const playbook = options.playbook ?? playbookFile(input.action, undefined, this.ansibleDir);
    const started = Date.now();
    const notRun = (reason: string, ofPlaybook = false): RunResult => {
      const run: RunRecord = { action: input.action, playbook, exitCode: null, durationMs: Date.now() - started, timedOut: false, tail: reason };
      return { run, nodes: outcomes(input, '', run), fault: { reason, spawned: false, ...(ofPlaybook ? { scope: 'playbook' as const } : {}) } };
    };
    if (this.stopping) return notRun('Duffy is stopping');
    if (!(await access(playbook, constants.R_OK).then(() => true, () => false))) return notRun(`playbook ${playbook} not found`, true);
    let dir: string;
    const runs = join(resolve(input.data_dir), RUNS_DIR);
    try {
      await mkdir(runs, { recursive: true, mode: 0o700 });
      dir = await mkdtemp(join(runs, 'run-'));
    } catch (err) {
      return notRun(`can't write the run's input in ${runs}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    try {
      const varsFile = join(dir, INPUT_FILE);
      try {
        await writeFile(varsFile, extraVarsJson(input), { mode: 0o600 });
      } catch (err) {
        return notRun(`can't write the run's input in ${dir}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      // The modules' own temporary files (AnsiballZ payloads) go in the run's directory too: a playbook killed
      // mid-task would otherwise leave them in /tmp for good.
      const moduleTmp = join(dir, 'tmp');
      await mkdir(moduleTmp, { mode: 0o700 }).catch(() => undefined);
      let timedOut = false;
      const child = execa('ansible-playbook', ['-i', 'localhost,', '-c', 'local', playbook, '-e', `@${varsFile}`], {
        cwd: this.ansibleDir,
        env: {
          ANSIBLE_CONFIG: join(this.ansibleDir, 'ansible.cfg'),
          ANSIBLE_STDOUT_CALLBACK: 'json',
          ANSIBLE_LOAD_CALLBACK_PLUGINS: '1',
          ANSIBLE_LOCAL_TEMP: moduleTmp,
          TMPDIR: moduleTmp,
          ANSIBLE_NOCOLOR: '1',
        },
        detached: true,
        reject: false,
        stdin: 'ignore',
        maxBuffer: this.outputLimit,
      });
      const timer = setTimeout(() => {
        timedOut = true;
        killRun(child.pid, moduleTmp);
      }, options.timeoutMs);
      if (child.pid) this.groups.set(child.pid, moduleTmp);
      if (this.stopping) killRun(child.pid, moduleTmp);
      // Once the controller is gone (killed by someone else than the timer: the OOM killer, an operator's kill of
      // the pid pgrep shows), its forked workers would hold its stdout open until the timeout, and the run would be
      // read as the machine's timeout: end the group with it, so the run ends now with the controller's signal.
      child.once('exit', () => killGroup(child.pid));
      // Beside the input: a process that dies without ending the run leaves both for the next one to reap.
      await writeFile(join(dir, GROUP_FILE), String(child.pid ?? '')).catch(() => undefined);
      try {
        const result = await child;
        const stdout = String(result.stdout ?? '');
        const stderr = String(result.stderr ?? '');
        const exitCode = typeof result.exitCode === 'number' ? result.exitCode : null;
        // Parsed once: the report may be up to the output bound (64 MiB).
        const report = playReport(stdout);
        const nodes = outcomesOf(input, report, { exitCode, timedOut, ...(result.isMaxBuffer ? { outputOver: this.outputLimit } : {}) });
        const fault =
          environmentFault({ code: result.code, signal: result.signal, exitCode, timedOut, hasDuffyOut: duffyOutOf(report) !== undefined, hasReport: isPlayReport(report), stderr }) ??
          ([...nodes.values()].some((n) => !n.ok) ? await fullDisk(runs) : undefined);
        const run: RunRecord = {
          action: input.action,
          playbook,
          exitCode,
          durationMs: Date.now() - started,
          timedOut,
          tail: (fault && !fault.spawned ? fault.reason : stderr + stdout).slice(-TAIL),
        };
        return { run, nodes, ...(fault ? { fault } : {}) };
      } finally {
        clearTimeout(timer);
        // Whatever the group left behind (a worker still running) goes too.
        killGroup(child.pid);
        if (child.pid) this.groups.delete(child.pid);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}

/**
 * Whether a finished run failed on Duffy's side rather than the machines'. A playbook that hangs past its
 * timeout, fails, or answers garbage is the machines' (or their playbook's) failure; these are not.
 */
export function environmentFault(r: { code?: string; signal?: string; exitCode: number | null; timedOut: boolean; hasDuffyOut: boolean; hasReport?: boolean; stderr?: string }): EnvironmentFault | undefined {
  if (r.code === 'ENOENT') return { reason: 'ansible-playbook not found on PATH', spawned: false };
  if (r.code === 'EACCES' || r.code === 'EPERM') return { reason: `ansible-playbook is not executable (${r.code})`, spawned: false };
  if (r.code) return { reason: `could not start ansible-playbook: ${r.code}`, spawned: false };
  if (r.timedOut || r.hasDuffyOut) return undefined;
  // Killed by somebody else than Duffy's timeout (the OOM killer, an operator): the controller died, not the machine.
  if (r.signal) return { reason: `ansible-playbook was killed by ${r.signal}`, spawned: true, scope: 'run' };
  // 4 with no play report: a parser error (4 with a report is an unreachable host), 5: bad options;
  // 126/127: the shell could not run it (a broken installation).
  if (r.exitCode === 126 || r.exitCode === 127) return { reason: `ansible-playbook could not run (exit code ${r.exitCode})`, spawned: true };
  // One of the run's worker processes was killed (the OOM killer, an operator) while the controller lived on: like the
  // controller killed, a fault of this run's process, not of its playbook file (which ran tasks) nor of the machines.
  if (r.exitCode !== 0 && /A worker was found in a dead state/.test(r.stderr ?? '')) return { reason: 'an ansible-playbook worker process was killed (A worker was found in a dead state)', spawned: true, scope: 'run' };
  // Stopped before its first play: no task touched a machine. Held back per playbook, as one pool's file must not
  // stop the others (4 with no play report: a parser error, 5: bad options; any other code: a role missing, or a
  // broken installation's Python error, which then holds back every playbook in turn).
  if (r.exitCode === 4 || r.exitCode === 5) return r.hasReport ? undefined : { reason: `ansible-playbook could not load the playbook (exit code ${r.exitCode})`, spawned: true, scope: 'playbook' };
  if (r.exitCode !== 0 && r.exitCode !== null && !r.hasReport) {
    // Its last word (a Python traceback's last line names the broken module) goes to the tenant and the log too.
    const said = lastLine(r.stderr ?? '');
    return { reason: `ansible-playbook stopped before running the playbook (exit code ${r.exitCode})${said ? `: ${said}` : ''}`, spawned: true, scope: 'playbook' };
  }
  return undefined;
}

/**
 * A run whose machines failed while the disk under the data directory was full failed on Duffy's side: Ansible
 * writes each module to ANSIBLE_LOCAL_TEMP there before running it ("[Errno 28] No space left on device"), so the
 * machines' failures say nothing about them (invariant 10: a full disk never quarantines a machine).
 */
export async function fullDisk(dir: string): Promise<EnvironmentFault | undefined> {
  const free = await freeBytes(dir);
  if (free === undefined || free >= FULL_DISK_BYTES) return undefined;
  return { reason: `the disk under ${dir} is full (${free} bytes free): Ansible cannot write its temporary files`, spawned: true };
}

const commandLine = (pid: number) => readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');

/**
 * The process group of a run left behind: from its file; else, for a process killed between the spawn and that
 * file's write, the group of the ansible-playbook whose command line names the run's input. Only a group still led
 * by an ansible-playbook: a pid the system has given to something else is left alone.
 */
async function runGroup(dir: string): Promise<number | undefined> {
  const pgid = Number(await readFile(join(dir, GROUP_FILE), 'utf8').catch(() => ''));
  if (Number.isInteger(pgid) && pgid > 0 && (await commandLine(pgid)).includes('ansible-playbook')) return pgid;
  const input = `@${join(dir, INPUT_FILE)}`;
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^[0-9]+$/.test(pid)) continue;
    const args = (await commandLine(Number(pid))).split('\0');
    if (!args.includes(input) || !args.some((a) => a.endsWith('ansible-playbook'))) continue;
    // Field 5 of stat, after the command name in parentheses: the group (Ansible's forks share the leader's command line).
    const group = Number((await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')).split(') ').at(-1)?.split(' ')[2]);
    if (Number.isInteger(group) && group > 0) return group;
  }
  return undefined;
}

/**
 * Kills a run Duffy gives up on (timed out, Duffy stopping, a predecessor's): its process group, and what left the
 * group but still carries the run's TMPDIR. An `async` task's job detaches into a session of its own (Ansible's
 * async_wrapper), so killing the group left a hung job running on Duffy's host for good. Only then, not after a run
 * that ended: a daemon a playbook meant to leave running (a port forward) is not Duffy's to end. Returns how many
 * kills found something (the group counts once).
 */
function killRun(pid: number | undefined, tmp: string): number {
  let killed = killGroup(pid) ? 1 : 0;
  const mark = `TMPDIR=${tmp}`;
  for (const name of readdirSync('/proc', { withFileTypes: false }) as string[]) {
    if (!/^[0-9]+$/.test(name)) continue;
    let env: string[];
    try {
      env = readFileSync(`/proc/${name}/environ`, 'latin1').split('\0');
    } catch {
      continue; // gone, or another user's
    }
    if (!env.includes(mark)) continue;
    try {
      process.kill(Number(name), 'SIGKILL');
      killed++;
    } catch {
      /* already gone */
    }
  }
  return killed;
}

/** Whether the group was there to kill. */
function killGroup(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(-pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}

/** Every input node gets an outcome: from `duffy_out` when the output has one, otherwise a failure that says why. */
export function outcomes(input: DuffyIn, stdout: string, run: RunEnd): Map<string, NodeOutcome> {
  return outcomesOf(input, playReport(stdout), run);
}

type RunEnd = Pick<RunRecord, 'exitCode' | 'timedOut'> & { outputOver?: number };

/** `outcomes` of a run whose report (`playReport`) is already parsed. */
function outcomesOf(input: DuffyIn, report: unknown, run: RunEnd): Map<string, NodeOutcome> {
  const found = duffyOutOf(report);
  const reason = run.timedOut
    ? 'playbook timed out'
    : found === undefined
      ? run.outputOver !== undefined
        ? // Cut off where Duffy stopped reading (the run itself may have gone well): say so, not "no duffy_out".
          `playbook output over ${run.outputOver / (1024 * 1024)} MiB: its duffy_out could not be read`
        : run.exitCode === 0
        ? 'playbook output had no duffy_out'
        : boundedError(`playbook failed with exit code ${run.exitCode}${run.exitCode === 4 ? ' (a host unreachable)' : ''}${lastFailure(report) ?? ''}`)
      : 'node missing from duffy_out';
  // A task that failed after duffy_out was set (the run exits non-zero) may have been the wipe a release needs: its
  // "ok" no longer holds, and the run does not say for which machine.
  const failedAfter =
    found !== undefined && typeof run.exitCode === 'number' && run.exitCode !== 0
      ? boundedError(`playbook failed with exit code ${run.exitCode} after its duffy_out${lastFailure(report) ?? ''}`)
      : undefined;
  const map = new Map<string, NodeOutcome>();
  for (const node of input.nodes) {
    const out = run.timedOut ? undefined : found?.find((n) => n.hostname === node.hostname);
    map.set(
      node.hostname,
      out && out.ok === true && failedAfter
        ? { ok: false, ipaddr: node.ipaddr, error: failedAfter, unattributed: true }
        : out
        ? {
            ok: out.ok === true,
            ipaddr: typeof out.ipaddr === 'string' ? out.ipaddr : node.ipaddr,
            // Bounded as the run's tail is: a failed task's whole stderr would otherwise go into the ledger, in
            // several events (the failure, the quarantine, the session's end), over KurrentDB's 1 MiB append limit.
            ...(out.ok === true ? {} : { error: boundedError(String(out.error ?? 'failed')) }),
            ...(typeof out.note === 'string' && out.note.trim() ? { note: out.note.trim().replace(/\s+/g, ' ').slice(0, 500) } : {}),
          }
        : { ok: false, ipaddr: node.ipaddr, error: reason, ...(run.timedOut || found === undefined ? { unattributed: true } : {}) },
    );
  }
  return map;
}

/** What a command said last (a Python traceback's last line names what broke), for a one-line message. */
const lastLine = (text: string) => text.trim().split('\n').at(-1)?.slice(0, 200);

/** The most of a node's error the ledger keeps: its end, where a failed command's stderr says what went wrong. */
const ERROR_MAX = TAIL;

function boundedError(error: string): string {
  return error.length <= ERROR_MAX ? error : `${error.slice(0, 200)} [... ${error.length - ERROR_MAX} characters left out ...] ${error.slice(-(ERROR_MAX - 200))}`;
}

/** Whether the JSON callback printed its report, i.e. Ansible got as far as running plays. */
function isPlayReport(report: unknown): boolean {
  return Array.isArray((report as { plays?: unknown } | undefined)?.plays);
}

/**
 * The JSON callback's document in a run's stdout. Callbacks an operator enables (ANSIBLE_CALLBACKS_ENABLED=timer,
 * profile_tasks) and ANSIBLE_DEBUG print lines around it, which used to make every run "had no duffy_out" and
 * quarantine machines for a setting of Duffy's host: then the document is the lines from "{" to "}" (its
 * indentation puts no other brace at the start of a line, and its strings hold no raw newline).
 */
function playReport(stdout: string): unknown {
  try {
    return JSON.parse(stdout.slice(stdout.indexOf('{')));
  } catch {
    const start = stdout.startsWith('{\n') ? 0 : stdout.indexOf('\n{\n');
    const end = stdout.lastIndexOf('\n}');
    if (start < 0 || end < start) return undefined;
    try {
      return JSON.parse(stdout.slice(start, end + 2));
    } catch {
      return undefined;
    }
  }
}

type TaskResult = { failed?: unknown; unreachable?: unknown; msg?: unknown; stderr?: unknown; results?: TaskResult[] };
type Report = { plays?: Array<{ tasks?: Array<{ task?: { name?: unknown }; hosts?: Record<string, TaskResult> }> }> };

/**
 * The task that stopped a failed run, in words (`: task "x" failed: msg: stderr`): the run's tail is
 * the end of the JSON report, its stats, which never says what failed. The last failed task is the one that
 * stopped the play (one rescued earlier failed too, but the play went on).
 */
function lastFailure(report: unknown): string | undefined {
  let said: string | undefined;
  for (const play of (report as Report | undefined)?.plays ?? []) {
    for (const task of play.tasks ?? []) {
      for (const r of Object.values(task.hosts ?? {})) {
        if (r?.failed !== true && r?.unreachable !== true) continue;
        // A loop's own msg is generic: its first failed item says what went wrong.
        const item = Array.isArray(r.results) ? r.results.find((i) => i?.failed === true) : undefined;
        const detail = [item?.msg ?? r.msg, item?.stderr ?? r.stderr].filter((t) => typeof t === 'string' && t.trim()).map((t) => String(t).trim());
        // Not the host: it is localhost even for a task delegated to a node, whose address the msg names.
        said = `: task ${JSON.stringify(String(task.task?.name ?? '?'))} ${r.unreachable === true ? 'could not reach its host' : 'failed'}${detail.length ? `: ${detail.join(': ')}` : ''}`;
      }
    }
  }
  return said;
}

type OutNode = { hostname: string; ipaddr?: unknown; ok?: unknown; error?: unknown; note?: unknown };

/** The last `ansible_facts.duffy_out` in the JSON callback's document; undefined when there is none or it is not JSON. */
export function findDuffyOut(stdout: string): OutNode[] | undefined {
  return duffyOutOf(playReport(stdout));
}

function duffyOutOf(doc: unknown): OutNode[] | undefined {
  if (doc === undefined) return undefined;
  let last: OutNode[] | undefined;
  const plays = (doc as { plays?: Array<{ tasks?: Array<{ hosts?: Record<string, { ansible_facts?: { duffy_out?: { nodes?: unknown } } }> }> }> }).plays;
  for (const play of plays ?? []) {
    for (const task of play.tasks ?? []) {
      for (const host of Object.values(task.hosts ?? {})) {
        const nodes = host?.ansible_facts?.duffy_out?.nodes;
        if (Array.isArray(nodes)) last = nodes.filter((n): n is OutNode => typeof n?.hostname === 'string');
      }
    }
  }
  return last;
}

/** Ansible's JSON marker for unsafe text (never templated). */
const UNSAFE = '__ansible_unsafe';

/** A run left behind, from its input, for the log: `release p [p-3.test] for session 1` (its work is done again). */
async function describeRun(inputFile: string): Promise<string> {
  try {
    // Every string of the input is wrapped as Ansible's unsafe text: unwrapped here.
    const { duffy_in: d } = JSON.parse(await readFile(inputFile, 'utf8'), (_k, v: unknown) => (v !== null && typeof v === 'object' && UNSAFE in v ? (v as Record<typeof UNSAFE, unknown>)[UNSAFE] : v)) as { duffy_in: DuffyIn };
    return `${d.action} ${d.pool.name} [${d.nodes.map((n) => n.hostname).join(', ')}]${d.session ? ` for session ${d.session.id}` : ''}`;
  } catch {
    return 'a run whose input cannot be read';
  }
}

/**
 * `duffy_in` as extra vars, every string as Ansible's JSON marker for unsafe text: extra vars are templated, and
 * tenants and admins write some of them (an SSH key, node data, a comment): `{{ lookup('pipe', ...) }}` in one would
 * run on Duffy's host. Unsafe text is used as it is, never templated. The pool's `vars` come from the configuration
 * (as trusted as the host) and stay templates.
 */
export function extraVarsJson(input: DuffyIn): string {
  const trusted = new WeakSet<object>();
  const trust = (v: unknown): void => {
    if (typeof v !== 'object' || v === null || trusted.has(v)) return;
    trusted.add(v);
    Object.values(v).forEach(trust);
  };
  trust(input.pool.vars);
  return JSON.stringify({ duffy_in: input }, function (this: object, key: string, value: unknown) {
    // Called again on the marker's own member.
    if (typeof value !== 'string' || key === UNSAFE || trusted.has(this)) return value;
    return { [UNSAFE]: value };
  });
}
