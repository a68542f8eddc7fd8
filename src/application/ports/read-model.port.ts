/**
 * The read side's port: documents per collection plus one checkpoint per projection.
 * Adapters: embedded SQLite (default) and MongoDB; both pass test/contract/read-models.contract.ts.
 */
export type Doc = Record<string, unknown>;

/** A document change produced by a projection for the event at `position`. */
export type DocChange =
  | { op: 'put'; collection: string; id: string; doc: Doc; position: bigint }
  | { op: 'delete'; collection: string; id: string; position: bigint };

export interface Checkpoint {
  position: bigint;
  /** The projection's definition version that wrote the documents; a new version means rebuild from 0. */
  version: number;
}

/**
 * Filters the read side asks on every call of a route, on collections that grow with history (every session ever
 * made stays readable): each store keeps an index for them, so `GET /sessions` reads the open sessions, not all.
 */
export const INDEXED_FIELDS: Readonly<Record<string, readonly string[]>> = { sessions: ['status'] };

export interface ReadModelStore {
  /**
   * `apply` has read (copied) every document of its changes before it returns its promise: the caller may change
   * them at once, while the write is under way. Otherwise they must stay untouched until the promise settles.
   */
  readonly copiesOnApply?: boolean;
  /**
   * Applies the changes in order and moves the projection's checkpoint to `checkpoint`.
   * Embedded: one transaction. MongoDB: every document keeps the last applied position (`_position`) and a
   * change at or below it is skipped, so re-applying a batch after a crash changes nothing.
   */
  apply(projection: string, version: number, changes: DocChange[], checkpoint: bigint): Promise<void>;
  get(collection: string, id: string): Promise<Doc | undefined>;
  /** The documents of these ids that exist, ordered by id: one read, whatever the collection holds besides. */
  getMany(collection: string, ids: readonly string[]): Promise<Doc[]>;
  /** Documents whose top-level fields equal every entry of `filter` (empty filter: all), ordered by id. */
  find(collection: string, filter?: Record<string, string | number | boolean | null>): Promise<Doc[]>;
  checkpoint(projection: string): Promise<Checkpoint | undefined>;
  /**
   * Whether a document of these collections was written by an event after `position`: documents ahead of their
   * checkpoint (MongoDB, after a crash between a batch's documents and its checkpoint, or another instance's batch
   * under way) are not the projection's state at the checkpoint, and must not be restored as if they were.
   */
  writtenAfter(collections: string[], position: bigint): Promise<boolean>;
  /** Drops the collections' documents and the projection's checkpoint (before a rebuild from position 0). */
  reset(projection: string, collections: string[]): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export const READ_MODELS = Symbol('READ_MODELS');
