import { describe, expect, it } from '@jest/globals';
import { GENESIS, appendLinks, canonical, canonicalMetadata, coveredMetadata, eventHash, linkWith } from '../../src/audit/chain.js';
import { eventLeaf, leafBytes } from '../../src/audit/checkpoint.js';

// An event with nested data, key order that sorting changes, undefined members, a bigint and non-ASCII text.
const event = {
  stream: 'session-7',
  revision: 3,
  type: 'MachineReserved',
  data: { machineId: 12, z: [1, 'a', null, { b: 2, a: 1 }], u: undefined, s: 'é"\n' },
  metadata: { correlationId: 'c-1', actor: 'tenant:p0', at: '2026-11-29T19:00:00.000Z', hash: 'x', prevHash: 'y', requestId: 'r', n: 1.5 },
};

describe('event hashing (the stream chain stored in every event)', () => {
  it('keeps the format of the ledgers already written: pinned values from the first implementation', () => {
    expect(eventHash(GENESIS, event)).toBe('ebf351c7e45277b5c9731eff8ee2b9142aaa281cd6ed4fa98adfb692708566f7');
    expect(canonical({ b: [1, { d: undefined, c: 10n }], a: 'x' })).toBe('{"a":"x","b":[1,{"c":"10"}]}');
  });

  it('tells a number JSON cannot hold from the null JSON.stringify writes for it (a stored 1e999 reads back as Infinity)', () => {
    for (const odd of [JSON.parse('1e999'), -Infinity, NaN]) {
      expect(canonical({ quota: odd })).not.toBe(canonical({ quota: null }));
      expect(eventHash(GENESIS, { ...event, data: { quota: odd } })).not.toBe(eventHash(GENESIS, { ...event, data: { quota: null } }));
    }
  });

  it('hashes the events of one append with their metadata canonicalised once, to the same value', () => {
    const link = linkWith(canonical(coveredMetadata(event.metadata)));
    expect(link(GENESIS, event.stream, event.revision, event.type, event.data)).toBe(eventHash(GENESIS, event));
    const next = { ...event, revision: 4, data: { machineId: 13 } };
    expect(link('ab'.repeat(32), next.stream, next.revision, next.type, next.data)).toBe(eventHash('ab'.repeat(32), next));
  });
});

describe('checkpoint leaves (the Merkle tree over every event)', () => {
  const recorded = { ...event, id: 'e-41', position: 41n };

  it('keeps the format of the checkpoints already signed: pinned value from the first implementation', () => {
    expect(eventLeaf(recorded).toString('hex')).toBe('e84de15734f725edfae08d3841fc438f4c096c7d9457ab642a78885938fbbb21');
  });

  it('are the canonical bytes of the whole event, also when the data was canonicalised before for its chain link', () => {
    const whole = canonical({ position: '41', stream: event.stream, revision: event.revision, type: event.type, data: event.data, metadata: event.metadata });
    expect(leafBytes(recorded).toString('utf8')).toBe(whole);
    linkWith(canonical(coveredMetadata(event.metadata)))(GENESIS, event.stream, event.revision, event.type, event.data);
    expect(leafBytes(recorded).toString('utf8')).toBe(whole);
  });

  it('are the same bytes when the texts the append remembered were taken by an earlier leaf', () => {
    const { link, withChain } = appendLinks({ correlationId: 'c-1', actor: 'tenant:p0', at: '2026-11-29T19:00:00.000Z' });
    const hash = link(GENESIS, event.stream, event.revision, event.type, event.data);
    const appended = { ...recorded, metadata: withChain(GENESIS, hash) };
    const whole = canonical({ position: '41', stream: event.stream, revision: event.revision, type: event.type, data: event.data, metadata: appended.metadata });
    expect(leafBytes(appended).toString('utf8')).toBe(whole);
    expect(leafBytes(appended).toString('utf8')).toBe(whole);
    expect(canonicalMetadata(appended.metadata)).toBe(canonical(appended.metadata));
  });
});

describe('the metadata of an append', () => {
  it('links as linkWith over the shared fields, gives each event the shared fields and its chain fields, and remembers exactly canonical() of it', () => {
    const shared = { requestId: 'r', actor: 'tenant:p0', at: '2026-11-29T19:00:00.000Z', correlationId: 'c-1', nothing: undefined, nested: { b: 1, a: [2] } };
    const { link, withChain } = appendLinks(shared);
    expect(link(GENESIS, 'session-1', 0, 'T', { a: 1 })).toBe(linkWith(canonical(coveredMetadata(shared)))(GENESIS, 'session-1', 0, 'T', { a: 1 }));
    const first = withChain(GENESIS, 'aa');
    const second = withChain('aa', 'bb');
    expect(first).toEqual({ ...shared, prevHash: GENESIS, hash: 'aa' });
    expect(canonicalMetadata(first)).toBe(canonical(first));
    expect(canonicalMetadata(second)).toBe(canonical(second));
    expect(canonicalMetadata(second)).toContain('"hash":"bb"');
  });

  it('remembers exactly canonical() whichever side of the chain fields the shared fields sort to, or with none', () => {
    for (const shared of [{}, { a: 1 }, { i: 1 }, { z: 1 }, { a: 1, i: [2], z: { y: 1, b: 2 } }, { hashes: 1, prevHashes: 2 }]) {
      const metadata = appendLinks(shared).withChain('aa', 'bb');
      expect(canonicalMetadata(metadata)).toBe(canonical(metadata));
    }
  });

  it('orders keys as Array.prototype.sort does (UTF-16 code units), numeric-looking keys and non-ASCII included', () => {
    const keys = ['b', '10', '9', 'B', 'é', 'a_', 'a', '', 'Z', '\u{1F600}', 'ﬀ', 'ab', ...Array.from({ length: 40 }, (_, i) => `k${(i * 7919) % 97}`)];
    for (const n of [0, 1, 2, 5, 12, 33, keys.length]) {
      const obj = Object.fromEntries(keys.slice(0, n).map((k, i) => [k, i]));
      const expected = `{${Object.keys(obj).sort().map((k) => `${JSON.stringify(k)}:${obj[k]}`).join(',')}}`;
      expect(canonical(obj)).toBe(expected);
    }
  });
});
