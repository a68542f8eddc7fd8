import type { ServerResponse } from 'node:http';
import type { DomainErrorKind } from '../domain/errors.js';

/** The status of each kind of refusal Duffy's rules make (a `DomainError`'s kind). */
export const STATUS_OF_KIND: Record<DomainErrorKind, number> = {
  invalid: 422,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  quota: 403,
  capacity: 422,
  conflict: 409,
  unavailable: 503,
};

/**
 * The kind of an answer no rule of Duffy's decided (auth, the body's parser, Nest's pipes, routing, a storage fault):
 * its status's plain kind. Quota and capacity only ever come from Duffy's rules, which name them.
 */
const PLAIN_KIND_OF_STATUS: ReadonlyMap<number, DomainErrorKind> = new Map<number, DomainErrorKind>([
  ...(Object.entries(STATUS_OF_KIND) as Array<[DomainErrorKind, number]>).filter(([kind]) => kind !== 'quota' && kind !== 'capacity').map(([kind, status]): [number, DomainErrorKind] => [status, kind]),
  ...[400, 405, 408, 413, 415, 431].map((status): [number, DomainErrorKind] => [status, 'invalid']),
]);

/** The kind of refusal of an answer with this status that Duffy's own rules did not decide, if it is one. */
export const refusalKindOf = (status: number): DomainErrorKind | undefined => PLAIN_KIND_OF_STATUS.get(status);

/**
 * Says which refusal an answer is, for scripts (the duffy CLI's exit codes): a 422 of no capacity is worth asking
 * again, an invalid one never. Every refusal carries it, whoever answers: the errors filter, a middleware, the router.
 */
export function markRefusal(res: Pick<ServerResponse, 'setHeader'>, status: number, kind?: DomainErrorKind): void {
  const refusal = kind ?? refusalKindOf(status);
  if (refusal) res.setHeader('Duffy-Refusal', refusal);
}
