import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';

/** Where and who: flags first, then DUFFY_URL / DUFFY_TENANT / DUFFY_KEY, then ~/.config/duffy (YAML: url, tenant, key). */
export interface ClientConfig {
  url: string;
  tenant?: string;
  key?: string;
}

export function clientConfig(flags: Partial<ClientConfig>, env: NodeJS.ProcessEnv = process.env): ClientConfig {
  let file: Partial<ClientConfig> = {};
  const path = env.DUFFY_CLIENT_CONFIG ?? join(homedir(), '.config', 'duffy');
  try {
    file = (parse(readFileSync(path, 'utf8')) ?? {}) as Partial<ClientConfig>;
  } catch {
    /* no config file: flags and environment only */
  }
  return {
    url: (flags.url ?? env.DUFFY_URL ?? file.url ?? 'http://localhost:8080').replace(/\/+$/, ''),
    tenant: flags.tenant ?? env.DUFFY_TENANT ?? file.tenant,
    key: flags.key ?? env.DUFFY_KEY ?? file.key,
  };
}

/** Exit codes a script can act on. */
export const EXIT = { ok: 0, failure: 1, usage: 2, auth: 3, notFound: 4, noCapacity: 5, unavailable: 6, unreachable: 7 } as const;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
  get exitCode(): number {
    if (this.status === 401 || this.status === 403) return EXIT.auth;
    if (this.status === 404) return EXIT.notFound;
    if (this.status === 422 && this.message.startsWith("can't reserve")) return EXIT.noCapacity;
    if (this.status === 503) return EXIT.unavailable;
    return EXIT.failure;
  }
}

export class DuffyClient {
  constructor(readonly config: ClientConfig) {}

  /**
   * One API call. Plain node:http(s), not fetch: fetch gives up on an answer after 300 s (undici's headers
   * timeout), and a request waiting in Duffy's fair queue is answered only when it is served.
   */
  async call<T = Record<string, any>>(method: string, path: string, body?: unknown): Promise<T> {
    return JSON.parse((await this.raw(method, path, body)).toString('utf8')) as T;
  }

  /** The answer's bytes (a file download); an error answer becomes an ApiError with its `detail`. */
  async raw(method: string, path: string, body?: unknown): Promise<Buffer> {
    const { tenant, key, url } = this.config;
    if (!tenant || !key) throw new ApiError(401, 'no credentials: give --tenant and --key, DUFFY_TENANT and DUFFY_KEY, or ~/.config/duffy');
    const payload = body === undefined ? undefined : JSON.stringify(body);
    let res: { status: number; statusText: string; body: Buffer };
    try {
      res = await send(new URL(`${url}/api/v1${path}`), method, {
        authorization: `Basic ${Buffer.from(`${tenant}:${key}`).toString('base64')}`,
        'content-type': 'application/json',
        ...(payload === undefined ? {} : { 'content-length': String(Buffer.byteLength(payload)) }),
      }, payload);
    } catch (err) {
      throw Object.assign(new ApiError(0, `cannot reach Duffy at ${url}: ${(err as Error).message}`), { unreachable: true });
    }
    if (res.status >= 200 && res.status < 300) return res.body;
    let detail: unknown;
    try {
      detail = JSON.parse(res.body.toString('utf8'))?.detail;
    } catch {
      detail = res.body.toString('utf8');
    }
    throw new ApiError(res.status, String(detail || res.statusText));
  }
}

function send(url: URL, method: string, headers: Record<string, string>, payload?: string): Promise<{ status: number; statusText: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}
