import { type Command, InvalidArgumentError, Option } from 'commander';
import { DuffyClient, type ClientConfig } from './client.js';
import { pyyamlDump } from './pyyaml.js';

/**
 * `duffy client ...`: Duffy v3's own command line (duffy/cli.py, duffy/client/), same arguments, same request bodies,
 * same output, so Jenkins jobs written against it (`duffy client request-session pool=...,quantity=1 | jq
 * .session.nodes[].hostname`, `jq .error.detail`) keep working where this CLI is the `duffy` on the PATH. As in v3, an
 * error answer is printed as `{"error": <answer>}` and the exit code stays 0.
 */
const FORMATS = ['json', 'yaml', 'flat'];
/** uvicorn's log levels, which v3's `duffy -l/--loglevel` takes. */
const LOG_LEVELS = ['critical', 'error', 'warning', 'info', 'debug', 'trace'];

/** An option taking one of `choices` in any case, as v3's click.Choice(..., case_sensitive=False): `--format JSON` is json. */
export function anyCaseChoice(flags: string, description: string, choices: readonly string[]): Option {
  return new Option(flags, description).choices(choices).argParser((v: string) => {
    const chosen = v.toLowerCase();
    if (!choices.includes(chosen)) throw new InvalidArgumentError(`Allowed choices are ${choices.join(', ')}.`);
    return chosen;
  });
}

/** v3's top-level `-l/--loglevel`: taken, so its command lines run; this CLI has no log to tune. */
export const v3LogLevelOption = () => anyCaseChoice('-l, --loglevel <level>', "Duffy v3's log level: accepted for its command lines, changes nothing here", LOG_LEVELS);

export function v3ClientCommands(duffy: Command, out: (line: string) => void, config: (o: Partial<ClientConfig>) => ClientConfig): void {
  const group = duffy
    .command('client')
    .description("Duffy v3's `duffy client` commands, for scripts written against it")
    .option('--url <url>', 'The base URL of the Duffy API (e.g. https://duffy.example.org/api/v1).')
    .option('--auth-name <name>', 'The tenant name to authenticate with the Duffy API.')
    .option('--auth-key <key>', 'The tenant key to authenticate with the Duffy API.')
    .addOption(anyCaseChoice('--format <format>', 'Format with which to print results.', FORMATS).default('json'));

  /** One call as DuffyClient._query_method makes it: the answer, or `{"error": answer}` when the status is not the expected one. */
  const query = async (method: string, path: string, body?: unknown, expected = 200) => {
    // A --url after `client` may be read as the root's (commander reads program options anywhere): `config` merges both.
    const o = group.opts<{ url?: string; authName?: string; authKey?: string }>();
    const c = new DuffyClient(config({ url: o.url, tenant: o.authName, key: o.authKey }));
    const res = await c.exchange(method, path, body);
    const text = res.body.toString('utf8');
    let answer: unknown;
    try {
      answer = JSON.parse(text);
    } catch {
      answer = undefined;
    }
    if (res.status === expected) return answer;
    const detail = (answer as { detail?: unknown } | undefined)?.detail;
    // v3 raises (a traceback, exit 1) on an error answer it cannot read as {"detail": str}.
    if (typeof detail !== 'string') throw new Error(`${res.status} ${res.statusText}: ${text.slice(0, 200)}`);
    return { error: answer };
  };
  const print = (result: unknown, newline = true) => {
    const format = group.opts<{ format: 'json' | 'yaml' | 'flat' }>().format;
    const text = format === 'json' ? pythonJson(result) : format === 'yaml' ? pyyamlDump(result) : flat(result);
    // As v3's list commands: an empty result prints nothing, not an empty line.
    if (text !== '' || newline) out(text);
  };
  group.command('list-sessions').description('Query active sessions for this tenant on the Duffy API.').action(async () => print(await query('GET', '/sessions'), false));
  group
    .command('show-session')
    .description('Show one session identified by its id on the Duffy API.')
    .argument('<session_id>', 'the session', sessionId)
    .action(async (s: number) => print(await query('GET', `/sessions/${s}`)));
  group
    .command('request-session')
    .description('Request a session with nodes from the Duffy API.')
    .argument('<nodes_specs...>', 'pool=<pool>,quantity=<quantity> [...]', (v: string, before?: NodesSpec[]) => [...(before ?? []), nodesSpec(v)])
    .action(async (specs: NodesSpec[]) => print(await query('POST', '/sessions', { tenant_id: null, nodes_specs: specs }, 201)));
  group
    .command('retire-session')
    .description('Retire an active Duffy session.')
    .argument('<session_id>', 'the session', sessionId)
    .action(async (s: number) => print(await query('PUT', `/sessions/${s}`, { active: false, expires_at: null })));
  group.command('list-pools').description('List configured Duffy node pools.').action(async () => print(await query('GET', '/pools'), false));
  group
    .command('show-pool')
    .description('Show information about a Duffy node pool.')
    .argument('<name>')
    .action(async (name: string) => print(await query('GET', `/pools/${encodeURIComponent(name)}`)));
}

/** A session id as click's `type=int` takes it. */
function sessionId(v: string): number {
  if (!/^\s*[+-]?\d+\s*$/.test(v)) throw new InvalidArgumentError(`'${v}' is not a valid integer.`);
  return Number(v);
}

type NodesSpec = { quantity: number; pool: string };

/** `pool=<pool>,quantity=<n>` as v3's NodesSpecType reads it, then as its SessionCreateModel sends it. */
export function nodesSpec(value: string): NodesSpec {
  const spec: Record<string, string> = {};
  for (const item of value.split(',')) {
    const at = item.indexOf('=');
    if (at < 0) throw new InvalidArgumentError(`not key=value: ${item}`);
    const key = item.slice(0, at);
    if (key in spec) throw new InvalidArgumentError(`Duplicate key: ${key}`);
    spec[key] = item.slice(at + 1);
  }
  if (Object.keys(spec).sort().join() !== 'pool,quantity') throw new InvalidArgumentError('Both `pool` and `quantity` must be set');
  if (!/^\s*\+?\d+\s*$/.test(spec.quantity) || Number(spec.quantity) < 1) throw new InvalidArgumentError(`quantity must be an integer of at least 1, got ${JSON.stringify(spec.quantity)}`);
  return { quantity: Number(spec.quantity), pool: spec.pool };
}

/** Python's `json.dumps(x)`, which v3 prints: ", " and ": " between items, every non-ASCII character escaped. */
export function pythonJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(pythonJson).join(', ')}]`;
  if (v !== null && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${pyString(k)}: ${pythonJson(x)}`).join(', ')}}`;
  return typeof v === 'string' ? pyString(v) : (JSON.stringify(v) ?? 'null');
}
const pyString = (s: string) => JSON.stringify(s).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

type Flat = Record<string, any>;

/** v3's DuffyFlatFormatter: one `key=value` line per pool or per node of a session, for `eval`-style shell use. */
export function flat(result: unknown): string {
  const r = result as Flat;
  if (r === null || typeof r !== 'object') throw new Error(`Can't flatten ${JSON.stringify(result)}`);
  if ('error' in r) return kv({ error: r.error?.detail });
  if ('pool' in r) return flatPool(r.pool);
  if ('pools' in r) return (r.pools as Flat[]).map(flatPool).join('\n');
  if ('session' in r) return flatSession(r.session).join('\n');
  if ('sessions' in r) return (r.sessions as Flat[]).flatMap(flatSession).join('\n');
  throw new Error(`Can't flatten ${JSON.stringify(result)}`);
}

function flatPool(pool: Flat): string {
  const levels = pool.levels as Flat | undefined;
  const fields: Flat = { pool_name: pool.name, fill_level: pool['fill-level'] ?? pool.fill_level };
  for (const level of ['provisioning', 'ready', 'contextualizing', 'deployed', 'deprovisioning']) if (levels) fields[`levels_${level}`] = levels[level];
  return kv(fields);
}

function flatSession(s: Flat): string[] {
  // Python sorts by (pool, hostname, ipaddr).
  const key = (n: Flat) => [n.pool, n.hostname, n.ipaddr].map((x) => String(x ?? ''));
  const nodes = [...(s.nodes as Flat[])].sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    const i = x.findIndex((v, j) => v !== y[j]);
    return i < 0 ? 0 : x[i] < y[i] ? -1 : 1;
  });
  return nodes.map((n) => kv({ session_id: s.id, active: s.active, created_at: s.created_at, retired_at: s.retired_at, pool: n.pool, hostname: n.hostname, ipaddr: n.ipaddr }));
}

/** format_key_value: None empty, booleans TRUE/FALSE, numbers bare, anything else shell-quoted and always in quotes. */
function kv(fields: Flat): string {
  return Object.entries(fields)
    .map(([k, v]) => {
      if (v === null || v === undefined) return `${k}=`;
      if (typeof v === 'boolean') return `${k}=${v ? 'TRUE' : 'FALSE'}`;
      if (typeof v === 'number') return `${k}=${v}`;
      const quoted = shlexQuote(String(v));
      return `${k}=${quoted.startsWith("'") ? quoted : `'${quoted}'`}`;
    })
    .join(' ');
}

/** Python's shlex.quote. */
function shlexQuote(s: string): string {
  if (s === '') return "''";
  if (!/[^\w@%+=:,./-]/.test(s)) return s;
  return `'${s.replace(/'/g, `'"'"'`)}'`;
}
