import { readFileSync, readdirSync, statSync } from 'node:fs';
import { type ClientRequest, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { isRecord } from '../audit/chain.js';

/**
 * Where and who: flags first, then DUFFY_URL / DUFFY_TENANT / DUFFY_KEY, then the configuration: `--config` paths,
 * else DUFFY_CLIENT_CONFIG, else Duffy v3's places (/etc/duffy, then $XDG_CONFIG_HOME/duffy, ~/.config/duffy); each a
 * YAML file or a directory of them. Keys `url, tenant, key`, or Duffy v3's `client: {url, auth: {name, key}}`, so a
 * Jenkins agent's existing Duffy v3 client configuration works as it is.
 */
export interface ClientConfig {
  url: string;
  tenant?: string;
  key?: string;
  /** How long a release (`duffy done`) is tried again while Duffy cannot take it (DUFFY_RELEASE_RETRY_SECONDS, 120). */
  releasePatienceMs?: number;
}

type FileConfig = Partial<ClientConfig> & { client?: { url?: string; auth?: { name?: string; key?: string } } };

export function clientConfig(flags: Partial<ClientConfig> & { config?: string[] }, env: NodeJS.ProcessEnv = process.env): ClientConfig {
  // Named ones (-c, DUFFY_CLIENT_CONFIG) must be there and readable, as in Duffy v3; its default places may be missing.
  const named = flags.config?.length ? flags.config : env.DUFFY_CLIENT_CONFIG ? [env.DUFFY_CLIENT_CONFIG] : undefined;
  const paths = named ?? ['/etc/duffy', join(env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'duffy')];
  // Later files win, key by key, as Duffy v3 merges its configuration.
  const merged: FileConfig = {};
  for (const c of paths.flatMap((p) => yamlFiles(p, named !== undefined)).flatMap((f) => readYaml(f, named !== undefined))) {
    Object.assign(merged, c, { client: { ...merged.client, ...c.client, auth: { ...merged.client?.auth, ...c.client?.auth } } });
  }
  const v3 = merged.client;
  // An empty DUFFY_URL, DUFFY_TENANT or DUFFY_KEY is unset, as the server's variables are: the configuration's value holds.
  const url = flags.url ?? (env.DUFFY_URL || undefined) ?? text(merged.url, 'url') ?? text(v3?.url, 'client.url') ?? 'http://localhost:8080';
  // Else `localhost:8080` is reported as an unreachable Duffy, 'Protocol "localhost:" not supported'.
  if (!/^https?:\/\/[^/]/i.test(url)) throw new UsageError(`the Duffy URL must start with http:// or https://, got ${JSON.stringify(url)}`);
  return {
    // Duffy v3's url ends in /api/v1 (its client asks for /sessions): the API prefix is added per call here.
    url: url.replace(/\/+$/, '').replace(/\/api\/v1$/, ''),
    tenant: flags.tenant ?? (env.DUFFY_TENANT || undefined) ?? text(merged.tenant, 'tenant') ?? text(v3?.auth?.name, 'client.auth.name'),
    key: flags.key ?? (env.DUFFY_KEY || undefined) ?? text(merged.key, 'key') ?? text(v3?.auth?.key, 'client.auth.key'),
    ...(env.DUFFY_RELEASE_RETRY_SECONDS ? { releasePatienceMs: seconds(env.DUFFY_RELEASE_RETRY_SECONDS, 'DUFFY_RELEASE_RETRY_SECONDS') * 1000 } : {}),
  };
}

/** A whole number of seconds from the environment (0 and up). */
function seconds(value: string, name: string): number {
  if (!/^\d{1,6}$/.test(value)) throw new UsageError(`${name} must be a whole number of seconds, got ${JSON.stringify(value)}`);
  return Number(value);
}

/** A configuration value as text (YAML reads `name: 1234` as a number); a list or mapping there is a usage error, not a TypeError. */
function text(value: unknown, key: string): string | undefined {
  if (value === undefined || value === null || typeof value === 'string') return value ?? undefined;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  throw new UsageError(`client configuration: ${key} must be a string`);
}

/** A configuration path: the file itself, or a directory's *.yaml and *.yml in name order; nothing if missing (unless named). */
function yamlFiles(path: string, named: boolean): string[] {
  try {
    if (!statSync(path).isDirectory()) return [path];
    return readdirSync(path).filter((f) => /\.ya?ml$/.test(f)).sort().map((f) => join(path, f));
  } catch (err) {
    if (named) throw new UsageError(`cannot read the client configuration ${path}: ${(err as Error).message}`);
    return [];
  }
}

/** Every document of the file, in order (v3 reads them with yaml.safe_load_all and merges them). */
function readYaml(file: string, named: boolean): FileConfig[] {
  try {
    return parseAllDocuments(readFileSync(file, 'utf8')).flatMap((doc) => {
      if (doc.errors.length) throw doc.errors[0];
      const c = doc.toJS() as unknown;
      if (c === null || c === undefined) return [];
      if (!isRecord(c)) throw new Error('its top level must be a mapping (url, tenant, key, or client: {url, auth})');
      // Merged key by key: a string or list here would be spread character by character.
      const v3 = (c as FileConfig).client;
      if (v3 != null && (!isRecord(v3) || (v3.auth != null && !isRecord(v3.auth)))) throw new Error('client and client.auth must be mappings (client: {url, auth: {name, key}})');
      return [c as FileConfig];
    });
  } catch (err) {
    if (named) throw new UsageError(`cannot read the client configuration ${file}: ${(err as Error).message.split('\n')[0]}`);
    /* unreadable or not YAML: flags and environment only */
    return [];
  }
}

/** Exit codes a script can act on. */
export const EXIT = { ok: 0, failure: 1, usage: 2, auth: 3, notFound: 4, noCapacity: 5, unavailable: 6, unreachable: 7, never: 8 } as const;

/** A mistake in the command line: exit 2 with the message (commander's own errors print themselves). */
export class UsageError extends Error {}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** The server's kind of refusal (its `Duffy-Refusal` header): `capacity`, `invalid`, `quota`... */
    readonly refusal?: string,
  ) {
    super(message);
  }
  get exitCode(): number {
    if (this.status === 401 || this.status === 403) return EXIT.auth;
    if (this.status === 404) return EXIT.notFound;
    // A request no wait can serve (an unknown pool, a spec no pool offers, more machines than the pools have) is not
    // "no capacity": a wrapper that asks again on 5 would ask for ever.
    if (this.status === 422 && this.message.startsWith("can't reserve")) return this.refusal === 'invalid' ? EXIT.never : EXIT.noCapacity;
    if (this.status === 503) return EXIT.unavailable;
    return EXIT.failure;
  }
}

/** The URL as messages show it: a key written into it (`http://name:key@host`) must not land in a build log. */
export function shownUrl(url: string): string {
  const at = url.indexOf('@');
  const scheme = url.indexOf('://');
  if (at < 0 || scheme < 0 || at > (url.indexOf('/', scheme + 3) >>> 0)) return url;
  return `${url.slice(0, scheme + 3)}***@${url.slice(at + 1)}`;
}

export class DuffyClient {
  constructor(readonly config: ClientConfig) {}

  /**
   * One API call. Plain node:http(s), not fetch: fetch gives up on an answer after 300 s (undici's headers
   * timeout), and a request waiting in Duffy's fair queue is answered only when it is served.
   */
  async call<T = Record<string, any>>(method: string, path: string, body?: unknown, patient = true, onRequest?: (req: ClientRequest) => void): Promise<T> {
    return JSON.parse((await this.raw(method, path, body, patient, onRequest)).toString('utf8')) as T;
  }

  /** The answer's bytes (a file download); an error answer becomes an ApiError with its `detail`. */
  async raw(method: string, path: string, body?: unknown, patient = true, onRequest?: (req: ClientRequest) => void): Promise<Buffer> {
    const res = await this.exchange(method, path, body, patient, onRequest);
    if (res.status >= 200 && res.status < 300) return res.body;
    throw new ApiError(res.status, detailOf(res.body) || res.statusText, res.refusal);
  }

  /**
   * One call and its answer whatever the status (Duffy v3's `duffy client` prints error answers as they are).
   * `patient`: tried again where that is safe (below); not for a job that is stopping and must exit now.
   * `onRequest`: given each HTTP request as it is made (a stopping job closes its side of a request's connection).
   */
  async exchange(method: string, path: string, body?: unknown, patient = true, onRequest?: (req: ClientRequest) => void): Promise<Answer> {
    const { tenant, key, url } = this.config;
    if (!tenant || !key) throw new ApiError(401, 'no credentials: give --tenant and --key, DUFFY_TENANT and DUFFY_KEY, or ~/.config/duffy');
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const asked = body as { active?: unknown; expires_at?: unknown } | undefined;
    const release = method === 'PUT' && asked?.active === false && asked.expires_at == null;
    // Tried again only when the call can be made twice to the same effect: a read or a release, never a request nor a
    // relative extension ("+1h" twice is 2 h). A connection Duffy dropped at once (DUFFY_MAX_CONNECTIONS) for both;
    // for a release also a Duffy restarting (refused, or 503 while it stops) or hung: a `duffy done` in a build's
    // last step that gave up at once left the machines held until their lease ended.
    const budgetMs = !patient ? 0 : release ? (this.config.releasePatienceMs ?? RELEASE_PATIENCE_MS) : method === 'GET' ? RESET_PATIENCE_MS : 0;
    const retryable = release ? ['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ETIMEDOUT'] : ['ECONNRESET', 'EPIPE'];
    // One deadline for the tries, their waits and their silences alike: a hung server must not hold a build's last
    // step ten silences long.
    const deadline = Date.now() + budgetMs;
    let said = false;
    /**
     * Waits before the next try and says so once; false when the deadline has passed. A pause cut short by the deadline
     * ends in one last try at it: a Duffy back 10 s before the deadline, inside a 15 s pause, was never asked again.
     */
    const tryAgain = async (attempt: number, why: string): Promise<boolean> => {
      const pause = Math.min(RETRY_PAUSES_MS[Math.min(attempt, RETRY_PAUSES_MS.length - 1)], deadline - Date.now());
      if (pause <= 0) return false;
      if (!said) process.stderr.write(`duffy: ${why}; trying again for up to ${Math.round((deadline - Date.now()) / 1000)} s\n`);
      said = true;
      await new Promise((r) => setTimeout(r, pause));
      return true;
    };
    for (let attempt = 0; ; attempt++) {
      let answer: Answer;
      // A request may wait long for its machines (the queue, a hand-over); any other call is given up on when silent.
      const silenceMs = method === 'POST' ? undefined : budgetMs > 0 ? Math.max(1_000, Math.min(SILENCE_MS, deadline - Date.now())) : SILENCE_MS;
      try {
        answer = await send(new URL(`${url}/api/v1${path}`), method, {
          authorization: `Basic ${Buffer.from(`${tenant}:${key}`).toString('base64')}`,
          'content-type': 'application/json',
          ...(payload === undefined ? {} : { 'content-length': String(Buffer.byteLength(payload)) }),
        }, payload, silenceMs, onRequest);
      } catch (err) {
        const code = String((err as NodeJS.ErrnoException).code);
        if (retryable.includes(code) && (await tryAgain(attempt, `cannot reach Duffy at ${shownUrl(url)} (${code})`))) continue;
        throw Object.assign(new ApiError(0, `cannot reach Duffy at ${shownUrl(url)}: ${(err as Error).message}`), { unreachable: true, sent: code !== 'ECONNREFUSED' });
      }
      if (release && answer.status === 503 && (await tryAgain(attempt, `Duffy cannot take the release now (503 ${detailOf(answer.body)})`))) continue;
      return answer;
    }
  }
}

type Answer = { status: number; statusText: string; body: Buffer; refusal?: string };

const detailOf = (body: Buffer): string => {
  try {
    return String(JSON.parse(body.toString('utf8'))?.detail ?? '');
  } catch {
    return body.toString('utf8');
  }
};

/** Pauses between tries, growing to the last. */
const RETRY_PAUSES_MS = [500, 1_000, 2_000, 4_000, 8_000, 15_000];
/** How long a read whose connection was reset is tried again. */
const RESET_PATIENCE_MS = 30_000;
/** A release's: about 2 minutes, what a Duffy restart or upgrade takes (a stop, a start on a large ledger). */
const RELEASE_PATIENCE_MS = 120_000;
/** An answer silent this long is given up on (a hung server must not hang a build's last step); a request may wait longer. */
const SILENCE_MS = 60_000;

function send(url: URL, method: string, headers: Record<string, string>, payload?: string, silenceMs?: number, onRequest?: (req: ClientRequest) => void): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const refusal = res.headers['duffy-refusal'];
      res.on('end', () => resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', body: Buffer.concat(chunks), refusal: typeof refusal === 'string' ? refusal : undefined }));
      res.on('error', reject);
    });
    if (silenceMs !== undefined) req.setTimeout(silenceMs, () => req.destroy(Object.assign(new Error(`no answer in ${silenceMs / 1000} s`), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    onRequest?.(req);
    req.end(payload);
  });
}
