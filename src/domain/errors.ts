/** Domain refusals. The API maps each kind to its status; deciders never see HTTP. */
export type DomainErrorKind = 'invalid' | 'unauthorized' | 'forbidden' | 'not_found' | 'quota' | 'capacity' | 'conflict' | 'unavailable';

export class DomainError extends Error {
  constructor(
    readonly kind: DomainErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'DomainError';
  }
}

export const refuse = (kind: DomainErrorKind, message: string): never => {
  throw new DomainError(kind, message);
};
