import {
  ANY,
  END,
  EventStoreDBClient,
  FORWARDS,
  NO_STREAM,
  START,
  StreamNotFoundError,
  WrongExpectedVersionError,
  excludeSystemEvents,
  jsonEvent,
  type AllStreamResolvedEvent,
  type ResolvedEvent,
} from '@eventstore/db-client';
import {
  type AppendResult,
  type EventHandler,
  type EventMetadata,
  type EventStore,
  type ExpectedRevision,
  type NewEvent,
  type RecordedEvent,
  type Subscription,
  WrongExpectedRevisionError,
} from './event-store.port.js';

/**
 * Production ledger on EventStoreDB (single node or cluster: the connection string decides).
 * Our global position is the commit position; reading from it skips events at or before it.
 */
export class EsdbEventStore implements EventStore {
  readonly singleWriter = false;
  private readonly client: EventStoreDBClient;

  constructor(connectionString: string) {
    this.client = EventStoreDBClient.connectionString(connectionString);
  }

  async append(stream: string, events: NewEvent[], expected: ExpectedRevision): Promise<AppendResult> {
    try {
      const result = await this.client.appendToStream(
        stream,
        events.map((e) => jsonEvent({ type: e.type, data: e.data as never, metadata: (e.metadata ?? {}) as never })),
        { expectedRevision: expected === 'any' ? ANY : expected === 'no_stream' ? NO_STREAM : BigInt(expected) },
      );
      return {
        nextExpectedRevision: Number(result.nextExpectedRevision),
        position: result.position?.commit ?? 0n,
      };
    } catch (err) {
      if (err instanceof WrongExpectedVersionError) {
        const actual = typeof err.actualVersion === 'bigint' ? Number(err.actualVersion) : 'no_stream';
        throw new WrongExpectedRevisionError(stream, expected, actual);
      }
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
    const from = after === 0n ? START : { commit: after, prepare: after };
    // One extra, since ESDB includes the event at `from`.
    for await (const resolved of this.client.readAll({ fromPosition: from, direction: FORWARDS, maxCount: limit + 1 })) {
      const e = toRecorded(resolved);
      if (!e || e.position <= after || e.stream.startsWith('$')) continue;
      out.push(e);
      if (out.length === limit) break;
    }
    return out;
  }

  subscribeAll(after: bigint, handler: EventHandler, onError?: (err: unknown) => void): Subscription {
    const subscription = this.client.subscribeToAll({
      fromPosition: after === 0n ? START : { commit: after, prepare: after },
      filter: excludeSystemEvents(),
    });
    const done = (async () => {
      for await (const resolved of subscription) {
        const e = toRecorded(resolved);
        if (!e || e.position <= after) continue;
        await handler(e);
      }
    })().catch((err) => (onError ? onError(err) : console.error('subscription failed', err)));
    return {
      close: async () => {
        await subscription.unsubscribe();
        await done;
      },
    };
  }

  async ping(): Promise<void> {
    // A cheap read that needs a live leader or follower.
    for await (const _ of this.client.readAll({ fromPosition: END, direction: 'backwards', maxCount: 1 })) break;
  }

  async close(): Promise<void> {
    await this.client.dispose();
  }
}

function toRecorded(resolved: ResolvedEvent | AllStreamResolvedEvent): RecordedEvent | undefined {
  const e = resolved.event;
  if (!e || !e.isJson) return undefined;
  return {
    id: e.id,
    stream: e.streamId,
    revision: Number(e.revision),
    position: e.position?.commit ?? resolved.commitPosition ?? 0n,
    type: e.type,
    data: e.data as Record<string, unknown>,
    metadata: (e.metadata ?? {}) as EventMetadata,
  };
}
