import { createHash } from 'node:crypto';
import type { RecordedEvent } from '../eventstore/event-store.port.js';

/**
 * Tamper evidence: every event's metadata carries `hash`, chaining it to the previous event OF ITS STREAM.
 * Per stream, not global: appends to different streams are not serialised by any single writer (several Duffy
 * instances on one EventStoreDB cluster), while each stream already is, by its expected revision.
 * A stream's first event chains to GENESIS. Streams appended without a known predecessor (`ids-*`) carry none.
 */
export const GENESIS = '0'.repeat(64);

/** JSON with keys sorted at every level, so a hash does not depend on property order. */
export function canonical(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  const obj = value as Record<string, unknown>;
  return `{${Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonical(obj[k])}`)
    .join(',')}}`;
}

export function chainHash(prev: string, stream: string, revision: number, type: string, data: unknown): string {
  return createHash('sha256').update(`${prev}\n${stream}\n${revision}\n${type}\n${canonical(data)}`).digest('hex');
}

export interface ChainBreak {
  position: bigint;
  stream: string;
  revision: number;
  problem: string;
}

/** Recomputes every stream's chain; reports edited, removed (revision gaps) and reordered events with their positions. */
export function verifyChains(events: Iterable<RecordedEvent>): { checked: number; breaks: ChainBreak[] } {
  const last = new Map<string, { revision: number; hash: string; position: bigint }>();
  const breaks: ChainBreak[] = [];
  let checked = 0;
  for (const e of events) {
    const hash = e.metadata?.hash;
    const prev = last.get(e.stream);
    const at = { position: e.position, stream: e.stream, revision: e.revision };
    if (prev && e.position <= prev.position) breaks.push({ ...at, problem: `out of order: position ${e.position} after ${prev.position} in its stream` });
    const expectedRevision = prev ? prev.revision + 1 : 0;
    if (e.revision !== expectedRevision) {
      breaks.push({ ...at, problem: `revision ${e.revision} where ${expectedRevision} was due: an event is missing or moved` });
    }
    if (typeof hash === 'string') {
      checked += 1;
      const before = e.metadata.prevHash;
      const linked = prev?.hash ?? GENESIS;
      if (before !== linked) breaks.push({ ...at, problem: `prevHash does not match the previous event of ${e.stream}` });
      if (chainHash(String(before), e.stream, e.revision, e.type, e.data) !== hash) {
        breaks.push({ ...at, problem: 'hash does not match the event: its type or data was changed' });
      }
      last.set(e.stream, { revision: e.revision, hash, position: e.position });
    } else {
      if (prev?.hash !== undefined && prev.hash !== '') breaks.push({ ...at, problem: 'event without hash in a chained stream' });
      last.set(e.stream, { revision: e.revision, hash: prev?.hash ?? '', position: e.position });
    }
  }
  return { checked, breaks };
}

/**
 * The embedded ledger's single writer also links every event to the one before it in global order, so moving
 * events between streams' timelines (a reorder that keeps each stream's order) breaks this chain.
 */
export function globalLink(prev: string, position: bigint, hash: string): string {
  return createHash('sha256').update(`${prev}\n${position}\n${hash}`).digest('hex');
}
