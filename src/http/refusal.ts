import type { ServerResponse } from 'node:http';
import type { DomainErrorKind } from '../domain/errors.js';

/** The kind of a refusal Duffy's own rules did not make (auth, the body's parser, Nest's pipes, routing, a storage fault). */
const REFUSAL_BY_STATUS: Partial<Record<number, DomainErrorKind>> = {
  400: 'invalid',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'invalid',
  409: 'conflict',
  413: 'invalid',
  415: 'invalid',
  422: 'invalid',
  503: 'unavailable',
};

/**
 * Says which refusal an answer is, for scripts (the duffy CLI's exit codes): a 422 of no capacity is worth asking
 * again, an invalid one never. Every refusal carries it, whoever answers: the errors filter, a middleware, the router.
 */
export function markRefusal(res: Pick<ServerResponse, 'setHeader'>, status: number, kind?: DomainErrorKind): void {
  const refusal = kind ?? REFUSAL_BY_STATUS[status];
  if (refusal) res.setHeader('Duffy-Refusal', refusal);
}
