import { type CanActivate, type ExecutionContext, HttpException, HttpStatus, Injectable, createParamDecorator } from '@nestjs/common';
import type { Request } from 'express';
import { digestsOf, sameDigest } from '../application/catalog.js';
import type { Actor } from '../application/commands.js';
import { Ledger } from '../application/ledger.service.js';
import type { Tenant, World } from '../domain/world.js';
import { requestIdOf } from './input.js';

type AuthedRequest = Request & { actor?: Actor };

/** Find the tenant of an API key through its digest, compared in constant time. */
export function tenantByKey(world: World, key: string): Tenant | undefined {
  for (const digest of digestsOf(key)) {
    const id = world.tenantIdsByDigest.get(digest);
    const tenant = id === undefined ? undefined : world.tenants.get(id);
    if (tenant && sameDigest(tenant.apiKeyDigest, digest)) return tenant;
  }
  return undefined;
}

/** HTTP Basic: user = tenant name, password = API key. */
@Injectable()
export class BasicAuthGuard implements CanActivate {
  constructor(private readonly ledger: Ledger) {}

  canActivate(context: ExecutionContext): boolean {
    const req = context.switchToHttp().getRequest<AuthedRequest>();
    const header = req.headers.authorization;
    const unauthorized = (detail: string) =>
      new HttpException({ detail }, HttpStatus.UNAUTHORIZED, { cause: 'basic' });
    if (!header) throw unauthorized('Not authenticated: use HTTP Basic auth with the tenant name and API key');
    // The scheme is case-insensitive (RFC 9110 11.1).
    const match = /^Basic +([A-Za-z0-9+/=]{1,1024})$/i.exec(header.trim());
    if (!match) throw unauthorized('Malformed Authorization header: expected "Basic <base64(name:key)>"');
    const decoded = Buffer.from(match[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 1) throw unauthorized('Malformed Basic credentials: expected "name:key"');
    const name = decoded.slice(0, colon);
    const tenant = tenantByKey(this.ledger.world, decoded.slice(colon + 1));
    if (!tenant || tenant.name !== name) throw unauthorized('Invalid tenant name or API key');
    if (tenant.retiredAt !== null) throw new HttpException({ detail: `tenant ${name} is retired` }, HttpStatus.FORBIDDEN);
    req.actor = { tenant, requestId: requestIdOf(req) };
    return true;
  }
}

export const CurrentActor = createParamDecorator((_: unknown, ctx: ExecutionContext): Actor => {
  return ctx.switchToHttp().getRequest<AuthedRequest>().actor!;
});
