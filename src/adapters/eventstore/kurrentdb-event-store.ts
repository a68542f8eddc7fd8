import {
  AppendConsistencyViolationError,
  AppendRecordSizeExceededError,
  BACKWARDS,
  CancelledError,
  DeadlineExceededError,
  END,
  FORWARDS,
  KurrentDBClient,
  MaxAppendSizeExceededError,
  NotLeaderError,
  START,
  StreamNotFoundError,
  TransactionMaxSizeExceededError,
  UnavailableError,
  UnknownError,
  WrongExpectedVersionError,
  convertToCommandError,
  excludeSystemEvents,
  jsonEvent,
  type AllStreamResolvedEvent,
  type ResolvedEvent,
} from '@kurrent/kurrentdb-client';
// Not exported from the package root; the client's own decoder of a gRPC error's status details.
import { getGrpcStatusDetails } from '@kurrent/kurrentdb-client/dist/utils/getGrpcStatusDetails.js';
import {
  type AppendResult,
  type EventHandler,
  type LeanEventHandler,
  type EventMetadata,
  type EventStore,
  type RecordedEvent,
  type StreamWrite,
  type Subscription,
  WrongExpectedRevisionError,
  AppendTooLargeError,
  appendTooLarge,
} from '../../application/ports/event-store.port.js';
import { EVENTSTORE_UNAVAILABLE } from '../../application/ports/storage-fault.port.js';

/**
 * Multi-stream appends carry metadata as string properties only (KurrentDB 25.1), so Duffy's metadata object
 * travels as one JSON string under this key and is parsed back on read.
 */
const METADATA_KEY = 'duffy';

/** Resubscribing after a dropped subscription: first after this long, doubling up to the maximum. */
const RESUBSCRIBE_MIN_MS = 500;
const RESUBSCRIBE_MAX_MS = 30_000;

/**
 * Production ledger on KurrentDB (EventStoreDB's current name), 25.1 or later for `multiStreamAppend`:
 * single node or cluster, the connection string decides. Our global position is the commit position.
 */
export class KurrentDbEventStore implements EventStore {
  readonly singleWriter = false;
  private client: KurrentDBClient;
  /** Clients replaced after a "not the leader" answer: their subscriptions run on until they end or close(). */
  private readonly replaced: KurrentDBClient[] = [];
  private clientSince = Date.now();
  /**
   * Subscriptions waiting out a backoff after a drop: an append that lands shows KurrentDB is back, so they subscribe
   * again at once. Otherwise, after an outage long enough to grow the backoff to RESUBSCRIBE_MAX_MS, the first writes
   * that landed waited for the World to see them past the Ledger's own deadline and were answered 503, durable.
   */
  private readonly backingOff = new Set<() => void>();

  constructor(private readonly connectionString: string) {
    this.client = KurrentDBClient.connectionString(connectionString);
  }

  async append(writes: StreamWrite[]): Promise<AppendResult> {
    if (new Set(writes.map((w) => w.stream)).size !== writes.length) throw new Error('a stream may appear once per append');
    if (writes.length === 0 || writes.some((w) => w.events.length === 0)) throw new Error('append needs at least one event per write');
    // KurrentDB 25.1+ takes up to 256 MiB by default: the port's bound is kept here, as on the embedded store.
    const tooLarge = appendTooLarge(writes);
    if (tooLarge) throw tooLarge;
    const client = this.client;
    try {
      const result = await client.multiStreamAppend(
        writes.map((w) => ({
          streamName: w.stream,
          expectedState: w.expected === 'any' ? 'any' : w.expected === 'no_stream' ? 'no_stream' : BigInt(w.expected),
          events: w.events.map((e) => jsonEvent({ type: e.type, data: e.data as never, metadata: { [METADATA_KEY]: JSON.stringify(e.metadata ?? {}) } as never })),
        })),
      );
      for (const resubscribe of this.backingOff) resubscribe();
      const byStream = new Map(result.responses.map((r) => [r.streamName, Number(r.revision)]));
      return { position: result.position, nextExpectedRevisions: writes.map((w) => byStream.get(w.stream) ?? -1) };
    } catch (thrown) {
      // The append rejects with the raw gRPC error when it comes through the call's stream, not its callback.
      const err = convertToCommandError(thrown as never) as unknown;
      if (err instanceof AppendConsistencyViolationError && err.violations.length > 0) {
        const v = err.violations[0];
        const w = writes.find((x) => x.stream === v.streamName) ?? writes[0];
        throw new WrongExpectedRevisionError(v.streamName, w.expected, typeof v.actualState === 'bigint' ? Number(v.actualState) : 'no_stream');
      }
      // Over the server's MaxAppendSize (the whole append, or one record): the port's one error for it.
      if (err instanceof TransactionMaxSizeExceededError || err instanceof AppendRecordSizeExceededError) throw new AppendTooLargeError(err.size, err.maxSize);
      if (err instanceof MaxAppendSizeExceededError) throw new AppendTooLargeError(undefined, err.maxAppendSize);
      if (err instanceof WrongExpectedVersionError) {
        const w = writes.find((x) => x.stream === err.streamName) ?? writes[0];
        const actual = typeof err.actualState === 'bigint' ? Number(err.actualState) : 'no_stream';
        throw new WrongExpectedRevisionError(err.streamName ?? w.stream, w.expected, actual);
      }
      const retry = retryableWrite(err);
      if (retry === NOT_LEADER && this.client === client && discovers(this.connectionString) && Date.now() - this.clientSince >= REPLACE_CLIENT_MIN_MS) {
        // The client reconnects only on the v1 protocol's not-leader answer; a new one asks the cluster for the leader
        // again (nodePreference=leader, the default) instead of sending every later append to this follower.
        // At most once a second: during an election a new client may land on a follower again.
        this.replaced.push(client);
        // Bounded: on a connection string that keeps landing on followers (nodePreference=follower) a client a second
        // would pile up. The oldest goes (a subscription still on it subscribes again, on the current client).
        while (this.replaced.length > REPLACED_KEPT) void this.replaced.shift()!.dispose().catch(() => undefined);
        this.client = KurrentDBClient.connectionString(this.connectionString);
        this.clientSince = Date.now();
      }
      if (retry) throw Object.assign(new Error(`the event store cannot take writes now: ${retry}`, { cause: err }), { code: EVENTSTORE_UNAVAILABLE });
      throw err;
    }
  }

  async readStream(stream: string, fromRevision = 0): Promise<RecordedEvent[]> {
    const out: RecordedEvent[] = [];
    try {
      for await (const resolved of this.client.readStream(stream, {
        fromRevision: fromRevision === 0 ? START : BigInt(fromRevision),
        direction: FORWARDS,
      })) {
        const e = toRecorded(resolved);
        if (e) out.push(e);
      }
    } catch (err) {
      if (err instanceof StreamNotFoundError) return [];
      throw err;
    }
    return out;
  }

  async readAll(after: bigint, limit: number): Promise<RecordedEvent[]> {
    const out: RecordedEvent[] = [];
    let from = after;
    // Filtered by the server (as the subscription is). Records we still skip (non-JSON, `$` streams) can fill a whole
    // server page: read on past them, since an empty answer means "end of the ledger" to every caller.
    for (;;) {
      let furthest = from;
      // One extra, since a read of $all includes the event at `from`.
      for await (const resolved of this.client.readAll({ fromPosition: from === 0n ? START : { commit: from, prepare: from }, direction: FORWARDS, maxCount: limit + 1, filter: excludeSystemEvents() })) {
        const at = positionOf(resolved);
        if (at > furthest) furthest = at;
        const e = toRecorded(resolved);
        if (!e || e.position <= from) continue;
        out.push(e);
        if (out.length === limit) return out;
      }
      if (out.length > 0 || furthest === from) return out;
      from = furthest;
    }
  }

  async readLast(before: bigint, limit: number): Promise<RecordedEvent[]> {
    const out: RecordedEvent[] = [];
    // Backwards from the end: `before` is near it (the World's position), and need not be a position of this store.
    for await (const resolved of this.client.readAll({ fromPosition: END, direction: BACKWARDS, filter: excludeSystemEvents() })) {
      const e = toRecorded(resolved);
      if (!e || e.position >= before) continue;
      out.push(e);
      if (out.length === limit) break;
    }
    return out.reverse();
  }

  /** The server sends whole events anyway. */
  subscribeAllLean(after: bigint, handler: LeanEventHandler, onError?: (err: unknown) => void): Subscription {
    return this.subscribeAll(after, handler, onError);
  }

  /**
   * Follows $all from `after`. A dropped connection (a leader change, a restart) subscribes again from the last event
   * delivered, with backoff, until closed: the World and the projectors must not freeze. A handler's own failure
   * stops it and is reported, as on the embedded store.
   */
  subscribeAll(after: bigint, handler: EventHandler, onError?: (err: unknown) => void): Subscription {
    const report = (err: unknown) => (onError ? onError(err) : console.error('subscription failed', err));
    let cursor = after;
    let closed = false;
    let current: { unsubscribe(): Promise<void> } | undefined;
    let wake: (() => void) | undefined;
    const done = (async () => {
      let backoffMs = RESUBSCRIBE_MIN_MS;
      while (!closed) {
        const subscription = this.client.subscribeToAll({
          fromPosition: cursor === 0n ? START : { commit: cursor, prepare: cursor },
          filter: excludeSystemEvents(),
        });
        current = subscription;
        const since = Date.now();
        let dropped: unknown;
        try {
          for await (const resolved of subscription) {
            if (closed) break;
            const e = toRecorded(resolved);
            if (!e || e.position <= cursor) continue;
            try {
              await handler(e);
            } catch (err) {
              report(err);
              return;
            }
            cursor = e.position;
            backoffMs = RESUBSCRIBE_MIN_MS;
          }
        } catch (err) {
          dropped = err;
        } finally {
          await subscription.unsubscribe().catch(() => undefined);
        }
        if (closed) return;
        // Up that long, it had recovered (an idle one delivers nothing to say so): this drop is a new one, not the
        // next failure of a retry, and must not wait out a backoff grown by drops long ago.
        if (Date.now() - since >= RESUBSCRIBE_MAX_MS) backoffMs = RESUBSCRIBE_MIN_MS;
        const why = dropped === undefined ? 'ended without being closed' : `dropped: ${String(dropped)}`;
        console.error(`subscription to $all ${why} (after position ${cursor}); subscribing again in ${backoffMs} ms`);
        // close() cuts the wait short (shutting down must not wait out a backoff of up to RESUBSCRIBE_MAX_MS), and so
        // does an append that lands.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, backoffMs);
          wake = () => (clearTimeout(timer), resolve());
          this.backingOff.add(wake);
        });
        this.backingOff.delete(wake!);
        wake = undefined;
        backoffMs = Math.min(backoffMs * 2, RESUBSCRIBE_MAX_MS);
      }
    })();
    return {
      close: async () => {
        closed = true;
        wake?.();
        await current?.unsubscribe().catch(() => undefined);
        await done;
      },
    };
  }

  async ping(): Promise<void> {
    // A cheap read that needs a live leader or follower.
    for await (const _ of this.client.readAll({ fromPosition: END, direction: 'backwards', maxCount: 1 })) break;
  }

  async close(): Promise<void> {
    await Promise.all([this.client, ...this.replaced].map((c) => c.dispose()));
  }
}

const NOT_LEADER = 'KurrentDB answered from a node that is not the leader';
const REPLACE_CLIENT_MIN_MS = 1000;
/** Replaced clients kept open for the calls still under way on them. */
const REPLACED_KEPT = 2;

/** Whether the client picks its node (gossip: several hosts, or +discover); a single host is all it can reach. */
export const discovers = (connectionString: string) => /^[a-z]+\+discover:\/\//i.test(connectionString) || /^[^?]*,/.test(connectionString);

// gRPC status codes: the client keeps them on its errors (`code`), and an append's raw transport error has only them.
const GRPC_CANCELLED = 1;
const GRPC_DEADLINE_EXCEEDED = 4;
const GRPC_FAILED_PRECONDITION = 9;
const GRPC_UNAVAILABLE = 14;

/**
 * Why KurrentDB did not take a write it may take if asked again (answered 503 with Retry-After); undefined for any
 * other failure. The client maps the multi-stream append's (v2) "not the leader" to UnknownError, and hands a
 * transport failure on as the raw gRPC error, so both are told by their gRPC status too.
 */
export function retryableWrite(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (err instanceof NotLeaderError || notLeaderNode(err)) return NOT_LEADER;
  if (err instanceof UnavailableError || code === GRPC_UNAVAILABLE) return 'KurrentDB is unreachable, not ready or overloaded';
  if (err instanceof DeadlineExceededError || code === GRPC_DEADLINE_EXCEEDED) {
    return 'KurrentDB did not confirm the write in time (it may still have been made)';
  }
  if (err instanceof CancelledError || code === GRPC_CANCELLED) return 'KurrentDB cancelled the write (shutting down?)';
  // Gossip found no node to talk to (an election under way, every node down): the client throws a plain Error.
  if (err instanceof Error && /^Failed to discover after \d+ attempts/.test(err.message)) return 'KurrentDB has no reachable leader (cluster discovery failed)';
  return undefined;
}

/** KurrentDB's v2 answer from a follower: FAILED_PRECONDITION with NotLeaderNodeErrorDetails (KurrentDB ApiErrors.NotLeaderNode). */
function notLeaderNode(err: unknown): boolean {
  const raw = err instanceof UnknownError ? err._raw : err;
  const e = raw as { code?: unknown; metadata?: { get?: unknown } } | undefined;
  if (e?.code !== GRPC_FAILED_PRECONDITION || typeof e.metadata?.get !== 'function') return false;
  return getGrpcStatusDetails(e as never)?.typeUrl.endsWith('.NotLeaderNodeErrorDetails') ?? false;
}

function positionOf(resolved: ResolvedEvent | AllStreamResolvedEvent): bigint {
  return resolved.event?.position?.commit ?? resolved.commitPosition ?? 0n;
}

/** Duffy's events only: never a `$` (system) stream's, never a non-JSON one, read the same way by every path. */
function toRecorded(resolved: ResolvedEvent | AllStreamResolvedEvent): RecordedEvent | undefined {
  const e = resolved.event;
  if (!e || !e.isJson || e.streamId.startsWith('$')) return undefined;
  return {
    id: e.id,
    stream: e.streamId,
    revision: Number(e.revision),
    position: positionOf(resolved),
    type: e.type,
    data: e.data as Record<string, unknown>,
    metadata: decodeMetadata(e.metadata),
  };
}

function decodeMetadata(raw: unknown): EventMetadata {
  const m = (raw ?? {}) as Record<string, unknown>;
  return typeof m[METADATA_KEY] === 'string' ? (JSON.parse(m[METADATA_KEY] as string) as EventMetadata) : (m as EventMetadata);
}
