import { hash } from 'node:crypto';
import type { RecordedEvent } from '../application/ports/event-store.port.js';
import { EVENT_TYPES } from '../domain/events.js';

/**
 * Tamper evidence, two chains:
 * - per stream: every event's metadata carries `hash` = eventHash(prevHash, event) and `prevHash`, the hash of the
 *   previous event OF ITS STREAM (GENESIS for revision 0). Per stream because several Duffy instances on one
 *   EventStoreDB order appends only per stream (by expected revision).
 * - global, on the embedded ledger (one writer): column `chain` = globalLink(previous row's chain, position, hash),
 *   so a reordering across streams, or a removed event anywhere but at the very end, breaks it.
 * Neither is keyed (the format is public): a rewrite that recomputes both is exposed by a checkpoint (merkle.ts).
 */
export const GENESIS = '0'.repeat(64);

/** The metadata fields the chain writes itself: excluded from the hash they are part of. */
export const CHAIN_FIELDS = ['hash', 'prevHash'] as const;

/** JSON with keys sorted at every level, so a hash does not depend on property order. */
export function canonical(value: unknown): string {
  if (typeof value === 'bigint') return JSON.stringify(value.toString());
  // JSON.stringify writes Infinity and NaN as null, so a stored `1e999` (parsed as Infinity) would hash as the null
  // it replaced; bare words that no JSON value has keep them apart. Duffy never writes such a number.
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  // Loops, not map/filter/join: this runs for every event appended, on the thread that serves requests.
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i > 0 ? ',' : '') + canonical(value[i]);
    return out + ']';
  }
  const obj = value as Record<string, unknown>;
  const keys = sortedKeys(obj);
  let out = '{';
  for (const k of keys) {
    if (obj[k] === undefined) continue;
    out += (out.length > 1 ? ',' : '') + JSON.stringify(k) + ':' + canonical(obj[k]);
  }
  return out + '}';
}

/**
 * Object.keys in sort()'s order (UTF-16 code units), sorted in place and only where out of order: sort() copied the
 * keys on every call, some 2.6 KB per HTTP request here, for objects of a handful of keys often in order already.
 */
function sortedKeys(obj: object): string[] {
  const keys = Object.keys(obj);
  if (keys.length > 32) return keys.sort();
  for (let i = 1; i < keys.length; i++) {
    const key = keys[i];
    // No write while in order: Object.keys may share the object's cached key list until the array is written to.
    if (keys[i - 1] <= key) continue;
    let j = i - 1;
    for (; j >= 0 && keys[j] > key; j--) keys[j + 1] = keys[j];
    keys[j + 1] = key;
  }
  return keys;
}

const sha256 = (s: string) => hash('sha256', s);

/**
 * canonical() of an event's data, remembered per object: the chain link and the checkpoint leaf both need it, on
 * the thread that serves requests, and an event's data is not changed once it is appended. The leaf takes it (see
 * takeCanonical).
 */
const canonicalByData = new WeakMap<object, string>();
export function canonicalData(data: unknown): string {
  if (data === null || typeof data !== 'object') return canonical(data ?? null);
  let text = canonicalByData.get(data);
  if (text === undefined) canonicalByData.set(data, (text = canonical(data)));
  return text;
}

export interface Chainable {
  stream: string;
  revision: number;
  type: string;
  data: unknown;
  metadata: Record<string, unknown>;
}

/** Metadata as covered by the hash: everything but the chain's own fields. */
export function coveredMetadata(metadata: Record<string, unknown>): Record<string, unknown> {
  const rest = { ...metadata };
  for (const f of CHAIN_FIELDS) delete rest[f];
  return rest;
}

/**
 * What one append's events need from their shared metadata: `link`, their chain hash (as linkWith over the shared
 * fields), and `withChain`, each event's metadata (the shared fields plus its chain fields). The shared fields are
 * canonicalised once per append, and each event's canonical metadata is remembered for its checkpoint leaf.
 */
const canonicalByMetadata = new WeakMap<object, string>();
export function appendLinks(shared: Record<string, unknown>): {
  link: ReturnType<typeof linkWith>;
  withChain: (prevHash: string, hash: string) => Record<string, unknown>;
} {
  const covered = coveredMetadata(shared);
  const keys = [...Object.keys(covered).filter((k) => covered[k] !== undefined), ...CHAIN_FIELDS].sort();
  const isChainField = (k: string) => (CHAIN_FIELDS as readonly string[]).includes(k);
  // A member of the shared fields, canonical; or the name of a chain field, filled in per event.
  const pieces = keys.map((k) => (isChainField(k) ? k : `${JSON.stringify(k)}:${canonical(covered[k])}`));
  // The text around the two chain fields ('hash' sorts before 'prevHash'), made once per append: each event's text
  // is then five pieces, not a rope of two per member that lives until its checkpoint leaf is hashed.
  const members = (from: number, to: number) => pieces.slice(from, to).map((piece) => `${piece},`).join('');
  const h = pieces.indexOf('hash');
  const p = pieces.indexOf('prevHash');
  const beforeHash = `{${members(0, h)}"hash":`;
  const beforePrev = `,${members(h + 1, p)}"prevHash":`;
  const after = p + 1 < pieces.length ? `,${pieces.slice(p + 1).join(',')}}` : '}';
  const withChain = (prevHash: string, hash: string) => {
    const metadata = { ...covered, prevHash, hash };
    canonicalByMetadata.set(metadata, beforeHash + JSON.stringify(hash) + beforePrev + JSON.stringify(prevHash) + after);
    return metadata;
  };
  // canonical(covered): the same members in the same order, without the chain fields.
  return { link: linkWith(`{${pieces.filter((p) => !isChainField(p)).join(',')}}`), withChain };
}

/** canonical() of an event's metadata, remembered when appendLinks made it. */
export function canonicalMetadata(metadata: Record<string, unknown>): string {
  return canonicalByMetadata.get(metadata) ?? canonical(metadata);
}

/**
 * An event's canonical data and metadata for its checkpoint leaf, the last use of what the chain link remembered:
 * kept until the event itself dies, those texts (ropes of a few dozen strings each) outlived the young generation and
 * were a fifth of what the collector promoted under load.
 */
export function takeCanonical(data: unknown, metadata: Record<string, unknown>): { data: string; metadata: string } {
  const texts = { data: canonicalData(data), metadata: canonicalMetadata(metadata) };
  if (data !== null && typeof data === 'object') canonicalByData.delete(data);
  canonicalByMetadata.delete(metadata);
  return texts;
}

/** The link of one event in its stream's chain: covers prev, stream, revision, type, data and metadata (actor, ids, time...). */
export function eventHash(prev: string, e: Chainable): string {
  return linkWith(canonical(coveredMetadata(e.metadata ?? {})))(prev, e.stream, e.revision, e.type, e.data);
}

/**
 * eventHash for the events of one append, which share their metadata (but for the chain's own fields): the
 * metadata is canonicalised once, not once per event. Same bytes, so the same hash.
 */
export function linkWith(canonicalMetadata: string): (prev: string, stream: string, revision: number, type: string, data: unknown) => string {
  // canonical([prev, stream, revision, type, data, metadata]), spelled out: a JSON array is unambiguous, so no
  // field can borrow a separator from the next.
  return (prev, stream, revision, type, data) =>
    sha256(`[${canonical(prev)},${canonical(stream)},${canonical(revision)},${canonical(type)},${canonicalData(data)},${canonicalMetadata}]`);
}

/**
 * The stream hash of the Duffy of 2026-11-26 (before the global chain): over prev, stream, revision, type and data,
 * not the metadata; the `ids-*` streams carried none. Its ledgers are upgraded in place (legacy-ledger.ts), so
 * `verify` still reads their events in it: see legacyPrefix.
 */
export function legacyEventHash(prev: string, e: Chainable): string {
  return sha256(`${prev}\n${e.stream}\n${e.revision}\n${e.type}\n${canonical(e.data)}`);
}

/**
 * The position of the last of the ledger's first events that are in that older format (0n: none, a ledger written
 * since): the run from the first event up to the first one that is not. A run without one such hash (an `ids-*`
 * event without a hash alone) is no format, but an edit of today's.
 */
export function legacyPrefix(events: Iterable<RecordedEvent>): bigint {
  const run = new LegacyRun();
  for (const e of events) if (!run.add(e)) break;
  return run.through;
}

/** legacyPrefix one event at a time: `add` is false once the run has ended (later events change nothing). */
export class LegacyRun {
  private readonly last = new Map<string, string>();
  private end = 0n;
  private hashed = false;
  private ended = false;

  add(e: RecordedEvent): boolean {
    if (this.ended || !this.continues(e)) {
      this.ended = true;
      return false;
    }
    this.end = e.position;
    return true;
  }

  get through(): bigint {
    return this.hashed ? this.end : 0n;
  }

  private continues(e: RecordedEvent): boolean {
    if (!isRecord(e.metadata)) return false;
    const { hash, prevHash } = e.metadata;
    if (hash === undefined) return e.stream.startsWith('ids-');
    const prev = this.last.get(e.stream) ?? GENESIS;
    if (typeof hash !== 'string' || prevHash !== prev || legacyEventHash(prev, e) !== hash) return false;
    this.last.set(e.stream, hash);
    this.hashed = true;
    return true;
  }
}

/**
 * Why an event's times are not what Duffy writes: no `metadata.at`, or a `metadata.at` or `data.at` that no reader
 * reads as a time (Date.parse: NaN), which would escape the back-dating check and every rule that reads it.
 */
function timeProblem(metadataAt: unknown, data: unknown): string | undefined {
  if (typeof metadataAt !== 'string') return 'no time (metadata.at), which Duffy writes on every event: forged or rewritten';
  const dataAt = isRecord(data) ? data.at : undefined;
  for (const [field, value] of [['metadata.at', metadataAt], ['data.at', dataAt]] as const) {
    if (field === 'data.at' && value === undefined) continue;
    if (typeof value !== 'string' || Number.isNaN(Date.parse(value))) return `${field} ${JSON.stringify(value)?.slice(0, 80)} is no time, which Duffy never writes: forged or rewritten`;
  }
  return undefined;
}

/** The global chain of the embedded ledger: one link per position, over the event's own hash. */
export function globalLink(prev: string, position: bigint, hash: string): string {
  return sha256(`${prev}\n${position}\n${hash}`);
}

/** A JSON object (an event's data and metadata always are one; a rewritten row's may not be). */
export const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface ChainBreak {
  position: bigint;
  stream: string;
  revision: number;
  problem: string;
}

/**
 * Recomputes every stream's chain: every event must carry a hash that covers it, linked to its stream's previous
 * event; reports edited, removed (revision gaps), unchained and reordered events with their positions. Events up
 * to `legacyThrough` (legacyPrefix) are judged in the format of 2026-11-26.
 */
export function verifyChains(events: Iterable<RecordedEvent>, legacyThrough = 0n): { checked: number; breaks: ChainBreak[] } {
  const check = new ChainCheck(legacyThrough);
  for (const e of events) check.add(e);
  return { checked: check.checked, breaks: check.breaks };
}

/** verifyChains one event at a time, keeping only each stream's last link. */
export class ChainCheck {
  private readonly last = new Map<string, { revision: number; hash: string; position: bigint }>();
  readonly breaks: ChainBreak[] = [];
  checked = 0;

  constructor(private readonly legacyThrough = 0n) {}

  add(e: RecordedEvent): void {
    const breaks = this.breaks;
    this.checked += 1;
    const hash = isRecord(e.metadata) ? e.metadata.hash : undefined;
    const prev = this.last.get(e.stream);
    const at = { position: e.position, stream: e.stream, revision: e.revision };
    if (prev && e.position <= prev.position) breaks.push({ ...at, problem: `out of order: position ${e.position} after ${prev.position} in its stream` });
    const expectedRevision = prev ? prev.revision + 1 : 0;
    if (e.revision !== expectedRevision) {
      breaks.push({ ...at, problem: `revision ${e.revision} where ${expectedRevision} was due: an event is missing or moved` });
    }
    const legacy = e.position <= this.legacyThrough;
    // A type the World would skip (its stream's revisions then no longer add up), or an event no time dates.
    if (!EVENT_TYPES.has(e.type)) breaks.push({ ...at, problem: `type ${JSON.stringify(e.type).slice(0, 80)} is not one Duffy writes: edited, or written by a newer Duffy` });
    const untimed = legacy || !isRecord(e.metadata) ? undefined : timeProblem(e.metadata.at, e.data);
    if (untimed) breaks.push({ ...at, problem: untimed });
    if (typeof hash !== 'string') {
      if (!(legacy && hash === undefined && e.stream.startsWith('ids-') && isRecord(e.metadata))) {
        breaks.push({ ...at, problem: isRecord(e.metadata) ? 'event without hash: not covered by the chain' : 'metadata is not an object: the row was rewritten' });
      }
      this.last.set(e.stream, { revision: e.revision, hash: '', position: e.position });
      return;
    }
    const before = e.metadata.prevHash;
    const linked = prev ? prev.hash : GENESIS;
    if (before !== linked) breaks.push({ ...at, problem: `prevHash does not match the previous event of ${e.stream}` });
    if ((legacy ? legacyEventHash(String(before), e) : eventHash(String(before), e)) !== hash) {
      breaks.push({ ...at, problem: 'hash does not match the event: its type, data or metadata was changed' });
    }
    this.last.set(e.stream, { revision: e.revision, hash, position: e.position });
  }
}

/**
 * The embedded ledger's global chain: `links` are (position, chain) in position order, `hashOf` the event hash
 * stored at a position. Returns the first position whose link does not follow, or null.
 */
export function verifyGlobalChain(
  links: Iterable<{ position: bigint; chain: string | null }>,
  hashOf: (position: bigint) => string | undefined,
): { checked: number; broken: { position: bigint; problem: string } | null } {
  let prev = GENESIS;
  let checked = 0;
  for (const { position, chain } of links) {
    const hash = hashOf(position);
    if (hash === undefined) return { checked, broken: { position, problem: 'no event hash at this position' } };
    const expected = globalLink(prev, position, hash);
    if (chain !== expected) {
      return { checked, broken: { position, problem: 'global chain broken: an event before it was removed, moved or changed, or this one was' } };
    }
    prev = chain;
    checked += 1;
  }
  return { checked, broken: null };
}
