import { describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { StreamHeads } from '../../src/application/stream-heads.js';

const hashOf = (s: string) => createHash('sha256').update(s).digest('hex');

describe('StreamHeads', () => {
  it('answers like a map of stream -> {revision, hash} over many streams, deletions and reuse of their room', () => {
    const heads = new StreamHeads();
    const plain = new Map<string, { revision: number; hash: string }>();
    for (let i = 0; i < 5000; i++) {
      const stream = `s-${i % 3000}`;
      const revision = (plain.get(stream)?.revision ?? -1) + 1;
      const hash = hashOf(`${stream}/${revision}`);
      heads.set(stream, revision, hash);
      plain.set(stream, { revision, hash });
      if (i % 7 === 0) {
        const gone = `s-${(i * 13) % 3000}`;
        heads.delete(gone);
        plain.delete(gone);
      }
    }
    expect(heads.size).toBe(plain.size);
    expect(new Set(heads.streams())).toEqual(new Set(plain.keys()));
    for (const [stream, { revision, hash }] of plain) {
      expect(heads.revision(stream)).toBe(revision);
      expect(heads.hashAt(stream, revision)).toBe(hash);
      expect(heads.hashAt(stream, revision + 1)).toBeUndefined();
    }
    expect(heads.has('s-never')).toBe(false);
    expect(heads.revision('s-never')).toBeUndefined();
  });

  it("keeps '' for an event without a chain hash (ledgers older than the chain)", () => {
    const heads = new StreamHeads();
    heads.set('old', 4, undefined);
    expect(heads.hashAt('old', 4)).toBe('');
    heads.set('old', 5, hashOf('x'));
    expect(heads.hashAt('old', 5)).toBe(hashOf('x'));
  });
});
