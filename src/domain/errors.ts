/** Domain refusals. The API maps each kind to its status; deciders never see HTTP. */
export type DomainErrorKind = 'invalid' | 'unauthorized' | 'forbidden' | 'not_found' | 'quota' | 'capacity' | 'conflict' | 'unavailable';

export class DomainError extends Error {
  constructor(
    readonly kind: DomainErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'DomainError';
  }
}

/** `cause`: what made it so (a storage fault behind a 503, which the log then says once per interval). */
export const refuse = (kind: DomainErrorKind, message: string, cause?: unknown): never => {
  throw new DomainError(kind, message, cause === undefined ? undefined : { cause });
};
