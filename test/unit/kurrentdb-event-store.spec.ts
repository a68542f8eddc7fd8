import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { WrongExpectedVersionError } from '@kurrent/kurrentdb-client';
import { PassThrough } from 'node:stream';
import { KurrentDbEventStore } from '../../src/adapters/eventstore/kurrentdb-event-store.js';
import { type RecordedEvent, WrongExpectedRevisionError } from '../../src/application/ports/event-store.port.js';

/**
 * The KurrentDB adapter's own logic over a stand-in for the client (no server here): what the client hands back is
 * shaped as @kurrent/kurrentdb-client 1.3 does (ResolvedEvent with bigint revision and {commit, prepare} position).
 * The adapter against a real server is test/contract/event-store.contract.spec.ts with DUFFY_EVENTSTORE set.
 */

interface Rec {
  stream: string;
  type: string;
  at: bigint;
  json?: boolean;
}

const resolved = (r: Rec, revision = 0n) => ({
  event: {
    id: `id-${r.at}`,
    streamId: r.stream,
    revision,
    type: r.type,
    data: { at: Number(r.at) },
    metadata: { duffy: JSON.stringify({ actor: 'test' }) },
    isJson: r.json ?? true,
    position: { commit: r.at, prepare: r.at },
  },
});

/** $all as the server reads it: from a position inclusive, at most maxCount records. */
function fakeReadAll(log: Rec[], calls: unknown[] = []) {
  return (options: { fromPosition: 'start' | { commit: bigint }; maxCount: number }) => {
    calls.push(options);
    const from = options.fromPosition === 'start' ? -1n : options.fromPosition.commit;
    const page = log.filter((r) => r.at >= from).slice(0, options.maxCount);
    return (async function* () {
      for (const r of page) yield resolved(r);
    })();
  };
}

class FakeSubscription extends PassThrough {
  constructor() {
    super({ objectMode: true });
  }
  async unsubscribe(): Promise<void> {
    this.end();
  }
}

async function withClient(fake: object): Promise<KurrentDbEventStore> {
  const store = new KurrentDbEventStore('kurrentdb://localhost:1?tls=false');
  const holder = store as unknown as { client: { dispose(): Promise<void> } };
  await holder.client.dispose();
  holder.client = { dispose: async () => undefined, ...fake } as never;
  return store;
}

describe('KurrentDB adapter (client stand-in)', () => {
  beforeEach(() => void jest.spyOn(console, 'error').mockImplementation(() => undefined));
  afterEach(() => {
    jest.restoreAllMocks();
  });

  it('reads $all on past a full page of records it skips, instead of answering "no more events"', async () => {
    // A server page (limit + 1 records) of system-stream and binary records, then Duffy's event.
    const log: Rec[] = [
      { stream: '$stats-1', type: 'statsCollected', at: 10n },
      { stream: 'other-app', type: 'Blob', at: 20n, json: false },
      { stream: '$stats-1', type: 'statsCollected', at: 30n },
      { stream: 'machine-1', type: 'MachineRegistered', at: 40n },
      { stream: 'machine-2', type: 'MachineRegistered', at: 50n },
    ];
    const calls: unknown[] = [];
    const store = await withClient({ readAll: fakeReadAll(log, calls) });
    expect((await store.readAll(0n, 2)).map((e) => [e.stream, e.position])).toEqual([
      ['machine-1', 40n],
      ['machine-2', 50n],
    ]);
    expect(calls.length).toBeGreaterThan(1);
    // Strictly after the position, paged, and empty at the end.
    expect((await store.readAll(40n, 2)).map((e) => e.position)).toEqual([50n]);
    expect(await store.readAll(50n, 2)).toEqual([]);
    expect((await store.readAll(0n, 1)).map((e) => e.position)).toEqual([40n]);
  });

  it('never delivers a $ stream\'s event through the subscription either (readAll does not return it)', async () => {
    const sub = new FakeSubscription();
    const store = await withClient({ subscribeToAll: () => sub });
    const seen: RecordedEvent[] = [];
    let resolveDone!: () => void;
    const done = new Promise<void>((r) => (resolveDone = r));
    const subscription = store.subscribeAll(0n, async (e) => {
      seen.push(e);
      resolveDone();
    });
    sub.write(resolved({ stream: '$stats-1', type: 'statsCollected', at: 10n }));
    sub.write(resolved({ stream: 'machine-1', type: 'MachineRegistered', at: 20n }));
    await done;
    await subscription.close();
    expect(seen.map((e) => [e.stream, e.metadata.actor])).toEqual([['machine-1', 'test']]);
  });

  it('closes at once while waiting to subscribe again after a drop, not after the backoff', async () => {
    let subscribed = 0;
    const store = await withClient({
      subscribeToAll: () => {
        subscribed += 1;
        const sub = new FakeSubscription();
        setImmediate(() => sub.destroy(new Error('14 UNAVAILABLE: connection dropped')));
        return sub;
      },
    });
    const subscription = store.subscribeAll(0n, async () => undefined);
    await new Promise((r) => setTimeout(r, 50));
    expect(subscribed).toBe(1);
    const started = Date.now();
    await subscription.close();
    expect(Date.now() - started).toBeLessThan(250);
    expect(subscribed).toBe(1);
  });

  it('turns the server\'s revision conflict into WrongExpectedRevisionError with the actual revision', async () => {
    const conflict = (stream: string, current: bigint | 'no_stream') =>
      new WrongExpectedVersionError(undefined, { streamName: stream, expected: 0n, current });
    let answer: () => Promise<unknown> = async () => Promise.reject(conflict('b', 3n));
    const store = await withClient({ multiStreamAppend: () => answer() });
    const writes = [
      { stream: 'a', expected: 'no_stream' as const, events: [{ type: 'T', data: {} }] },
      { stream: 'b', expected: 0, events: [{ type: 'T', data: {} }] },
    ];
    const err = await store.append(writes).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WrongExpectedRevisionError);
    expect(err).toMatchObject({ stream: 'b', expected: 0, actual: 3 });

    answer = async () => Promise.reject(conflict('b', 'no_stream'));
    expect(await store.append(writes).catch((e: unknown) => e)).toMatchObject({ stream: 'b', actual: 'no_stream' });

    // Success: per stream, the revision of its last event, in call order whatever order the server answers in.
    answer = async () => ({ position: 99n, responses: [{ streamName: 'b', revision: 1n }, { streamName: 'a', revision: 0n }] });
    expect(await store.append(writes)).toEqual({ position: 99n, nextExpectedRevisions: [0, 1] });
  });
});
