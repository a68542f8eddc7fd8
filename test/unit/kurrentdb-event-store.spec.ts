import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { DeadlineExceededError, UnknownError, WrongExpectedVersionError, convertToCommandError } from '@kurrent/kurrentdb-client';
import { createServer } from 'node:net';
import { PassThrough } from 'node:stream';
import { KurrentDbEventStore, discovers, retryableWrite } from '../../src/adapters/eventstore/kurrentdb-event-store.js';
import { describe as answer } from '../../src/http/errors.filter.js';
import { AppendTooLargeError, MAX_APPEND_BYTES, type RecordedEvent, WrongExpectedRevisionError } from '../../src/application/ports/event-store.port.js';

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

async function withClient(fake: object, url = 'kurrentdb://localhost:1?tls=false'): Promise<KurrentDbEventStore> {
  const store = new KurrentDbEventStore(url);
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

  it('after a drop of a subscription that was up a while, subscribes again after the shortest wait, not a backoff grown by older drops', async () => {
    const made: number[] = [];
    const realNow = Date.now.bind(Date);
    let skew = 0;
    jest.spyOn(Date, 'now').mockImplementation(() => realNow() + skew);
    const store = await withClient({
      subscribeToAll: () => {
        made.push(realNow());
        const sub = new FakeSubscription();
        const drop = () => sub.destroy(new Error('14 UNAVAILABLE: connection dropped'));
        // Two drops at once (waits of 500 ms, then 1 s), then one that stays up (idle) longer than the longest wait.
        if (made.length <= 2) setImmediate(drop);
        else if (made.length === 3) setTimeout(() => ((skew += 31_000), drop()), 10);
        return sub;
      },
    });
    const subscription = store.subscribeAll(0n, async () => undefined);
    while (made.length < 4) await new Promise((r) => setTimeout(r, 20));
    await subscription.close();
    // The grown backoff would be 2 s.
    expect(made[3] - made[2]).toBeLessThan(1500);
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

/** A local port nothing listens on. */
const closedPort = () =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });

/** A protobuf length-delimited field (every length here is under 128). */
const field = (tag: number, bytes: Uint8Array | string) => {
  const b = typeof bytes === 'string' ? Buffer.from(bytes) : Buffer.from(bytes);
  return Buffer.concat([Buffer.from([(tag << 3) | 2, b.length]), b]);
};
/**
 * A KurrentDB v2 error as the server sends it (KurrentDB RpcExceptions.FromError, 25.1/26.0): status code, message,
 * and a google.rpc.Status in `grpc-status-details-bin` whose details are an ErrorInfo then the error's own details.
 */
function v2Error(code: number, message: string, detailsType: string, detailsValue: Uint8Array = new Uint8Array()) {
  const any = (type: string, value: Uint8Array) => Buffer.concat([field(1, `type.googleapis.com/${type}`), ...(value.length ? [field(2, value)] : [])]);
  const status = Buffer.concat([Buffer.from([0x08, code]), field(2, message), field(3, any('google.rpc.ErrorInfo', new Uint8Array())), field(3, any(detailsType, detailsValue))]);
  const metadata = { get: (key: string) => (key === 'grpc-status-details-bin' ? [status] : []), getMap: () => ({}) };
  return { code, details: message, message: `${code} ${message}`, metadata };
}

describe('KurrentDB write failures', () => {
  const FAILED_PRECONDITION = 9;
  const notLeader = () => convertToCommandError(v2Error(FAILED_PRECONDITION, 'The server is not the leader node', 'kurrent.rpc.NotLeaderNodeErrorDetails') as never);

  it('tells the failures worth another try from the rest, through the client\'s own error mapping', () => {
    // The client has no class for the v2 "not the leader": it becomes UnknownError.
    expect(notLeader()).toBeInstanceOf(UnknownError);
    expect(retryableWrite(notLeader())).toMatch(/not the leader/);
    // What the real client rejects an append with when nothing listens (seen here): the raw gRPC error, code 14.
    expect(retryableWrite(Object.assign(new Error('14 UNAVAILABLE: No connection established'), { code: 14, details: '', metadata: {} }))).toMatch(/unreachable/);
    expect(retryableWrite(convertToCommandError({ code: 4, details: 'timed out while waiting for commit', metadata: { getMap: () => ({}) } } as never))).toMatch(/in time/);
    expect(convertToCommandError({ code: 4, details: '', metadata: { getMap: () => ({}) } } as never)).toBeInstanceOf(DeadlineExceededError);
    // A revision conflict (zigzag sint64: expected 0, actual 3) is an answer, not a failure to retry.
    const conflictDetails = Buffer.concat([field(1, 'machine-1'), Buffer.from([0x10, 0, 0x18, 6])]);
    const conflict = convertToCommandError(v2Error(FAILED_PRECONDITION, 'revision conflict', 'kurrentdb.protocol.v2.streams.StreamRevisionConflictErrorDetails', conflictDetails) as never);
    expect(conflict).toMatchObject({ streamName: 'machine-1', actualState: 3n });
    expect(retryableWrite(conflict)).toBeUndefined();
    expect(retryableWrite(new Error('something else'))).toBeUndefined();
  });

  it('answers 503 when KurrentDB cannot be reached (the real client, nothing listening), not 500', async () => {
    const store = new KurrentDbEventStore(`kurrentdb://127.0.0.1:${await closedPort()}?tls=false`);
    try {
      const err = await store.append([{ stream: 'machine-1', expected: 'no_stream', events: [{ type: 'T', data: {} }] }]).catch((e: unknown) => e);
      const [status, detail] = answer(err);
      expect(status).toBe(503);
      expect(detail).toMatch(/event store cannot take writes now: KurrentDB is unreachable/);
    } finally {
      await store.close();
    }
  });

  it('refuses an append over MAX_APPEND_BYTES itself, before sending it (KurrentDB 25.1+ takes up to 256 MiB by default)', async () => {
    // Nothing listens: only a refusal made before any I/O is not the 503 of an unreachable server.
    const store = new KurrentDbEventStore(`kurrentdb://127.0.0.1:${await closedPort()}?tls=false`);
    try {
      const text = (n: number) => ({ type: 'Counted', data: { n, text: 'x'.repeat(400_000) }, metadata: { actor: 'test' } });
      const err = await store.append([{ stream: 'size-a', expected: 1, events: [text(2), text(3)] }, { stream: 'size-b', expected: 'no_stream', events: [text(4)] }]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AppendTooLargeError);
      expect((err as AppendTooLargeError).bytes).toBeGreaterThan(MAX_APPEND_BYTES);
    } finally {
      await store.close();
    }
  });

  it('answers 503 when a cluster\'s gossip finds no node (an election, every node down: the real client\'s plain Error), not 500', async () => {
    const store = new KurrentDbEventStore('kurrentdb+discover://127.0.0.1:1?tls=false&discoveryInterval=10&gossipTimeout=1&maxDiscoverAttempts=1');
    try {
      const err = await store.append([{ stream: 'machine-1', expected: 'no_stream', events: [{ type: 'T', data: {} }] }]).catch((e: unknown) => e);
      expect(String((err as { cause?: unknown }).cause ?? err)).toMatch(/Failed to discover after 1 attempts/);
      const [status, detail] = answer(err);
      expect([status, detail]).toEqual([503, expect.stringMatching(/event store cannot take writes now: KurrentDB has no reachable leader \(cluster discovery failed\)/)]);
    } finally {
      await store.close();
    }
  });

  it('maps a revision conflict that reaches it as the raw gRPC error too', async () => {
    const conflictDetails = Buffer.concat([field(1, 'machine-1'), Buffer.from([0x10, 0, 0x18, 6])]);
    const raw = v2Error(FAILED_PRECONDITION, 'revision conflict', 'kurrentdb.protocol.v2.streams.StreamRevisionConflictErrorDetails', conflictDetails);
    const store = await withClient({ multiStreamAppend: async () => Promise.reject(raw) });
    const err = await store.append([{ stream: 'machine-1', expected: 0, events: [{ type: 'T', data: {} }] }]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WrongExpectedRevisionError);
    expect(err).toMatchObject({ stream: 'machine-1', actual: 3 });
    await store.close();
  });

  it('after a "not the leader" answer from a cluster sends the next append through a new client, which finds the leader', async () => {
    const clientOf = (store: KurrentDbEventStore) => (store as unknown as { client: unknown }).client;
    const write = [{ stream: 'machine-1', expected: 0, events: [{ type: 'T', data: {} }] }];
    const cluster = await withClient({ multiStreamAppend: async () => Promise.reject(notLeader()) }, 'kurrentdb://127.0.0.1:1,127.0.0.1:2?tls=false');
    (cluster as unknown as { clientSince: number }).clientSince = 0;
    const before = clientOf(cluster);
    expect(answer(await cluster.append(write).catch((e: unknown) => e))[0]).toBe(503);
    expect(clientOf(cluster)).not.toBe(before);
    await cluster.close();
    // One host is all a client can reach: a new one would only pile up.
    const single = await withClient({ multiStreamAppend: async () => Promise.reject(notLeader()) });
    (single as unknown as { clientSince: number }).clientSince = 0;
    const only = clientOf(single);
    expect(answer(await single.append(write).catch((e: unknown) => e))[0]).toBe(503);
    expect(clientOf(single)).toBe(only);
    await single.close();
    expect([discovers('kurrentdb+discover://dns:2113'), discovers('esdb://a:2113,b:2113?tls=false'), discovers('kurrentdb://a:2113?tls=false&nodePreference=leader')]).toEqual([true, true, false]);
  });
});
