/** An unknown host, session or tenant: the CLI exits non-zero instead of answering "nobody". */
export class NotFoundError extends Error {}
