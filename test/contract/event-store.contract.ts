import { describe, expect, it, beforeEach, afterEach } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { AppendTooLargeError, type EventStore, type ExpectedRevision, type LeanEvent, MAX_APPEND_BYTES, type NewEvent, type RecordedEvent, WrongExpectedRevisionError } from '../../src/application/ports/event-store.port.js';

/** One behaviour, every adapter: the embedded ledger and EventStoreDB must both pass this. */
export function eventStoreContract(name: string, open: () => Promise<EventStore>) {
  describe(`event store contract: ${name}`, () => {
    let store: EventStore;
    // Unique streams per test: a production store is shared and never emptied.
    const stream = (label: string) => `${label}-${randomUUID().slice(0, 8)}`;
    const ev = (n: number) => ({ type: 'Counted', data: { n }, metadata: { actor: 'test' } });

    beforeEach(async () => (store = await open()));
    afterEach(async () => store.close());

    it('appends to a new stream with no_stream and reads it back in order', async () => {
      const s = stream('c');
      const r = await one(store, s, [ev(1), ev(2)], 'no_stream');
      expect(r.nextExpectedRevision).toBe(1);
      const read = await store.readStream(s);
      expect(read.map((e) => [e.revision, e.type, e.data.n, e.metadata.actor])).toEqual([
        [0, 'Counted', 1, 'test'],
        [1, 'Counted', 2, 'test'],
      ]);
      expect(read[1].position > read[0].position).toBe(true);
    });

    it('rejects no_stream on an existing stream', async () => {
      const s = stream('c');
      await one(store, s, [ev(1)], 'no_stream');
      await expect(one(store, s, [ev(2)], 'no_stream')).rejects.toBeInstanceOf(WrongExpectedRevisionError);
    });

    it('appends with the exact expected revision and rejects a stale one without writing', async () => {
      const s = stream('c');
      const first = await one(store, s, [ev(1)], 'no_stream');
      await one(store, s, [ev(2)], first.nextExpectedRevision);
      const err = await one(store, s, [ev(3)], first.nextExpectedRevision).catch((e) => e);
      expect(err).toBeInstanceOf(WrongExpectedRevisionError);
      expect(err.actual).toBe(1);
      expect((await store.readStream(s)).map((e) => e.data.n)).toEqual([1, 2]);
    });

    it('rejects an expected revision on a stream that does not exist', async () => {
      const err = await one(store, stream('c'), [ev(1)], 0).catch((e) => e);
      expect(err).toBeInstanceOf(WrongExpectedRevisionError);
      expect(err.actual).toBe('no_stream');
    });

    it('lets exactly one of many concurrent appends with the same expected revision win', async () => {
      const s = stream('race');
      await one(store, s, [ev(0)], 'no_stream');
      const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => one(store, s, [ev(i + 1)], 0)));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      expect(results.filter((r) => r.status === 'rejected').every((r) => (r as PromiseRejectedResult).reason instanceof WrongExpectedRevisionError)).toBe(true);
      expect(await store.readStream(s)).toHaveLength(2);
    });

    it('reads an unknown stream as empty', async () => {
      expect(await store.readStream(stream('none'))).toEqual([]);
    });

    it('reads all from a position, strictly after it, in order, paged', async () => {
      const a = stream('a');
      const b = stream('b');
      const first = await one(store, a, [ev(1)], 'no_stream');
      await one(store, b, [ev(2)], 'no_stream');
      await one(store, a, [ev(3)], 0);
      const after = await readAllFrom(store, first.position);
      const mine = after.filter((e) => e.stream === a || e.stream === b);
      expect(mine.map((e) => e.data.n)).toEqual([2, 3]);
      // Three events were just written, so the first page of two is full.
      const page = await store.readAll(0n, 2);
      expect(page).toHaveLength(2);
      expect(page[1].position > page[0].position).toBe(true);
    });

    it('reads the newest events before a position, in order, without the ones before them (readLast)', async () => {
      const s = stream('last');
      const first = await one(store, s, [ev(1)], 'no_stream');
      await one(store, s, [ev(2)], 0);
      const third = await one(store, s, [ev(3)], 1);
      const before = await store.readLast(third.position, 2);
      expect(before.map((e) => e.position)).toEqual([...before.map((e) => e.position)].sort((x, y) => (x < y ? -1 : 1)));
      expect(before).toHaveLength(2);
      expect(before.at(-1)!.data.n).toBe(2);
      expect(before.every((e) => e.position < third.position)).toBe(true);
      expect((await store.readLast(first.position + 1n, 1))[0].data.n).toBe(1);
    });

    it('subscribes: catch-up then live, in order, without gaps or repeats', async () => {
      const s = stream('sub');
      const start = await one(store, s, [ev(0)], 'no_stream');
      await one(store, s, [ev(1), ev(2)], 0);
      const seen: RecordedEvent[] = [];
      let resolveDone!: () => void;
      const done = new Promise<void>((r) => (resolveDone = r));
      const sub = store.subscribeAll(start.position, async (e) => {
        if (e.stream !== s) return;
        seen.push(e);
        if (seen.length === 4) resolveDone();
      });
      await one(store, s, [ev(3)], 2);
      await one(store, s, [ev(4)], 3);
      await done;
      await sub.close();
      expect(seen.map((e) => e.data.n)).toEqual([1, 2, 3, 4]);
      expect(seen.map((e) => e.revision)).toEqual([1, 2, 3, 4]);
    });

    it('subscribes lean: what subscribeAll delivers, without stream, id and metadata, read back after a reopen, then live', async () => {
      const s = stream('lean');
      // Told apart by their data: a lean event names no stream.
      const tagged = (n: number) => ({ ...ev(n), data: { n, in: s } });
      const start = await one(store, s, [tagged(0)], 'no_stream');
      await one(store, s, [tagged(1), tagged(2)], 0);
      // Reopened: the catch-up is read from the store itself, not from what this process wrote.
      await store.close();
      store = await open();
      const follow = <E extends LeanEvent>(subscribe: (h: (e: E) => Promise<void>) => { close(): Promise<void> }) => {
        const seen: E[] = [];
        let resolveDone!: () => void;
        const done = new Promise<void>((r) => (resolveDone = r));
        const sub = subscribe(async (e) => {
          if (e.data.in !== s) return;
          seen.push(e);
          if (seen.length === 4) resolveDone();
        });
        return { seen, done: done.then(() => sub.close()) };
      };
      const whole = follow<RecordedEvent>((h) => store.subscribeAll(start.position, h));
      const lean = follow<LeanEvent>((h) => store.subscribeAllLean(start.position, h));
      await one(store, s, [tagged(3)], 2);
      await one(store, s, [tagged(4)], 3);
      await Promise.all([whole.done, lean.done]);
      expect(whole.seen.every((e) => e.stream === s)).toBe(true);
      expect(lean.seen.map((e) => e.data.n)).toEqual([1, 2, 3, 4]);
      expect(lean.seen.map(({ position, revision, type, data }) => ({ position, revision, type, data }))).toEqual(
        whole.seen.map(({ position, revision, type, data }) => ({ position, revision, type, data })),
      );
    });

    it('appends to several streams in one call, all of it or nothing', async () => {
      const [a, b, c] = [stream('multi-a'), stream('multi-b'), stream('multi-c')];
      await one(store, a, [ev(0)], 'no_stream');
      const r = await store.append([
        { stream: a, expected: 0, events: [ev(1), ev(2)] },
        { stream: b, expected: 'no_stream', events: [ev(3)] },
      ]);
      expect(r.nextExpectedRevisions).toEqual([2, 0]);
      // One stale revision among several writes: nothing of the call is written.
      const err = await store
        .append([
          { stream: c, expected: 'no_stream', events: [ev(4)] },
          { stream: b, expected: 0, events: [ev(5)] },
          { stream: a, expected: 1, events: [ev(6)] },
        ])
        .catch((e) => e);
      expect(err).toBeInstanceOf(WrongExpectedRevisionError);
      expect(err.stream).toBe(a);
      expect(await store.readStream(c)).toEqual([]);
      expect((await store.readStream(b)).map((e) => e.data.n)).toEqual([3]);
      expect((await store.readStream(a)).map((e) => e.data.n)).toEqual([0, 1, 2]);
    });

    it("takes an append up to MAX_APPEND_BYTES, and refuses a larger one whole, as AppendTooLargeError (whatever KurrentDB's MaxAppendSize: 256 MiB by default since 25.1)", async () => {
      const [a, b] = [stream('size-a'), stream('size-b')];
      // Two events of 400 KB: 800 KB in one append, under the bound (KurrentDB counts the type names and metadata too).
      const text = (n: number) => ({ type: 'Counted', data: { n, text: 'x'.repeat(400_000) }, metadata: { actor: 'test' } });
      expect((await store.append([{ stream: a, expected: 'no_stream', events: [text(0), text(1)] }])).nextExpectedRevisions).toEqual([1]);
      // Three of them, over it, across two streams: nothing of the call is written.
      const err = await store.append([{ stream: a, expected: 1, events: [text(2), text(3)] }, { stream: b, expected: 'no_stream', events: [text(4)] }]).catch((e) => e);
      expect(err).toBeInstanceOf(AppendTooLargeError);
      expect(err.bytes === undefined || err.bytes > MAX_APPEND_BYTES).toBe(true);
      expect((await store.readStream(a)).map((e) => e.data.n)).toEqual([0, 1]);
      expect(await store.readStream(b)).toEqual([]);
    });

    it('never shows a reader part of a call', async () => {
      const streams = Array.from({ length: 5 }, (_, i) => stream(`whole-${i}`));
      const seen: RecordedEvent[] = [];
      const before = await one(store, stream('mark'), [ev(-1)], 'no_stream');
      let resolveDone!: () => void;
      const done = new Promise<void>((r) => (resolveDone = r));
      const sub = store.subscribeAll(before.position, async (e) => {
        if (!streams.includes(e.stream)) return;
        seen.push(e);
        if (seen.length === 10) resolveDone();
      });
      // Two calls racing on the same streams: exactly one wins, and its five writes arrive together.
      const calls = [1, 2].map((k) => store.append(streams.map((s) => ({ stream: s, expected: 'no_stream' as const, events: [ev(k), ev(k * 10)] }))));
      const results = await Promise.allSettled(calls);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      await done;
      await sub.close();
      const winner = seen[0].data.n as number;
      expect(seen.every((e) => e.data.n === winner || e.data.n === winner * 10)).toBe(true);
      const positions = seen.map((e) => e.position);
      expect([...positions].sort((x, y) => (x < y ? -1 : 1))).toEqual(positions);
    });

    it('survives a reopen with everything it acknowledged', async () => {
      const s = stream('durable');
      await one(store, s, [ev(1)], 'no_stream');
      await store.close();
      store = await open();
      expect((await store.readStream(s)).map((e) => e.data.n)).toEqual([1]);
    });
  });
}

async function readAllFrom(store: EventStore, after: bigint): Promise<RecordedEvent[]> {
  const out: RecordedEvent[] = [];
  for (;;) {
    const page = await store.readAll(out.length ? out[out.length - 1].position : after, 500);
    if (page.length === 0) return out;
    out.push(...page);
  }
}

/** A single-stream append, as most tests need. */
async function one(store: EventStore, stream: string, events: NewEvent[], expected: ExpectedRevision) {
  const r = await store.append([{ stream, expected, events }]);
  return { position: r.position, nextExpectedRevision: r.nextExpectedRevisions[0] };
}
