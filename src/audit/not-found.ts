/** An unknown host, session or tenant: the CLI exits non-zero instead of answering "nobody". */
export class NotFoundError extends Error {}

/** A question the audit cannot read (`history foo`): the CLI's usage exit, not the one of a broken ledger. */
export class BadQuestionError extends Error {}
