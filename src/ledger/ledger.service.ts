import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { EventBus } from '@nestjs/cqrs';
import { randomUUID } from 'node:crypto';
import {
  type AppendResult,
  EVENT_STORE,
  type EventMetadata,
  type EventStore,
  type RecordedEvent,
  type Subscription,
  WrongExpectedRevisionError,
} from '../eventstore/event-store.port.js';
import { GENESIS, eventHash } from '../audit/chain.js';
import { type Write } from './decide.js';
import { type DuffyEvent, stream } from './events.js';
import { type World, emptyWorld, evolve } from './world.js';

/** Published on the CQRS EventBus for every event the ledger delivers, in ledger order. */
export class LedgerEvent {
  constructor(readonly event: RecordedEvent) {}
}

export type WriteOutcome = { ok: true; write: Write; result: AppendResult } | { ok: false; write: Write; error: unknown };

/**
 * Owns the World: folds the whole ledger at start, then follows it live through one subscription,
 * the only path by which events reach the World (so nothing is applied twice).
 */
@Injectable()
export class Ledger implements OnApplicationShutdown {
  readonly world: World = emptyWorld();
  private subscription?: Subscription;
  private waiters: Array<{ ready: () => boolean; resolve: () => void }> = [];
  /** Last hash per chained stream: the predecessor of the next append (see src/audit/chain.ts). */
  private readonly heads = new Map<string, string>();
  private readonly log = new Logger('Ledger');
  failure: unknown;

  constructor(
    @Inject(EVENT_STORE) readonly store: EventStore,
    private readonly eventBus: EventBus,
  ) {}

  async start(): Promise<void> {
    for (;;) {
      const page = await this.store.readAll(this.world.position, 5000);
      if (page.length === 0) break;
      for (const e of page) {
        evolve(this.world, e as RecordedEvent & DuffyEvent);
        this.noteHead(e);
      }
    }
    this.subscription = this.store.subscribeAll(
      this.world.position,
      (e) => this.apply(e),
      (err) => {
        this.failure = err;
        this.log.error(`ledger subscription stopped: ${String(err)}`);
      },
    );
  }

  private noteHead(e: RecordedEvent): void {
    if (typeof e.metadata.hash === 'string') this.heads.set(e.stream, e.metadata.hash);
  }

  private apply(e: RecordedEvent): void {
    evolve(this.world, e as RecordedEvent & DuffyEvent);
    this.noteHead(e);
    if (this.waiters.length > 0) {
      this.waiters = this.waiters.filter((w) => (w.ready() ? (w.resolve(), false) : true));
    }
    this.eventBus.publish(new LedgerEvent(e));
  }

  /** Resolves once the World satisfies `ready` (checked after every applied event), or rejects after the timeout. */
  until(ready: () => boolean, timeoutMs = 10_000): Promise<void> {
    if (ready()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error('the ledger did not catch up in time'));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.waiters.push({ ready, resolve: done });
    });
  }

  /** Appends the writes concurrently (one group commit on the embedded store) and waits until the World shows them. */
  async commit(writes: Write[], meta: EventMetadata): Promise<WriteOutcome[]> {
    const metadata = { correlationId: meta.correlationId ?? randomUUID(), ...meta };
    const settled = await Promise.allSettled(writes.map((w) => this.store.append(w.stream, this.chained(w, metadata), w.expected)));
    const outcomes: WriteOutcome[] = settled.map((s, i) =>
      s.status === 'fulfilled' ? { ok: true, write: writes[i], result: s.value } : { ok: false, write: writes[i], error: s.reason },
    );
    const last = outcomes.reduce((p, o) => (o.ok && o.result.position > p ? o.result.position : p), 0n);
    await this.until(() => this.world.position >= last);
    for (const o of outcomes) if (!o.ok && !(o.error instanceof WrongExpectedRevisionError)) throw o.error;
    return outcomes;
  }

  /**
   * Links each event to its stream's previous one. A write guarded by a revision knows its predecessor: if the
   * World is behind, the append fails on that revision anyway, and the retry chains again.
   */
  private chained(w: Write, metadata: EventMetadata): Array<{ type: string; data: object; metadata: EventMetadata }> {
    if (w.expected === 'any') return w.events.map((e) => ({ ...e, metadata }));
    let prev = w.expected === 'no_stream' ? GENESIS : (this.heads.get(w.stream) ?? GENESIS);
    let revision = w.expected === 'no_stream' ? -1 : w.expected;
    return w.events.map((e) => {
      revision += 1;
      const hash = eventHash(prev, { stream: w.stream, revision, type: e.type, data: e.data, metadata });
      const linked = { ...e, metadata: { ...metadata, prevHash: prev, hash } };
      prev = hash;
      return linked;
    });
  }

  /** Commit, and on a revision conflict decide again on the caught-up World (bounded). */
  async decideAndCommit(decide: (world: World) => Write[], meta: EventMetadata, attempts = 8): Promise<WriteOutcome[]> {
    for (let attempt = 1; ; attempt++) {
      const writes = decide(this.world);
      if (writes.length === 0) return [];
      const outcomes = await this.commit(writes, meta);
      const conflicts = outcomes.filter((o) => !o.ok);
      if (conflicts.length === 0 || attempt >= attempts) return outcomes;
      await this.catchUp();
    }
  }

  /** After a conflict another writer got there first: wait until everything in the store is in the World. */
  async catchUp(): Promise<void> {
    const target = await this.headPosition();
    await this.until(() => this.world.position >= target);
  }

  private async headPosition(): Promise<bigint> {
    let position = this.world.position;
    for (;;) {
      const page = await this.store.readAll(position, 1000);
      if (page.length === 0) return position;
      position = page[page.length - 1].position;
    }
  }

  /** Integer ids for tenants and machines: the revision of an IdAllocated event in ids-<kind>, plus one. */
  async nextId(kind: 'tenant' | 'machine'): Promise<number> {
    const r = await this.store.append(stream.ids(kind), [{ type: 'IdAllocated', data: { kind } }], 'any');
    return r.nextExpectedRevision + 1;
  }

  async onApplicationShutdown(): Promise<void> {
    await this.subscription?.close();
    await this.store.close();
  }
}
