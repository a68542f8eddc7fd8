import { describe, expect, it } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { collect } from '../../src/audit/audit.js';
import { GENESIS, eventHash, verifyChains } from '../../src/audit/chain.js';
import { checkExtends, checkpointOf, eventLeaf } from '../../src/audit/checkpoint.js';
import { consistencyProof, rootOf, verifyConsistency } from '../../src/audit/merkle.js';
import type { EventStore, NewEvent } from '../../src/application/ports/event-store.port.js';
import { LedgerDigest } from '../../src/audit/digest.js';

/** Checkpoints and consistency proofs over what an adapter's readAll returns: the auditor's path on every store. */
export function auditCheckpointContract(name: string, open: () => Promise<EventStore>) {
  describe(`audit checkpoints: ${name}`, () => {
    const chained = (stream: string, from: number, count: number, prev = GENESIS): NewEvent[] =>
      Array.from({ length: count }, (_, i) => {
        const metadata = { actor: 'auditor-test', at: new Date().toISOString(), prevHash: prev };
        // A type Duffy writes: verify names any other.
        const e = { stream, revision: from + i, type: 'IdAllocated', data: { kind: 'test', n: from + i }, metadata };
        prev = eventHash(prev, e);
        return { type: e.type, data: e.data, metadata: { ...metadata, hash: prev } };
      });

    it('a checkpoint taken before holds after more appends; a changed prefix does not', async () => {
      const store = await open();
      try {
        const a = `audit-a-${randomUUID().slice(0, 8)}`;
        const b = `audit-b-${randomUUID().slice(0, 8)}`;
        const first = chained(a, 0, 3);
        await store.append([{ stream: a, expected: 'no_stream', events: first }]);
        const before = await collect(store);
        const cp = checkpointOf(LedgerDigest.of(before), new Date());
        await store.append([
          { stream: a, expected: 2, events: chained(a, 3, 2, String(first[2].metadata!.hash)) },
          { stream: b, expected: 'no_stream', events: chained(b, 0, 2) },
        ]);
        const after = await collect(store);
        expect(after.length).toBeGreaterThanOrEqual(before.length + 4);
        expect(checkExtends(cp, LedgerDigest.of(after))).toMatchObject({ ok: true });
        const leaves = after.map(eventLeaf);
        expect(verifyConsistency(cp.size, leaves.length, Buffer.from(cp.rootHash, 'hex'), rootOf(leaves), consistencyProof(leaves, cp.size))).toBe(true);
        const mine = after.filter((e) => e.stream === a || e.stream === b);
        expect(verifyChains(mine).breaks).toEqual([]);
        // What the store returned, changed by one field of one event of the covered prefix.
        const i = before.findIndex((e) => e.stream === a);
        const changed = after.map((e, j) => (j === i ? { ...e, metadata: { ...e.metadata, actor: 'someone-else' } } : e));
        expect(checkExtends(cp, LedgerDigest.of(changed))).toMatchObject({ ok: false, leafIndex: i });
        expect(checkExtends(cp, LedgerDigest.of(after.slice(0, cp.size - 1)))).toMatchObject({ ok: false });
      } finally {
        await store.close();
      }
    });
  });
}
