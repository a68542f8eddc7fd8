import type { RecordedEvent } from '../src/application/ports/event-store.port.js';
import type { DuffyEvent } from '../src/domain/events.js';

/**
 * A read-model definition: pure, event in, document changes out. `doc` reads the projection's current
 * documents (as left by the changes before this event). Bump `version` whenever the output changes meaning:
 * the projector then rebuilds from position 0.
 */
export type Doc = Record<string, unknown>;
export type Change = { op: 'put'; collection: string; id: string; doc: Doc } | { op: 'delete'; collection: string; id: string };
export type DocReader = (collection: string, id: string) => Doc | undefined;

export interface Projection {
  name: string;
  version: number;
  collections: string[];
  project(event: RecordedEvent & DuffyEvent, doc: DocReader): Change[];
}

export const put = (collection: string, id: string | number, doc: Doc): Change => ({ op: 'put', collection, id: String(id), doc });
export const del = (collection: string, id: string | number): Change => ({ op: 'delete', collection, id: String(id) });
export const ms = (from: string, to: string) => Math.max(0, Date.parse(to) - Date.parse(from));
