import { readFileSync } from 'node:fs';
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

  async call<T = Record<string, any>>(method: string, path: string, body?: unknown): Promise<T> {
    const { tenant, key, url } = this.config;
    if (!tenant || !key) throw new ApiError(401, 'no credentials: give --tenant and --key, DUFFY_TENANT and DUFFY_KEY, or ~/.config/duffy');
    let res: Response;
    try {
      res = await fetch(`${url}/api/v1${path}`, {
        method,
        headers: { authorization: `Basic ${Buffer.from(`${tenant}:${key}`).toString('base64')}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw Object.assign(new ApiError(0, `cannot reach Duffy at ${url}: ${(err as Error).cause ?? (err as Error).message}`), { unreachable: true });
    }
    const text = await res.text();
    let parsed: any;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { detail: text };
    }
    if (!res.ok) throw new ApiError(res.status, String(parsed?.detail ?? res.statusText));
    return parsed as T;
  }
}
