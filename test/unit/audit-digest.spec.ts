import { describe, expect, it } from '@jest/globals';
import type { RecordedEvent } from '../../src/application/ports/event-store.port.js';
import { GENESIS, eventHash, verifyChains } from '../../src/audit/chain.js';
import { checkExtends, checkPublished, checkpointOf, eventLeaf, keyId, newSigningKey, privateKeyOf, signCheckpoint } from '../../src/audit/checkpoint.js';
import { LedgerDigest } from '../../src/audit/digest.js';
import { rootOf } from '../../src/audit/merkle.js';
import { formatTable } from '../../src/domain/text-table.js';

/** A chained ledger of `n` events over a few streams, as the writer makes it. */
function chained(n: number): RecordedEvent[] {
  const last = new Map<string, { revision: number; hash: string }>();
  return Array.from({ length: n }, (_, i) => {
    const stream = `machine-m${i % 3}`;
    const prev = last.get(stream);
    const base = { id: `e${i}`, stream, revision: prev ? prev.revision + 1 : 0, type: 'MachineQuarantined', position: BigInt(i + 1), data: { machineId: i % 3, reason: 'x', at: `2026-12-02T05:00:${String(i % 60).padStart(2, '0')}.000Z` } };
    const metadata = { actor: 'a', at: '2026-12-02T05:00:00.000Z', prevHash: prev?.hash ?? GENESIS };
    const hash = eventHash(metadata.prevHash, { ...base, metadata });
    last.set(stream, { revision: base.revision, hash });
    return { ...base, metadata: { ...metadata, hash } };
  });
}

describe('what audit verify keeps of each event (LedgerDigest)', () => {
  it('hands back each event\'s place, hash and leaf as the event has them, past its first growth', () => {
    const events = chained(3000);
    const digest = LedgerDigest.of(events);
    expect(digest.length).toBe(3000);
    expect(digest.lastPosition).toBe(3000n);
    for (const i of [0, 1023, 1024, 2999]) {
      expect([digest.position(i), digest.stream(i), digest.revision(i), digest.type(i), digest.hash(i)]).toEqual([events[i].position, events[i].stream, events[i].revision, events[i].type, events[i].metadata.hash]);
      expect(digest.leaf(i).equals(eventLeaf(events[i]))).toBe(true);
    }
    expect(rootOf(digest.leaves).equals(rootOf(events.map(eventLeaf)))).toBe(true);
    expect(verifyChains(events).breaks).toEqual([]);
  });

  it('keeps a rewritten row\'s hash and a time in another spelling as they are written (the global chain and the messages use them)', () => {
    const [a, b] = chained(2);
    const digest = LedgerDigest.of([{ ...a, metadata: { ...a.metadata, hash: 'not-hex' } }, { ...b, metadata: { ...b.metadata, hash: undefined, at: '2020-01-01' } }]);
    expect([digest.hash(0), digest.hash(1)]).toEqual(['not-hex', '']);
    expect(digest.firstClaimBefore(0, 2, Date.parse('2021-01-01T00:00:00Z'))).toEqual({ index: 1, claimed: '2020-01-01' });
    expect(digest.firstClaimBefore(0, 2, Date.parse('2019-01-01T00:00:00Z'))).toBeUndefined();
  });

  it('gives the checks the same answers as the events did: a checkpoint, its extension, a change in the covered prefix', () => {
    const events = chained(50);
    const cp = checkpointOf(LedgerDigest.of(events.slice(0, 30)), new Date('2026-12-02T04:00:00Z'));
    expect(cp).toMatchObject({ size: 30, lastPosition: '30', rootHash: rootOf(events.slice(0, 30).map(eventLeaf)).toString('hex') });
    expect(checkExtends(cp, LedgerDigest.of(events))).toMatchObject({ ok: true });
    const changed = events.map((e, i) => (i === 12 ? { ...e, data: { ...e.data, reason: 'y' } } : e));
    expect(checkExtends(cp, LedgerDigest.of(changed))).toMatchObject({ ok: false, leafIndex: 12, position: '13' });
    expect(checkPublished(LedgerDigest.of(events))).toMatchObject({ checked: 0, problems: [] });
  });
});

describe('checkpoints signed by another key than the one the auditor pinned', () => {
  // Ten events, a checkpoint of them signed by the server's first key; ten more, one signed by its new key.
  const [first, second] = [newSigningKey(), newSigningKey()];
  const events = chained(20);
  const publish = (size: number, key: string, index: number): RecordedEvent => ({
    id: `cp${size}`, stream: 'audit-checkpoints', revision: size / 10 - 1, type: 'CheckpointPublished', position: BigInt(index + 1), metadata: { at: '2026-12-02T05:00:00.000Z' },
    data: signCheckpoint(checkpointOf(LedgerDigest.of(ledger.slice(0, size)), new Date('2026-12-02T05:00:00Z')), privateKeyOf(key)) as never,
  });
  const ledger: RecordedEvent[] = [];
  ledger.push(...events.slice(0, 10));
  ledger.push(publish(10, first.privatePem, 10));
  ledger.push(...events.slice(10).map((e, i) => ({ ...e, position: BigInt(12 + i) })));
  ledger.push(publish(20, second.privatePem, 21));
  const digest = LedgerDigest.of(ledger);

  it('takes one inside what the pinned key signed: the server\'s key changed since (it was TAMPERED, one problem per old checkpoint)', () => {
    expect(checkPublished(digest, { publicKey: second.publicKey, size: 22 })).toMatchObject({ checked: 2, problems: [] });
  });

  it('refuses one past what the pinned key signed, and says what it may be', () => {
    const { problems } = checkPublished(digest, { publicKey: first.publicKey, size: 11 });
    expect(problems).toEqual([{ position: 22n, problem: `published checkpoint signed by another key (${keyId(second.publicKey)}) after the 11 events the key you pinned (${keyId(first.publicKey)}) signed: made up to sign a rewrite, or the server's key changed since (then verify with a checkpoint it signs now)` }]);
  });
});

describe('text tables', () => {
  it('prints a table of 300,000 rows (the widths were a spread of every row: the stack overflowed)', () => {
    const rows = Array.from({ length: 300_000 }, (_, i) => [String(i), 'x']);
    const lines = formatTable(['n', 'v'], rows).split('\n');
    expect(lines).toHaveLength(300_002);
    expect(lines.at(-1)).toBe('299999  x');
  });
});

describe('the times an event claims, checked with its chain', () => {
  /** chained(3) with its last event's times replaced and its hash recomputed, as a tamperer who knows the format does. */
  const timed = (metadataAt: unknown, dataAt: unknown): RecordedEvent[] => {
    const events = chained(3);
    const e = events[2];
    const metadata: Record<string, unknown> = { ...e.metadata, at: metadataAt };
    delete metadata.hash;
    const data = { ...e.data, at: dataAt };
    const forged = { ...e, data, metadata: { ...metadata, hash: eventHash(String(metadata.prevHash), { ...e, data, metadata }) } };
    return [...events.slice(0, 2), forged];
  };

  it('names a time no reader can read, in the metadata or the data (it escaped the back-dating check: verify said OK)', () => {
    expect(verifyChains(timed('yesterday', '2026-12-02T05:00:00.000Z')).breaks).toEqual([
      { position: 3n, stream: 'machine-m2', revision: 0, problem: 'metadata.at "yesterday" is no time, which Duffy never writes: forged or rewritten' },
    ]);
    expect(verifyChains(timed('2026-12-02T05:00:00.000Z', 'never')).breaks.map((b) => b.problem)).toEqual(['data.at "never" is no time, which Duffy never writes: forged or rewritten']);
    expect(verifyChains(timed('2026-12-02T05:00:00.000Z', 42)).breaks.map((b) => b.problem)).toEqual(['data.at 42 is no time, which Duffy never writes: forged or rewritten']);
    expect(verifyChains(timed(undefined, '2026-12-02T05:00:00.000Z')).breaks.map((b) => b.problem)).toEqual(['no time (metadata.at), which Duffy writes on every event: forged or rewritten']);
  });

  it('counts an append that claims no readable time as dated before a checkpoint, not after it (verify --checkpoint said it extends)', () => {
    const cp = checkpointOf(LedgerDigest.of(chained(2)), new Date('2026-12-02T04:00:00Z'));
    expect(checkExtends(cp, LedgerDigest.of(timed('yesterday', '2026-12-02T05:00:00.000Z')))).toMatchObject({ ok: false, leafIndex: 2, message: 'event at position 3 (MachineQuarantined) was appended after the checkpoint of 2026-12-02T04:00:00.000Z but claims yesterday' });
    expect(checkExtends(cp, LedgerDigest.of(timed('2026-12-02T05:00:00.000Z', 'never')))).toMatchObject({ ok: false, message: expect.stringMatching(/but claims never$/) });
    expect(checkExtends(cp, LedgerDigest.of(timed('2026-12-02T05:00:00.000Z', undefined)))).toMatchObject({ ok: true });
  });

  it('takes the times Duffy writes, and an event whose data has none', () => {
    expect(verifyChains(timed('2026-12-02T05:00:00.000Z', '2026-12-02T05:00:01.000Z')).breaks).toEqual([]);
    expect(verifyChains(timed('2026-12-02T05:00:00.000Z', undefined)).breaks).toEqual([]);
  });
});
