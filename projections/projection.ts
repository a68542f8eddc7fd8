import type { LeanEvent } from '../src/application/ports/event-store.port.js';
import type { DuffyEvent } from '../src/domain/events.js';
import { instant } from '../src/domain/instant.js';

/**
 * A read-model definition: a pure fold of the ledger into the projection's own in-memory state, and the documents
 * that state shows. `fold` changes the state in place and marks each document it changed; the projector writes the
 * marked documents (`doc`) once per batch, so a document changed by many events is written once. No I/O, no clock:
 * the same events always give the same documents. Bump `version` whenever the output changes meaning: the projector
 * then rebuilds from position 0.
 */
export type Doc = Record<string, unknown>;
/**
 * Marks document `id` of `collection` as changed (or removed) by the event being folded. `created`: it did not exist
 * before this event, so if it is gone again before it was ever written there is nothing to delete.
 */
export type Mark = (collection: string, id: string, created?: boolean) => void;
export type ProjectedEvent = LeanEvent & DuffyEvent;

export interface Projection<S = unknown> {
  name: string;
  version: number;
  collections: string[];
  /** An empty state (before position 0). */
  init(): S;
  fold(state: S, event: ProjectedEvent, mark: Mark): void;
  /** The document as stored: undefined once removed. */
  doc(state: S, collection: string, id: string): Doc | undefined;
  /** Takes a stored document back into the state (a restart from the checkpoint). */
  restore(state: S, collection: string, id: string, doc: Doc): void;
  /**
   * Which documents of `collection` a restart reads back, given those of the collections restored before it (in the
   * order of `collections`): those equal to any of `filters` (on fields the stores index) and those of `ids`; at least
   * every one `restore` keeps. Absent, or undefined: all of them (a collection that grows with history then makes
   * every restart slower).
   */
  restoring?(state: S, collection: string): { filters: Array<Record<string, string>>; ids: Iterable<string> } | undefined;
  /**
   * After a batch is written: the state may let go of documents no later event will change, so it does not grow with
   * history. `pending(collection, id)`: marked since, not yet written (doc() must still give it).
   */
  written?(state: S, pending: (collection: string, id: string) => boolean): void;
}

/** The state of a projection whose state is its documents (plain JSON objects, folded in place). */
export class Documents {
  private readonly maps = new Map<string, Map<string, Doc>>();
  /** The projector's mark for the event being folded. */
  mark: Mark = () => undefined;

  constructor(collections: readonly string[]) {
    for (const c of collections) this.maps.set(c, new Map());
  }

  get(collection: string, id: string): Doc | undefined {
    return this.maps.get(collection)!.get(id);
  }

  /** Stores `doc` as the document (a document changed in place is put again, so it is marked). */
  put(collection: string, id: string | number, doc: Doc): void {
    const key = String(id);
    const docs = this.maps.get(collection)!;
    const before = docs.get(key);
    if (before !== doc) docs.set(key, doc);
    this.mark(collection, key, before === undefined);
  }

  del(collection: string, id: string | number): void {
    const key = String(id);
    if (this.maps.get(collection)!.delete(key)) this.mark(collection, key);
  }

  restore(collection: string, id: string, doc: Doc): void {
    this.maps.get(collection)?.set(id, doc);
  }
}

/** A projection whose state is its documents: `fold` reads and puts them through `Documents`. */
export function documentProjection(p: { name: string; version: number; collections: string[]; fold(docs: Documents, event: ProjectedEvent): void }): Projection<Documents> {
  return {
    name: p.name,
    version: p.version,
    collections: p.collections,
    init: () => new Documents(p.collections),
    fold(docs, event, mark) {
      docs.mark = mark;
      p.fold(docs, event);
    },
    doc: (docs, collection, id) => docs.get(collection, id),
    restore: (docs, collection, id, doc) => docs.restore(collection, id, doc),
  };
}

/** Folds `events` from an empty state (specs and tests): the state, and the documents changed, as `collection/id`. */
export function foldAll<S>(projection: Projection<S>, events: Iterable<ProjectedEvent>): { state: S; changed: Set<string> } {
  const state = projection.init();
  const changed = new Set<string>();
  for (const e of events) projection.fold(state, e, (c, id) => changed.add(`${c}/${id}`));
  return { state, changed };
}

export const ms = (from: string, to: string) => Math.max(0, instant(to) - instant(from));
