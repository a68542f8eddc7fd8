import { describe, it, expect, beforeEach, afterEach } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { type Doc, type DocChange, INDEXED_FIELDS, type ReadModelStore } from '../../src/application/ports/read-model.port.js';

/** One behaviour, every adapter: the embedded read models and MongoDB must both pass this. */
export function readModelsContract(name: string, open: () => Promise<ReadModelStore>) {
  describe(`read models contract: ${name}`, () => {
    let store: ReadModelStore;
    // Unique collections and projections per test: a production store is shared and never emptied.
    const unique = (label: string) => `${label}_${randomUUID().slice(0, 8)}`;
    const put = (collection: string, id: string, doc: Doc, position: number | bigint): DocChange => ({
      op: 'put',
      collection,
      id,
      doc,
      position: BigInt(position),
    });
    const del = (collection: string, id: string, position: number | bigint): DocChange => ({
      op: 'delete',
      collection,
      id,
      position: BigInt(position),
    });

    beforeEach(async () => (store = await open()));
    afterEach(async () => store.close());

    it('puts, gets and deletes documents, each collection on its own', async () => {
      const p = unique('p');
      const a = unique('a');
      const b = unique('b');
      await store.apply(p, 1, [put(a, 'm1', { state: 'free', cpus: 4 }, 1), put(b, 'm1', { other: true }, 1)], 1n);
      expect(await store.get(a, 'm1')).toEqual({ state: 'free', cpus: 4 });
      expect(await store.get(b, 'm1')).toEqual({ other: true });
      expect(await store.get(a, 'nope')).toBeUndefined();
      expect(await store.get(unique('none'), 'm1')).toBeUndefined();

      await store.apply(p, 1, [del(a, 'm1', 2)], 2n);
      expect(await store.get(a, 'm1')).toBeUndefined();
      expect(await store.get(b, 'm1')).toEqual({ other: true });
    });

    it('gets many documents by id in one read: those that exist, ordered by id, of that collection only, past a chunk of ids', async () => {
      const p = unique('p');
      const [a, b] = [unique('a'), unique('b')];
      const ids = Array.from({ length: 1200 }, (_, i) => String(i + 1));
      await store.apply(p, 1, [...ids.filter((id) => Number(id) % 2 === 0).map((id) => put(a, id, { id: Number(id) }, 1)), put(b, '1', { id: 1, other: true }, 1)], 1n);
      const got = await store.getMany(a, [...ids].reverse());
      expect(got).toHaveLength(600);
      expect(got.slice(0, 3)).toEqual([{ id: 10 }, { id: 100 }, { id: 1000 }]);
      expect(new Set(got.map((d) => d.id))).toEqual(new Set(ids.filter((id) => Number(id) % 2 === 0).map(Number)));
      expect(await store.getMany(a, ['1', 'nope'])).toEqual([]);
      expect(await store.getMany(b, ['1', '2'])).toEqual([{ id: 1, other: true }]);
      expect(await store.getMany(a, [])).toEqual([]);
    });

    it('replaces the whole document on put and keeps nested values', async () => {
      const p = unique('p');
      const c = unique('c');
      await store.apply(p, 1, [put(c, 'm1', { state: 'free', lease: { until: 5, by: 'ci' }, tags: ['x'] }, 1)], 1n);
      await store.apply(p, 1, [put(c, 'm1', { state: 'busy', tags: [] }, 2)], 2n);
      expect(await store.get(c, 'm1')).toEqual({ state: 'busy', tags: [] });
    });

    it('finds by equality on top-level fields, ordered by id', async () => {
      const p = unique('p');
      const c = unique('c');
      await store.apply(
        p,
        1,
        [
          put(c, 'd', { kind: 'vm', cpus: 2, active: false, lease: null }, 1),
          put(c, 'b', { kind: 'metal', cpus: 4, active: true, lease: 'l1' }, 2),
          put(c, 'a', { kind: 'vm', cpus: 4, active: true, lease: null }, 3),
          put(c, 'c', { kind: 'vm', cpus: 2.5, active: true }, 4),
          // Look-alikes of other types must not match.
          put(c, 'e', { kind: ['vm'], cpus: '4', active: 1, lease: 0 }, 5),
          put(c, 'f', { kind: 'VM', cpus: true, active: 'true', lease: 'null' }, 6),
        ],
        6n,
      );
      const ids = async (filter?: Record<string, string | number | boolean | null>) =>
        (await store.find(c, filter)).map((d) => (d.kind === 'vm' ? `${d.cpus}` : JSON.stringify(d)));
      const all = await store.find(c);
      expect(all).toHaveLength(6);
      expect(all[0]).toEqual({ kind: 'vm', cpus: 4, active: true, lease: null });
      expect(await store.find(c, {})).toEqual(all);

      expect(await ids({ kind: 'vm' })).toEqual(['4', '2.5', '2']); // a, c, d
      expect((await store.find(c, { cpus: 4 })).map((d) => d.kind)).toEqual(['vm', 'metal']); // a, b
      expect(await ids({ cpus: 2.5 })).toEqual(['2.5']);
      expect((await store.find(c, { active: true })).map((d) => d.cpus)).toEqual([4, 4, 2.5]); // a, b, c
      expect(await ids({ active: false })).toEqual(['2']);
      // null matches an explicit null and a missing field.
      expect(await ids({ lease: null })).toEqual(['4', '2.5', '2']);
      expect(await ids({ kind: 'vm', active: true, lease: null })).toEqual(['4', '2.5']);
      expect(await ids({ cpus: '4' })).toEqual([JSON.stringify({ kind: ['vm'], cpus: '4', active: 1, lease: 0 })]);
      expect((await store.find(c, { active: 1 })).map((d) => d.cpus)).toEqual(['4']);
      expect((await store.find(c, { lease: 0 })).map((d) => d.cpus)).toEqual(['4']);
      expect(await store.find(c, { kind: '["vm"]' })).toEqual([]);
      expect(await store.find(c, { kind: 'vm', cpus: 8 })).toEqual([]);
      expect(await store.find(c, { nosuchfield: 'x' })).toEqual([]);
      expect(await store.find(unique('none'), {})).toEqual([]);
    });

    it('finds past any page a store reads at a time: every match once, in id order, indexed field or not; other work runs meanwhile', async () => {
      const collection = Object.keys(INDEXED_FIELDS)[0];
      const field = INDEXED_FIELDS[collection][0];
      const [mine, other, plain] = [unique('v'), unique('w'), unique('plain')];
      const ids = Array.from({ length: 2_500 }, (_, i) => `${mine}-${String(i).padStart(4, '0')}`);
      const changes = ids.flatMap((id, i) => [put(collection, id, { [field]: i % 5 === 0 ? other : mine, n: i }, 1), put(plain, id, { even: i % 2 === 0, n: i }, 1)]);
      await store.apply(unique('p'), 1, changes, 1n);
      const ns = (docs: Doc[]) => docs.map((d) => d.n);
      const range = (keep: (i: number) => boolean) => ids.map((_, i) => i).filter(keep);
      try {
        expect(ns(await store.find(collection, { [field]: mine }))).toEqual(range((i) => i % 5 !== 0));
      } finally {
        // Removed again: a Duffy restoring the real collection from this store would take these for its own.
        await store.apply(unique('p'), 1, ids.map((id) => del(collection, id, 2)), 2n);
      }
      expect(ns(await store.find(plain, { even: true }))).toEqual(range((i) => i % 2 === 0));
      // Others' turns of the event loop while the whole collection is read (the embedded store reads synchronously).
      let turns = 0;
      let reading = true;
      const count = () => reading && (turns++, setImmediate(count));
      setImmediate(count);
      const all = await store.find(plain);
      reading = false;
      expect(ns(all)).toEqual(range(() => true));
      expect(turns).toBeGreaterThan(0);
    });

    it('finds on a field the stores index (INDEXED_FIELDS) as on any other: types apart, null for missing, with other fields', async () => {
      const collection = Object.keys(INDEXED_FIELDS)[0];
      const field = INDEXED_FIELDS[collection][0];
      // Values of this test's own: the collection is the real one, shared with whatever else the store holds.
      const open = unique('open');
      const shut = unique('shut');
      const tenant = Math.floor(Math.random() * 1e9);
      const id = (n: number) => `${unique('d')}-${n}`;
      const ids = [1, 2, 3, 4, 5, 6].map(id).sort();
      await store.apply(
        unique('p'),
        1,
        [
          put(collection, ids[0], { [field]: open, tenant, n: 1 }, 1),
          put(collection, ids[1], { [field]: shut, tenant, n: 2 }, 2),
          put(collection, ids[2], { [field]: open, tenant: tenant + 1, n: 3 }, 3),
          put(collection, ids[3], { [field]: [open], tenant, n: 4 }, 4),
          put(collection, ids[4], { tenant, n: 5 }, 5),
          put(collection, ids[5], { [field]: open, tenant, n: 6 }, 6),
        ],
        6n,
      );
      const ns = async (filter: Record<string, string | number | boolean | null>) => (await store.find(collection, filter)).map((d) => d.n);
      try {
        expect(await ns({ [field]: open })).toEqual([1, 3, 6]);
        expect(await ns({ tenant, [field]: open })).toEqual([1, 6]);
        expect(await ns({ [field]: shut, tenant })).toEqual([2]);
        expect(await ns({ [field]: null, tenant })).toEqual([5]);
        expect(await ns({ [field]: `${open}x` })).toEqual([]);
      } finally {
        // Removed again: a Duffy restoring the real collection from this store would take these for its own.
        await store.apply(unique('p'), 1, ids.map((id) => del(collection, id, 7)), 7n);
      }
    });

    it('has no checkpoint until the first apply, then keeps position and version, only moving forward', async () => {
      const p = unique('p');
      expect(await store.checkpoint(p)).toBeUndefined();
      await store.apply(p, 3, [], 10n);
      expect(await store.checkpoint(p)).toEqual({ position: 10n, version: 3 });
      await store.apply(p, 3, [], 12n);
      expect(await store.checkpoint(p)).toEqual({ position: 12n, version: 3 });
      await store.apply(p, 3, [], 11n);
      expect(await store.checkpoint(p)).toEqual({ position: 12n, version: 3 });
      expect(await store.checkpoint(unique('other'))).toBeUndefined();
    });

    it('makes a batch and its checkpoint visible together, and a failed batch shows neither', async () => {
      const p = unique('p');
      const a = unique('a');
      const b = unique('b');
      await store.apply(p, 1, [put(a, 'x', { n: 1 }, 4), put(b, 'y', { n: 1 }, 5)], 5n);
      expect([await store.get(a, 'x'), await store.get(b, 'y'), await store.checkpoint(p)]).toEqual([
        { n: 1 },
        { n: 1 },
        { position: 5n, version: 1 },
      ]);
      // The last change's position no adapter can store: nothing of the batch may land.
      const failing = [put(a, 'x', { n: 2 }, 6), put(b, 'z', { n: 2 }, 7), put(a, 'w', { n: 2 }, 2n ** 64n)];
      await expect(store.apply(p, 1, failing, 8n)).rejects.toThrow();
      expect([await store.get(a, 'x'), await store.get(b, 'z'), await store.get(a, 'w'), await store.checkpoint(p)]).toEqual([
        { n: 1 },
        undefined,
        undefined,
        { position: 5n, version: 1 },
      ]);
    });

    it('skips changes at or below the position a document already has, so replaying a batch changes nothing', async () => {
      const p = unique('p');
      const c = unique('c');
      const batch = [put(c, 'a', { n: 1 }, 5), put(c, 'b', { n: 1 }, 6), put(c, 'gone', { n: 1 }, 6), del(c, 'gone', 7)];
      await store.apply(p, 1, batch, 7n);
      await store.apply(p, 1, [put(c, 'a', { n: 3 }, 8)], 8n);
      const before = await store.find(c);
      await store.apply(p, 1, batch, 7n);
      expect(await store.find(c)).toEqual(before);
      expect(await store.get(c, 'a')).toEqual({ n: 3 });
      expect(await store.get(c, 'gone')).toBeUndefined();
      expect(await store.checkpoint(p)).toEqual({ position: 8n, version: 1 });

      // Older and equal positions lose; a newer one wins.
      await store.apply(p, 1, [put(c, 'k', { n: 3 }, 7n)], 9n);
      await store.apply(p, 1, [put(c, 'k', { n: 2 }, 5n)], 9n);
      await store.apply(p, 1, [put(c, 'k', { n: 4 }, 7n)], 9n);
      expect(await store.get(c, 'k')).toEqual({ n: 3 });
      await store.apply(p, 1, [put(c, 'k', { n: 5 }, 10n)], 10n);
      expect(await store.get(c, 'k')).toEqual({ n: 5 });
    });

    it('does not delete a document newer than the delete', async () => {
      const p = unique('p');
      const c = unique('c');
      await store.apply(p, 1, [put(c, 'a', { n: 1 }, 7)], 7n);
      await store.apply(p, 1, [del(c, 'a', 5)], 7n);
      await store.apply(p, 1, [del(c, 'a', 7)], 7n);
      expect(await store.get(c, 'a')).toEqual({ n: 1 });
      await store.apply(p, 1, [del(c, 'a', 8), del(c, 'never-existed', 8)], 8n);
      expect(await store.get(c, 'a')).toBeUndefined();
    });

    it('says whether documents of the given collections were written after a position', async () => {
      const p = unique('p');
      const [a, b] = [unique('a'), unique('b')];
      expect(await store.writtenAfter([a, b], 0n)).toBe(false);
      await store.apply(p, 1, [put(a, 'x', { n: 1 }, 4), put(b, 'y', { n: 1 }, 9)], 5n);
      expect(await store.writtenAfter([a, b], 5n)).toBe(true);
      expect(await store.writtenAfter([a], 5n)).toBe(false);
      expect(await store.writtenAfter([a, b], 9n)).toBe(false);
    });

    it('keeps the newer change when two writers create one document at once', async () => {
      const p = unique('p');
      const c = unique('c');
      const other = await open();
      try {
        const ids = Array.from({ length: 20 }, (_, i) => `d${i}`);
        await Promise.all(
          ids.flatMap((id, i) => {
            const [older, newer] = [store.apply(p, 1, [put(c, id, { n: 'older' }, 10)], 10n), other.apply(p, 1, [put(c, id, { n: 'newer' }, 20)], 20n)];
            return i % 2 === 0 ? [older, newer] : [newer, older];
          }),
        );
        for (const id of ids) expect(await store.get(c, id)).toEqual({ n: 'newer' });
      } finally {
        await other.close();
      }
    });

    it('keeps the newer checkpoint when two writers create one projection\'s checkpoint at once', async () => {
      const projections = Array.from({ length: 20 }, () => unique('p'));
      const other = await open();
      try {
        await Promise.all(
          projections.flatMap((p, i) => {
            const [older, newer] = [store.apply(p, 1, [], 10n), other.apply(p, 1, [], 20n)];
            return i % 2 === 0 ? [older, newer] : [newer, older];
          }),
        );
        for (const p of projections) expect(await store.checkpoint(p)).toEqual({ position: 20n, version: 1 });
      } finally {
        await other.close();
      }
    });

    it('applies the last of several changes one event makes to the same document', async () => {
      const p = unique('p');
      const c = unique('c');
      await store.apply(p, 1, [put(c, 'x', { n: 0 }, 1), put(c, 'y', { n: 0 }, 1)], 1n);
      await store.apply(
        p,
        1,
        [
          put(c, 'x', { n: 1 }, 2),
          put(c, 'x', { n: 2 }, 2),
          put(c, 'y', { n: 1 }, 2),
          del(c, 'y', 2),
          del(c, 'z', 2),
          put(c, 'z', { n: 1 }, 2),
        ],
        2n,
      );
      expect([await store.get(c, 'x'), await store.get(c, 'y'), await store.get(c, 'z')]).toEqual([
        { n: 2 },
        undefined,
        { n: 1 },
      ]);
    });

    it('resets: drops the named collections and the checkpoint, so a rebuild starts from scratch', async () => {
      const p = unique('p');
      const other = unique('p');
      const a = unique('a');
      const b = unique('b');
      const kept = unique('kept');
      await store.apply(p, 1, [put(a, 'x', { v: 1 }, 100), put(b, 'y', { v: 1 }, 100)], 100n);
      await store.apply(other, 1, [put(kept, 'z', { v: 1 }, 100)], 100n);
      await store.reset(p, [a, b]);
      expect(await store.checkpoint(p)).toBeUndefined();
      expect(await store.find(a)).toEqual([]);
      expect(await store.find(b)).toEqual([]);
      expect(await store.get(kept, 'z')).toEqual({ v: 1 });
      expect(await store.checkpoint(other)).toEqual({ position: 100n, version: 1 });

      // Rebuilt by a new version from position 0: the old, higher positions are gone with the documents.
      await store.apply(p, 2, [put(a, 'x', { v: 2 }, 3)], 3n);
      expect(await store.get(a, 'x')).toEqual({ v: 2 });
      expect(await store.checkpoint(p)).toEqual({ position: 3n, version: 2 });
      await store.reset(unique('never-applied'), [unique('never-written')]);
    });

    it('keeps everything it acknowledged across close and reopen', async () => {
      const p = unique('p');
      const c = unique('c');
      await store.apply(p, 4, [put(c, 'a', { n: 1 }, 20), put(c, 'b', { n: 2 }, 21)], 21n);
      await store.close();
      store = await open();
      expect(await store.find(c)).toEqual([{ n: 1 }, { n: 2 }]);
      expect(await store.checkpoint(p)).toEqual({ position: 21n, version: 4 });
    });

    it('round-trips positions above 2^32 exactly', async () => {
      const p = unique('p');
      const c = unique('c');
      const high = 2n ** 40n + 3n;
      await store.apply(p, 1, [put(c, 'a', { n: 1 }, high)], high);
      const cp = await store.checkpoint(p);
      expect(typeof cp?.position).toBe('bigint');
      expect(cp?.position).toBe(high);
      await store.apply(p, 1, [put(c, 'a', { n: 2 }, high - 1n)], high);
      expect(await store.get(c, 'a')).toEqual({ n: 1 });
      await store.apply(p, 1, [put(c, 'a', { n: 3 }, high + 1n)], high + 1n);
      expect(await store.get(c, 'a')).toEqual({ n: 3 });
      expect((await store.checkpoint(p))?.position).toBe(high + 1n);
    });

    it('writes batches given together each whole or not at all: one that fails leaves the others', async () => {
      const [p, q] = [unique('p'), unique('q')];
      const c = unique('c');
      const results = await Promise.allSettled([
        store.apply(p, 1, [put(c, 'a', { n: 1 }, 3)], 3n),
        store.apply(q, 1, [put(c, 'b', { n: 1 }, 4), put(c, 'z', { n: 1 }, 2n ** 64n)], 4n),
        store.apply(p, 1, [put(c, 'a', { n: 2 }, 5)], 5n),
      ]);
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
      expect(await store.find(c)).toEqual([{ n: 2 }]);
      expect(await store.checkpoint(p)).toEqual({ position: 5n, version: 1 });
      expect(await store.checkpoint(q)).toBeUndefined();
    });

    it('writes a large batch (a rebuild\'s) whole and in order with small ones, and a failing one not at all', async () => {
      const p = unique('p');
      const c = unique('c');
      const big = Array.from({ length: 5000 }, (_, i) => put(c, `d${String(i).padStart(5, '0')}`, { n: i, tags: ['x'] }, i + 1));
      await store.apply(p, 1, big, 5000n);
      expect(await store.checkpoint(p)).toEqual({ position: 5000n, version: 1 });
      expect(await store.get(c, 'd04999')).toEqual({ n: 4999, tags: ['x'] });
      await store.apply(p, 1, [put(c, 'd00000', { n: -1 }, 5001), del(c, 'd00001', 5001)], 5001n);
      const docs = await store.find(c);
      expect(docs).toHaveLength(4999);
      expect(docs[0]).toEqual({ n: -1 });
      expect(docs[4998]).toEqual({ n: 4999, tags: ['x'] });
      expect(await store.checkpoint(p)).toEqual({ position: 5001n, version: 1 });

      const failing = Array.from({ length: 5000 }, (_, i) => put(c, `e${i}`, { n: i }, 6000 + i));
      failing.push(put(c, 'd00002', { n: 0 }, 2n ** 64n));
      await expect(store.apply(p, 1, failing, 20_000n)).rejects.toThrow();
      expect(await store.find(c)).toHaveLength(4999);
      expect(await store.get(c, 'e0')).toBeUndefined();
      expect(await store.checkpoint(p)).toEqual({ position: 5001n, version: 1 });

      // Written while a large batch may still be under way: each lands after the one before it.
      // A delete amid the puts lands in its place: after the put of the same document before it, before the one after.
      const again = big.map((ch) => ({ ...ch, position: ch.position + 10_000n }));
      again.splice(1000, 0, del(c, 'd00002', 10_999), del(c, 'd01500', 10_999));
      await Promise.all([store.apply(p, 1, again, 15_000n), store.apply(p, 1, [put(c, 'd00003', { n: 'last' }, 15_001)], 15_001n)]);
      expect(await store.get(c, 'd00003')).toEqual({ n: 'last' });
      expect(await store.get(c, 'd00001')).toEqual({ n: 1, tags: ['x'] });
      expect(await store.get(c, 'd00002')).toBeUndefined();
      expect(await store.get(c, 'd01500')).toEqual({ n: 1500, tags: ['x'] });
      expect(await store.find(c)).toHaveLength(4999);
      await store.reset(p, [c]);
      expect(await store.find(c)).toEqual([]);
    });

    it('answers ping while open', async () => {
      await expect(store.ping()).resolves.toBeUndefined();
    });
  });
}
