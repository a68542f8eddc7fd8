import { Inject, Injectable } from '@nestjs/common';
import { createHash, timingSafeEqual } from 'node:crypto';
import { join } from 'node:path';
import { ConfigError, type PoolConfig, type Settings } from '../config/config.js';
import type { PoolProfile } from '../domain/policy.js';
import type { Defaults } from '../domain/events.js';

export const SETTINGS = Symbol('SETTINGS');

/** Configuration the domain reads: pools and tenant defaults. */
@Injectable()
export class Catalog {
  readonly pools: PoolConfig[];
  readonly profiles: PoolProfile[];
  readonly defaults: Defaults;
  private readonly byName: Map<string, PoolConfig>;

  constructor(@Inject(SETTINGS) readonly settings: Settings) {
    this.pools = settings.config.pools;
    this.byName = new Map(this.pools.map((p) => [p.name, p]));
    this.profiles = this.pools.map(({ name, type, arch, platform }) => ({ name, type, arch, platform }));
    const d = settings.config.defaults;
    this.defaults = { nodeQuota: d['node-quota'], sessionLifetime: d['session-lifetime'], sessionLifetimeMax: d['session-lifetime-max'] };
  }

  /** Where the files collected from a session's machines live: `<data dir>/artifacts/session-<id>`. */
  artifactsDir(sessionId?: number): string {
    const root = join(this.settings.dataDir, 'artifacts');
    return sessionId === undefined ? root : join(root, `session-${sessionId}`);
  }

  pool(name: string): PoolConfig | undefined {
    return this.byName.get(name);
  }
}

/** API keys are random UUIDs: a SHA-256 digest is enough and doubles as the lookup index (DESIGN section 5). */
const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('hex');
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (key: string) => UUID.test(key);

/** `DUFFY_ADMIN_KEY` becomes an API key on an empty ledger: it must have the form every API key has. */
export function assertAdminKey(key: string | undefined): void {
  if (key && !isUuid(key)) throw new ConfigError('DUFFY_ADMIN_KEY: must be a UUID (the form every Duffy API key has), e.g. from uuidgen');
}
/** A key's digest; a UUID is one value however its letters are cased (as Duffy v3's UUID keys are). */
export const digestKey = (key: string) => sha256(UUID.test(key) ? key.toLowerCase() : key);
/**
 * The digests a presented key may be stored under, computed one at a time (a login hashes once): as above, or, for a
 * UUID typed with capitals, as it was typed (such keys stored before that rule).
 */
export function* digestsOf(key: string): Generator<string> {
  yield digestKey(key);
  if (!UUID.test(key)) return;
  // Capitals as typed, or (a key chosen in lowercase) capitals as `uuidgen` on some systems prints them.
  if (key !== key.toLowerCase()) yield sha256(key);
  else yield sha256(key.toUpperCase());
}

export function sameDigest(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}
