/** The ledger port: the only source of truth. Both adapters pass test/contract/event-store.contract.ts. */

import type { ExpectedRevision } from '../../domain/decide.js';

export type { ExpectedRevision };

/** Events per `readAll` page when the World is folded from the ledger at start (Ledger.start; benchmark P7 too). */
export const FOLD_PAGE = 1000;

export interface EventMetadata {
  correlationId?: string;
  causationId?: string;
  actor?: string;
  at?: string;
  [key: string]: unknown;
}

export interface NewEvent<T extends string = string, D = object> {
  type: T;
  data: D;
  metadata?: EventMetadata;
}

export interface RecordedEvent<T extends string = string, D = Record<string, unknown>> {
  id: string;
  stream: string;
  /** 0-based position inside its stream. */
  revision: number;
  /** Global, strictly increasing commit position (0 = before the first event). */
  position: bigint;
  type: T;
  data: D;
  metadata: EventMetadata;
}

/** Events for one stream, guarded by the revision the decision was made on. */
export interface StreamWrite {
  stream: string;
  expected: ExpectedRevision;
  events: NewEvent[];
}

export interface AppendResult {
  /** Position of the last event written by this call. */
  position: bigint;
  /** Per write, in call order: the revision of its last event (pass it as that stream's next expected revision). */
  nextExpectedRevisions: number[];
}

export interface Subscription {
  close(): Promise<void>;
}

export type EventHandler = (event: RecordedEvent) => void | Promise<void>;

/**
 * An event as a projection folds it: its position, revision, type and data. Not its id and metadata, most of a
 * stored event's bytes (a hash chain, a correlation id), nor its stream: no projection reads them.
 */
export type LeanEvent = Pick<RecordedEvent, 'position' | 'revision' | 'type' | 'data'>;
export type LeanEventHandler = (event: LeanEvent) => void | Promise<void>;

export interface EventStore {
  /** True when no other process can write this ledger (the embedded file): claims left by a dead process are void. */
  readonly singleWriter: boolean;
  /**
   * One decision, one call: every write commits, or none does (a stale revision anywhere fails the whole call
   * with WrongExpectedRevisionError and leaves the store untouched). A reader never sees part of a call.
   * A stream may appear once per call.
   */
  append(writes: StreamWrite[]): Promise<AppendResult>;
  /** Events of one stream in revision order; empty when the stream does not exist. */
  readStream(stream: string, fromRevision?: number): Promise<RecordedEvent[]>;
  /** Events with a position strictly after `after`, in order, at most `limit`. */
  readAll(after: bigint, limit: number): Promise<RecordedEvent[]>;
  /** The newest `limit` events with a position strictly before `before`, in order, without reading the ones before them. */
  readLast(before: bigint, limit: number): Promise<RecordedEvent[]>;
  /** How many events have a position up to `position`, where the store can tell without reading them (the embedded file). */
  countUpTo?(position: bigint): Promise<number>;
  /** Catch-up from `after`, then live; the handler is awaited, so delivery is in order without gaps or repeats. */
  subscribeAll(after: bigint, handler: EventHandler, onError?: (err: unknown) => void): Subscription;
  /** subscribeAll for followers of LeanEvents: a store that can leave the rest unread does (a rebuild reads less). */
  subscribeAllLean(after: bigint, handler: LeanEventHandler, onError?: (err: unknown) => void): Subscription;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export class WrongExpectedRevisionError extends Error {
  constructor(
    readonly stream: string,
    readonly expected: ExpectedRevision,
    readonly actual: number | 'no_stream',
  ) {
    super(`wrong expected revision on ${stream}: expected ${String(expected)}, actual ${String(actual)}`);
    this.name = 'WrongExpectedRevisionError';
  }
}

/**
 * The most bytes of event data and metadata one append may carry: KurrentDB's default MaxAppendSize before 25.1
 * (1 MiB). 25.1 raised that default to 256 MiB, so both adapters refuse a larger append whole themselves
 * (appendTooLarge): the same write fails on either store, whatever the server is set to. (KurrentDB counts a little
 * more: the type names, the metadata as an escaped string; a server set lower still refuses on its own.)
 */
export const MAX_APPEND_BYTES = 1024 * 1024;

export class AppendTooLargeError extends Error {
  constructor(
    /** Bytes of data and metadata, where the store said. */
    readonly bytes: number | undefined,
    readonly limit: number,
  ) {
    super(`the append carries ${bytes === undefined ? 'more' : `${bytes}`} bytes of events, over the event store's bound of ${limit} bytes per append`);
    this.name = 'AppendTooLargeError';
  }
}

/**
 * The refusal of writes carrying more than MAX_APPEND_BYTES of data and metadata (JSON, UTF-8), else undefined.
 * `chars`, where the caller has counted them: at most a third of the bound needs no byte count (UTF-8 takes up to 3).
 */
export function appendTooLarge(writes: StreamWrite[], chars = Infinity): AppendTooLargeError | undefined {
  if (chars * 3 <= MAX_APPEND_BYTES) return undefined;
  let bytes = 0;
  for (const w of writes) for (const e of w.events) bytes += Buffer.byteLength(JSON.stringify(e.data)) + Buffer.byteLength(JSON.stringify(e.metadata ?? {}));
  return bytes > MAX_APPEND_BYTES ? new AppendTooLargeError(bytes, MAX_APPEND_BYTES) : undefined;
}

export const EVENT_STORE = Symbol('EVENT_STORE');
