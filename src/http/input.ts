import { type ArgumentMetadata, type ExecutionContext, type PipeTransform, createParamDecorator } from '@nestjs/common';
import type { ValidationError } from 'class-validator';
import { isUtf8 } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { LogFn, Logger } from 'pino';
import { describeValidation, namedAtMost } from '../config/config.js';
import { markRefusal } from './refusal.js';
import { DomainError, refuse } from '../domain/errors.js';
import { LONE_SURROGATE_TEXT, MAX_ID, NUL_NAME, hasLoneSurrogate, idOf, shownName } from '../domain/events.js';

/**
 * What every request goes through before a controller sees it: the JSON body's shape (depth, nulls),
 * path ids, the request id. One place, so no endpoint can forget a check.
 */

/** No Duffy body is deeper than a handful of levels; 32 leaves room for node `data` and stops recursion bombs. */
export const MAX_BODY_DEPTH = 32;
/**
 * Nor more than this many members in all (fields and array elements, at any depth; 32 specs of a dozen fields, a
 * node's `data`): checking 80,000 unknown fields of one 1 MB body held the event loop for seconds, each costs a few
 * microseconds, and the check of one object's grows with the square of their number.
 */
export const MAX_BODY_MEMBERS = 2000;
/** 1 MB is far above any real request and keeps a hostile body from costing memory. */
export const MAX_BODY_BYTES = 1024 * 1024;

/** A 4xx that body-parser passes on as it is (see describe() in errors.filter.ts). */
class BodyRefused extends Error {
  readonly type = 'entity.verify.failed';
  constructor(
    message: string,
    readonly status = 422,
  ) {
    super(message);
  }
}

/**
 * body-parser `verify`: runs on the raw bytes before JSON.parse, so a deep body never reaches a recursive
 * transformer. A linear scan: brackets inside strings do not count. UTF-8 continuation bytes are never ASCII, so
 * the scan holds for UTF-8 only, which is what JSON between systems must be (RFC 8259): other charsets are a 415.
 */
export function checkJsonDepth(req: unknown, _res: unknown, buf: Buffer, encoding?: string): void {
  if (encoding !== undefined && !/^utf-?8$/i.test(encoding)) throw new BodyRefused(`JSON bodies must be UTF-8, not ${encoding}`, 415);
  // Decoding would put U+FFFD in place of each bad byte: a Latin-1 "café" stored as "caf\ufffd", without a word.
  if (!isUtf8(buf)) throw new BodyRefused('malformed JSON body: not valid UTF-8 (RFC 8259: JSON is UTF-8; Latin-1\'s é, the byte 0xe9, is not)', 400);
  if (buf.length === 0) (req as EmptyMarked)[EMPTY_BODY] = true;
  let depth = 0;
  let inString = false;
  /** Members after the first of each object or array (what the commas separate): an opening adds none. */
  let members = 0;
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i];
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > MAX_BODY_DEPTH) throw new BodyRefused(`request body nested deeper than ${MAX_BODY_DEPTH} levels`);
    } else if (c === 0x7d || c === 0x5d) depth--;
    else if (c === 0x2c && ++members >= MAX_BODY_MEMBERS) throw tooMany();
  }
}

const EMPTY_BODY = Symbol('empty JSON body');
type EmptyMarked = { [EMPTY_BODY]?: true; body?: unknown };

/**
 * Express middleware, after the JSON parser: an empty JSON body is no body (the parser makes it `{}`, which a "done"
 * read as "nothing to change": a 200 that left the machines held), as FastAPI (Duffy v3) reads it; a route that needs
 * one then refuses it (IdParamsPipe).
 */
export function emptyBodyIsNone(req: IncomingMessage, _res: ServerResponse, next: () => void): void {
  if ((req as EmptyMarked)[EMPTY_BODY]) (req as EmptyMarked).body = undefined;
  next();
}

const tooMany = () => new BodyRefused(`request body has more than ${MAX_BODY_MEMBERS} members (fields and array elements, in all)`);

/**
 * body-parser `type`: which bodies are JSON, as FastAPI (Duffy v3) decides it: `application/json`,
 * `application/<anything>+json`, and a body sent without a Content-Type at all (Python's `requests.post(data=...)`,
 * Jenkins' httpRequest step by default) by a client that is not a browser. Other types are not parsed, and the body
 * is then missing its fields (422).
 */
export function isJsonBody(req: IncomingMessage): boolean {
  const header = req.headers['content-type'];
  // An empty header stays unparsed (FastAPI would parse it): its malformed JSON would be our 400, not FastAPI's 422.
  // Nor is a typeless body from a browser (it sends Origin on every POST): a cross-site page may send one without a
  // CORS preflight (a Blob, sendBeacon), and the browser adds the Basic credentials it keeps for the ops page.
  // refuseCrossSiteWrites answers those 403 first; this stays a second line should that check ever let one through.
  if (header === undefined) return req.headers.origin === undefined;
  const type = header.split(';')[0].trim().toLowerCase();
  return type === 'application/json' || /^application\/[^/\s]+\+json$/.test(type);
}

/**
 * Express middleware: a write (not GET/HEAD/OPTIONS) that a browser says comes from another site is a 403. Browsers
 * keep the Basic credentials of the ops page and send them with a cross-site form or fetch that needs no CORS
 * preflight (a form POST, a text/plain or typeless body), so without this any page an admin opens could, e.g., rebuild
 * the read models. Clients that are not browsers send neither Sec-Fetch-Site nor Origin, and the ops page's own
 * requests say same-origin (or, over plain http, carry an Origin naming Duffy's own host).
 */
export function refuseCrossSiteWrites(req: IncomingMessage, res: ServerResponse, next: () => void): void {
  const site = req.headers['sec-fetch-site'];
  const write = req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'OPTIONS';
  if (!write) return next();
  // Browsers send Sec-Fetch-Site only to https (and localhost) URLs: to Duffy on plain http they send Origin alone.
  const sameSite = site === 'same-origin' || site === 'none';
  const refused = site === undefined ? foreignOrigin(req) : sameSite ? undefined : `Sec-Fetch-Site: ${String(site)}`;
  if (refused === undefined) return next();
  answerDetail(res, 403, `a write from another site is refused (${refused.slice(0, 64)})`);
}

/**
 * Express middleware: an HTTP/1.1 request without Host is a 400 (RFC 9112), in JSON. Node's own check (the server's
 * requireHostHeader, turned off for this one) answered it with no body at all.
 */
export function requireHost(req: IncomingMessage, res: ServerResponse, next: () => void): void {
  if (req.httpVersion === '1.1' && req.headers.host === undefined) return answerDetail(res, 400, 'an HTTP/1.1 request must name its Host (RFC 9112)');
  next();
}

/** An answer from a middleware that runs before Nest (and its error filter): `{"detail": ...}` as every error. */
export function answerDetail(res: ServerResponse, status: number, detail: string): void {
  res.statusCode = status;
  markRefusal(res, status);
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.end(JSON.stringify({ detail }));
}

const UTF8_ALIAS = /(;\s*charset\s*=\s*"?)(?:utf8|us-ascii|ascii)(?="?\s*(?:;|$))/i;

/**
 * Express middleware: a write whose body is not read as JSON (a form: curl's `-d` without a JSON Content-Type) is a
 * 422 naming why. Left unread, `PUT /sessions/{id}` saw no change and answered 200:
 * a job's "done" left its machines held.
 */
export function refuseUnreadBodies(req: IncomingMessage, res: ServerResponse, next: () => void): void {
  const length = req.headers['content-length'];
  const hasBody = req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
  if (!hasBody || req.method === 'GET' || req.method === 'HEAD') return next();
  if (isJsonBody(req)) {
    // Other names of UTF-8 (or of its ASCII subset), which body-parser refuses: FastAPI (Duffy v3) reads them.
    const type = req.headers['content-type'];
    if (type !== undefined && UTF8_ALIAS.test(type)) req.headers['content-type'] = type.replace(UTF8_ALIAS, '$1utf-8');
    return next();
  }
  const type = req.headers['content-type'] === undefined ? 'no Content-Type' : `Content-Type ${String(req.headers['content-type']).slice(0, 64) || '(empty)'}`;
  answerDetail(res, 422, `the body was not read: send it as JSON with Content-Type: application/json (got ${type})`);
}

export const BODY_TOO_LARGE = 'request body too large';

export const bodyDeclaredTooLarge = (req: IncomingMessage) => Number(req.headers['content-length']) > MAX_BODY_BYTES;

/**
 * Express middleware, before the JSON parser: a body over MAX_BODY_BYTES is a 413 as soon as that is known, and
 * the connection closed. body-parser found it as early, but then read the body to its end before it answered: a
 * client could stream for as long as it liked (until the request timeout, which then answered 408).
 */
export function refuseOversizedBodies(req: IncomingMessage, res: ServerResponse, next: () => void): void {
  const refuseTooLarge = () => {
    if (res.headersSent) return;
    // Node would otherwise read the rest of the body off the connection to keep it for the next request.
    res.shouldKeepAlive = false;
    answerDetail(res, 413, BODY_TOO_LARGE);
  };
  if (bodyDeclaredTooLarge(req)) return refuseTooLarge();
  next();
  // A chunked body declares no length: counted as the parser reads it (a listener of our own would start the flow
  // before the parser listens, and lose what it missed), and refused once past the limit.
  if (req.headers['content-length'] !== undefined || req.listenerCount('data') === 0) return;
  let read = 0;
  const count = (chunk: Buffer) => {
    read += chunk.length;
    if (read <= MAX_BODY_BYTES) return;
    req.off('data', count);
    refuseTooLarge();
  };
  req.on('data', count);
}

/** `Origin: ...` when a request's Origin names another host than the one it was sent to (Host, or a proxy's X-Forwarded-Host or Forwarded host). */
function foreignOrigin(req: IncomingMessage): string | undefined {
  const origin = req.headers.origin;
  if (origin === undefined) return undefined;
  const from = urlOf(origin); // undefined for "null" (a sandboxed frame, a redirect) or garbage: no site of ours
  // Host names read as the Origin's scheme reads them: a proxy's `duffy:80` is the browser's `http://duffy`.
  const hostOf = (name: string | undefined) => (from && name ? urlOf(`${from.protocol}//${name}`)?.host : undefined);
  const ours = from !== undefined && from.host !== '' && [req.headers.host, ...proxiedHosts(req)].some((name) => from.host === hostOf(name));
  return ours ? undefined : `Origin: ${origin}`;
}

/** The host the browser used, as the nearest proxy passes it on: `X-Forwarded-Host`, or RFC 7239's `Forwarded: host=`. */
function proxiedHosts(req: IncomingMessage): string[] {
  const xForwarded = String(req.headers['x-forwarded-host'] ?? '').split(',')[0].trim();
  // The first element is the browser-facing proxy's; the host may be quoted (`host="duffy:8443"`).
  const forwarded = /(?:^|;)\s*host\s*=\s*(?:"([^"]*)"|([^;,\s]*))/i.exec(String(req.headers.forwarded ?? '').split(',')[0]);
  return [xForwarded, forwarded?.[1] ?? forwarded?.[2] ?? ''].filter((h) => h !== '');
}

function urlOf(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

/**
 * JSON.parse reviver: a `null` member means "not given" (the duffy 3.3.9 client sends `"expires_at": null`,
 * `"tenant_id": null`), so it is dropped before validation. Nulls inside lists stay, and fail validation there.
 * Members the body pipe must refuse are marked on their way up (see REFUSED).
 */
export function reviveJsonBody(this: unknown, key: string, value: unknown): unknown {
  if (RESERVED_MEMBERS.has(key)) mark(this, { at: key, problem: 'unknown field (not part of this request body)' });
  // BSON field names are NUL-terminated: one such name in a node's data stopped the MongoDB read models for good.
  else if (key.includes('\0')) mark(this, { at: shownName(key), problem: NUL_NAME });
  else if (hasLoneSurrogate(key) || (typeof value === 'string' && hasLoneSurrogate(value))) mark(this, { at: Array.isArray(this) ? `[${key}]` : shownName(key), problem: LONE_SURROGATE_TEXT });
  else if (typeof value === 'number' && !Number.isFinite(value)) mark(this, { at: Array.isArray(this) ? `[${key}]` : key, problem: `not a finite number (it reads as ${value}): numbers must be finite` });
  else if (typeof value === 'object' && value !== null && (value as Marked)[REFUSED] !== undefined) {
    const below = (value as Marked)[REFUSED]!;
    mark(this, { at: pathTo(this, key, below.at), problem: below.problem });
  }
  if (value !== null || Array.isArray(this)) return value;
  // Dropped, but remembered: where Duffy v3 gives a null a meaning (a tenant setting back to the default), it is asked.
  const holder = this as Nulled;
  // Not enumerable: the body stays equal to one that never had the member.
  if (!holder[NULLED]) Object.defineProperty(holder, NULLED, { value: new Set<string>() });
  holder[NULLED]!.add(key);
  return undefined;
}

const NULLED = Symbol('null members');
type Nulled = { [NULLED]?: Set<string> };
/** The members of a parsed body that were JSON null (and so were dropped). */
export const nullMembers = (body: unknown): ReadonlySet<string> => (typeof body === 'object' && body !== null ? ((body as Nulled)[NULLED] ?? new Set()) : new Set());

/**
 * Member names of prototype machinery (`__proto__`, `constructor`, `toString`, `hasOwnProperty`...): JSON.parse makes
 * them plain members, which the body's transformation then drops without a word, so a strict body would take them.
 */
const RESERVED_MEMBERS = new Set([...Object.getOwnPropertyNames(Object.prototype), 'prototype']);
/**
 * The first member of a body the body pipe refuses: a reserved name, a number beyond a double (`1e999` parses as
 * Infinity, which the ledger would store as `null` under a hash of Infinity: it would fail its own audit for good), or
 * text holding a lone surrogate (see hasLoneSurrogate).
 * The reviver marks the object holding one, and every object above it (it runs bottom-up).
 */
const REFUSED = Symbol('refused member');
type Marked = { [REFUSED]?: { at: string; problem: string } };
const mark = (holder: unknown, refused: { at: string; problem: string }) => void ((holder as Marked)[REFUSED] ??= refused);
/** `below` as seen from the member `key` of `holder`, named as validation names paths: `nodes_specs[0].constructor`. */
function pathTo(holder: unknown, key: string, below: string): string {
  const step = Array.isArray(holder) ? `[${key}]` : key === '' ? '""' : key;
  return below.startsWith('[') ? step + below : `${step}.${below}`;
}

/** Unknown fields are named as such; class-validator's own wording ("property x should not exist") reads like a bug. */
export function validationFailed(errors: ValidationError[]): DomainError {
  const rename = (list: ValidationError[]): ValidationError[] =>
    list.map((e) => ({
      ...e,
      constraints: e.constraints?.whitelistValidation
        ? { unknown: 'unknown field (not part of this request body)' }
        : e.value === undefined && e.constraints
          ? { required: required(e.property, Object.values(e.constraints)[0]) }
          : e.constraints,
      children: rename(e.children ?? []),
    }));
  const problems = describeValidation(rename(errors));
  return new DomainError('invalid', namedAtMost(problems).join('; ') || 'invalid request body');
}

/** A required field that is missing (or null) says so, with the alternative its rule names: `pool is required (or give type/arch/platform instead)`. */
const required = (field: string, rule: string) => `${field} is required${/ \(or [^)]*\)/.exec(rule)?.[0] ?? ''}`;


export function parseId(raw: unknown, what = 'id'): number {
  return idOf(raw) ?? refuse('invalid', `${what} must be an integer from 0 to ${MAX_ID}, got ${JSON.stringify(String(raw).slice(0, 40))}`);
}

/**
 * Global, ahead of the ValidationPipe (whose `transform` would turn "0x10" into 16 with Number()): every path or
 * query parameter a controller declares as a number is an id as idOf reads it (as pydantic reads an int); a body with a member the reviver
 * marked (see REFUSED) is refused by its name.
 */
export class IdParamsPipe implements PipeTransform {
  transform(value: unknown, meta: ArgumentMetadata): unknown {
    // Every body is an object, as Duffy v3's models are: `null` or no body at all must not read as "nothing to change".
    if (meta.type === 'body' && (typeof value !== 'object' || value === null || Array.isArray(value))) {
      throw new DomainError('invalid', `the body must be a JSON object, got ${value === undefined || value === null ? 'null or nothing' : Array.isArray(value) ? 'a list' : `a ${typeof value}`}`);
    }
    const refused = meta.type === 'body' ? (value as Marked)[REFUSED] : undefined;
    if (refused !== undefined) throw new DomainError('invalid', `${refused.at}: ${refused.problem}`);
    return (meta.type === 'param' || meta.type === 'query') && meta.metatype === Number && meta.data ? parseId(value, meta.data) : value;
  }
}

/** Printable ASCII, no spaces: safe to echo in a header, log and store in every event's metadata. */
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

type WithId = IncomingMessage & { id?: unknown };

/** The caller's X-Request-Id when it is sane, else a fresh one; set once per request and echoed back. */
export function requestIdOf(req: WithId, res?: ServerResponse): string {
  if (typeof req.id === 'string' && REQUEST_ID.test(req.id)) return req.id;
  const given = req.headers['x-request-id'];
  const id = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
  req.id = id;
  if (res && !res.headersSent) res.setHeader('X-Request-Id', id);
  return id;
}

/** The request's id, for handlers without Basic auth (the legacy calls) to put in their events' metadata. */
export const RequestId = createParamDecorator((_: unknown, ctx: ExecutionContext): string => requestIdOf(ctx.switchToHttp().getRequest<WithId>()));

/**
 * `RequestSessionCommand.onCallerGone` for a request answered on `res`: the listener runs if the caller hangs up
 * before its answer (a request in the queue leaves it, one in hand-over ends), whichever API it came through.
 */
export function callerGoneOf(res: ServerResponse): (listener: () => void) => () => void {
  return (listener) => {
    const closed = () => res.writableFinished || listener();
    res.once('close', closed);
    return () => void res.off('close', closed);
  };
}

/** The legacy API carries the API key in the query string: mask it wherever a URL or query is logged. */
export function redactUrl(url: string): string {
  // A `?` sent percent-encoded (a client's mistake, answered 404) still puts the key in the url that is logged.
  const first = /\?|%3f/i.exec(url);
  if (first === null) return url;
  const start = first.index + first[0].length;
  // Every pair after it, whatever separates it from the next (`&`, `;` as some clients write it, another `?`, any of
  // them percent-encoded; a `#` goes with its pair): a value is redacted when its name, decoded as the query parser
  // decodes it and stripped of everything but letters and digits, starts with `key` or `apikey` (`%6bey`, `k%65y`,
  // `KEY`, `key[]`, `key `, `api_key`...).
  const parts = url.slice(start).split(/(&|;|\?|%3f|%26|%3b)/i);
  return url.slice(0, start) + parts.map((part, i) => (i % 2 === 1 ? part : redactPair(part))).join('');
}

function redactPair(pair: string): string {
  const eq = /=|%3d/i.exec(pair);
  if (eq === null) return pair;
  const name = pair.slice(0, eq.index);
  return SECRET_PARAM.test(decodedName(name).toLowerCase().replace(/[^a-z0-9]/g, '')) ? `${name}${eq[0]}[Redacted]` : pair;
}

const SECRET_PARAM = /^(key|apikey)/;
function decodedName(name: string): string {
  try {
    return decodeURIComponent(name.replace(/\+/g, ' '));
  } catch {
    return name;
  }
}

/**
 * The root logger's settings: one short line per request (serialising every header of every request cost more CPU
 * than deciding it), with the legacy `key` masked in the url and Basic credentials never logged.
 */
export const logSettings = {
  redact: ['req.headers.authorization'],
  serializers: {
    req: (req: { id: string; method: string; url: string; originalUrl?: string }) => ({ id: req.id, method: req.method, url: redactUrl(req.originalUrl ?? req.url) }),
    res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
  },
};

/**
 * Nest's start-up wiring (a line per module and per route: some 80 lines), at debug rather than info; with its
 * "successfully started", said before Duffy's own start-up has run (a start refused then exits after it): Duffy's
 * "listening on" line says when it is up.
 */
const NEST_WIRING = new Set(['InstanceLoader', 'RoutesResolver', 'RouterExplorer', 'NestApplication']);

/** nestjs-pino builds the root logger through pino-http; unwrapped, our serializers read the raw request and response. */
export const httpLogging = {
  ...logSettings,
  wrapSerializers: false,
  hooks: {
    logMethod(this: Logger, args: Parameters<LogFn>, method: LogFn, level: number) {
      const first = args[0] as { context?: unknown } | undefined;
      if (level === 30 && typeof first === 'object' && first !== null && NEST_WIRING.has(String(first.context))) {
        if (this.isLevelEnabled('debug')) this.debug(...args);
        return;
      }
      method.apply(this, args);
    },
  },
};

/**
 * The request log line, one per request, on nestjs-pino's root logger with the serializers above: the same line
 * pino-http writes (`req`, `res`, `responseTime`, "request completed"), without what pino-http does per request
 * besides (a child logger, two listeners, its own serializer wrapping): that cost as much CPU as Nest itself.
 * Not nestjs-pino's middleware either: it runs every request inside an AsyncLocalStorage, which on Node 20 turns
 * on promise hooks for every promise of the process; nothing of Duffy reads that per-request context.
 */
export function requestLogging(root: Logger): (req: IncomingMessage, res: ServerResponse, next: () => void) => void {
  return (req, res, next) => {
    requestIdOf(req, res);
    const start = Date.now();
    whenExchanged(req, res, (whole) => {
      const line = { req, res, responseTime: Date.now() - start };
      if (!whole) root.warn(line, 'request aborted');
      // A 503 is a condition Duffy names (a full disk, stopping, the queue full): warned of, with its own summary line; a 500 is a bug.
      else if (res.statusCode === 503) root.warn(line, 'request refused for now');
      else if (res.statusCode >= 500) root.error(line, 'request errored');
      else root.info(line, 'request completed');
    });
    next();
  };
}

/**
 * Calls `done` once a request's exchange is over, `whole` when its answer was sent whole. When the client went away
 * before any byte of the answer left (a Jenkins abort; a body cut off, which Express still "answers" 400 into the
 * closed socket, setting headersSent and writableFinished), `res.statusCode` is set to nginx's 499 first, not the
 * status Nest had set in advance; an answer cut off after its first bytes keeps the status it was sent with.
 * The log line and the request counter both read it, so they agree. One pair of listeners per exchange, whoever asks.
 */
export function whenExchanged(req: IncomingMessage, res: ServerResponse, done: (whole: boolean) => void): void {
  const waiting = (res as ExchangeWatched)[EXCHANGE_END];
  if (waiting) {
    waiting.push(done);
    return;
  }
  const callbacks = [done];
  (res as ExchangeWatched)[EXCHANGE_END] = callbacks;
  const socket = req.socket;
  const sentBefore = socket.bytesWritten;
  // 'finish' only once the answer was handed to the OS; 'close' follows it, and comes alone when the client left first.
  let whole = false;
  res.once('finish', () => (whole = true));
  res.once('close', () => {
    if (!whole && socket.bytesWritten === sentBefore) res.statusCode = 499;
    for (const callback of callbacks) callback(whole);
  });
}
const EXCHANGE_END = Symbol('exchange end');
type ExchangeWatched = ServerResponse & { [EXCHANGE_END]?: Array<(whole: boolean) => void> };
