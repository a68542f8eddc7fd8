import type { RecordedEvent } from '../application/ports/event-store.port.js';
import { isRecord } from './chain.js';
import { eventLeaf } from './checkpoint.js';
import type { Leaves } from './merkle.js';

const HASH_BYTES = 32;
const HEX_HASH = /^[0-9a-f]{64}$/;

/** What the back-dating check reads of an event: both times it carries (see checkpoint.ts `backdated`). */
const claimedTimes = (e: RecordedEvent): unknown[] => [e.metadata?.at, (e.data as { at?: unknown } | null)?.at];

/**
 * What `audit verify` and `audit checkpoint` keep of each event once its chain link is checked, in columns: its
 * place, Merkle leaf, stored hash, the times it claims, and the published checkpoints whole. About 100 bytes an
 * event where the event itself took kilobytes, so a ledger of millions of events is verified in a few hundred MB.
 */
export class LedgerDigest {
  length = 0;
  private capacity = 1024;
  private positions = new BigInt64Array(this.capacity);
  private revisions = new Float64Array(this.capacity);
  private streamIds = new Int32Array(this.capacity);
  private typeIds = new Int32Array(this.capacity);
  private leafBytes = Buffer.alloc(this.capacity * HASH_BYTES);
  private hashBytes = Buffer.alloc(this.capacity * HASH_BYTES);
  /** Two per event: metadata.at and data.at, as Date.parse reads them (NaN: none). */
  private times = new Float64Array(this.capacity * 2);
  private readonly names: string[] = [];
  private readonly nameIds = new Map<string, number>();
  /** A stored hash that is not 64 hex digits (a rewritten row's), kept as it is: the global chain links over it. */
  private readonly oddHashes = new Map<number, string>();
  /** A claimed time whose text is not its own ISO form, kept as it is for the message that quotes it. */
  private readonly oddTimes = new Map<number, unknown>();
  /** The CheckpointPublished events, whole (a few per day). */
  readonly checkpoints: Array<{ index: number; position: bigint; data: Record<string, unknown> }> = [];

  static of(events: Iterable<RecordedEvent>): LedgerDigest {
    const digest = new LedgerDigest();
    for (const e of events) digest.add(e);
    return digest;
  }

  /** The digest of events read one page at a time (allEvents of a store), each `also` given them as they pass. */
  static async read(events: AsyncIterable<RecordedEvent>, also: (e: RecordedEvent) => void = () => undefined): Promise<LedgerDigest> {
    const digest = new LedgerDigest();
    for await (const e of events) {
      also(e);
      digest.add(e);
    }
    return digest;
  }

  add(e: RecordedEvent): void {
    if (this.length === this.capacity) this.grow();
    const i = this.length;
    this.positions[i] = e.position;
    this.revisions[i] = e.revision;
    this.streamIds[i] = this.nameId(e.stream);
    this.typeIds[i] = this.nameId(e.type);
    eventLeaf(e).copy(this.leafBytes, i * HASH_BYTES);
    const hash = isRecord(e.metadata) && typeof e.metadata.hash === 'string' ? e.metadata.hash : '';
    if (HEX_HASH.test(hash)) this.hashBytes.write(hash, i * HASH_BYTES, 'hex');
    else this.oddHashes.set(i, hash);
    claimedTimes(e).forEach((claimed, k) => {
      let ms = Date.parse(String(claimed ?? ''));
      // A time no reader can read dates the event after nothing: it counts as earlier than any checkpoint.
      if (Number.isNaN(ms) && claimed !== undefined && claimed !== null) ms = -Infinity;
      this.times[2 * i + k] = ms;
      if (ms === -Infinity || (!Number.isNaN(ms) && new Date(ms).toISOString() !== claimed)) this.oddTimes.set(2 * i + k, claimed);
    });
    if (e.type === 'CheckpointPublished') this.checkpoints.push({ index: i, position: e.position, data: e.data as Record<string, unknown> });
    this.length += 1;
  }

  position(i: number): bigint {
    return this.positions[i];
  }
  stream(i: number): string {
    return this.names[this.streamIds[i]];
  }
  type(i: number): string {
    return this.names[this.typeIds[i]];
  }
  revision(i: number): number {
    return this.revisions[i];
  }
  /** The hash the event's metadata stores ('' when none). */
  hash(i: number): string {
    return this.oddHashes.get(i) ?? this.hashBytes.toString('hex', i * HASH_BYTES, (i + 1) * HASH_BYTES);
  }
  leaf(i: number): Buffer {
    return this.leafBytes.subarray(i * HASH_BYTES, (i + 1) * HASH_BYTES);
  }
  /** The Merkle leaves in ledger order, for merkle.ts. */
  get leaves(): Leaves {
    return { length: this.length, at: (i: number) => this.leaf(i) };
  }
  /** The last event's position (0n: none). */
  get lastPosition(): bigint {
    return this.length === 0 ? 0n : this.positions[this.length - 1];
  }

  /** The first of events[from, to) that claims a time before `before`, and the time as the event writes it. */
  firstClaimBefore(from: number, to: number, before: number): { index: number; claimed: unknown } | undefined {
    for (let i = from; i < to; i++) {
      for (const k of [0, 1]) {
        const ms = this.times[2 * i + k];
        if (ms < before) return { index: i, claimed: this.oddTimes.get(2 * i + k) ?? new Date(ms).toISOString() };
      }
    }
    return undefined;
  }

  private nameId(name: string): number {
    let id = this.nameIds.get(name);
    if (id === undefined) {
      id = this.names.push(name) - 1;
      this.nameIds.set(name, id);
    }
    return id;
  }

  private grow(): void {
    const capacity = this.capacity * 2;
    const widen = <A extends BigInt64Array | Int32Array | Float64Array>(a: A, n: number): A => {
      const b = new (a.constructor as new (n: number) => A)(n);
      b.set(a as never);
      return b;
    };
    this.positions = widen(this.positions, capacity);
    this.revisions = widen(this.revisions, capacity);
    this.streamIds = widen(this.streamIds, capacity);
    this.typeIds = widen(this.typeIds, capacity);
    this.times = widen(this.times, capacity * 2);
    const bytes = (b: Buffer) => {
      const wider = Buffer.alloc(capacity * HASH_BYTES);
      b.copy(wider);
      return wider;
    };
    this.leafBytes = bytes(this.leafBytes);
    this.hashBytes = bytes(this.hashBytes);
    this.capacity = capacity;
  }
}
