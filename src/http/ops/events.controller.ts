import { Controller, Get, Injectable, Logger, Query, UseGuards } from '@nestjs/common';
import { ApiQuery } from '@nestjs/swagger';
import { ApiRefusals } from '../openapi.js';
import { EventsHandler, type IEventHandler } from '@nestjs/cqrs';
import { BasicAuthGuard, CurrentActor } from '../auth.js';
import type { RecordedEvent } from '../../application/ports/event-store.port.js';
import type { Actor } from '../../application/commands.js';
import { refuse } from '../../domain/errors.js';
import { Ledger, LedgerEvent } from '../../application/ledger.service.js';

/** How many of the newest ledger events are kept in memory, and the most `GET /events` hands out. */
const RECENT_EVENTS = 200;

/**
 * The newest ledger events, kept in a ring buffer as the Ledger delivers them, so the ops page can show
 * recent activity without reading the ledger on every poll.
 *
 * The Ledger folds the events that were already stored at start-up without publishing them; so that a
 * restarted server does not show an empty list, the first read that finds the buffer short fills it once
 * from the store (one pass up to the oldest event the buffer holds; never again afterwards).
 */
@Injectable()
@EventsHandler(LedgerEvent)
export class RecentEvents implements IEventHandler<LedgerEvent> {
  private readonly log = new Logger('RecentEvents');
  /** Oldest first, ascending position, at most RECENT_EVENTS long. */
  private buffer: RecordedEvent[] = [];
  private backfill?: Promise<void>;

  constructor(private readonly ledger: Ledger) {}

  handle({ event }: LedgerEvent): void {
    const last = this.buffer[this.buffer.length - 1];
    if (last && event.position <= last.position) return; // delivered in ledger order; a repeat is ignored
    this.buffer.push(event);
    if (this.buffer.length > RECENT_EVENTS) this.buffer.splice(0, this.buffer.length - RECENT_EVENTS);
  }

  /** The newest `limit` events, newest first. */
  async newest(limit: number): Promise<RecordedEvent[]> {
    if (this.buffer.length < RECENT_EVENTS) await this.backfilled();
    return this.buffer.slice(-limit).reverse();
  }

  private backfilled(): Promise<void> {
    this.backfill ??= this.readOlder().catch((err) => {
      this.log.warn(`could not read older events from the ledger: ${String(err)}`);
      this.backfill = undefined; // try again on the next read; meanwhile serve what arrived live
    });
    return this.backfill;
  }

  /**
   * Everything before the oldest buffered event was either folded at start-up or published before we listened.
   * The newest of them only: from the store's index where it has one (the embedded file), else read forwards from
   * the first event (the whole history: a store without `readLast`).
   */
  private async readOlder(): Promise<void> {
    const before = this.buffer[0]?.position ?? this.ledger.world.position + 1n;
    const older: RecordedEvent[] = [];
    if (this.ledger.store.readLast) {
      older.push(...(await this.ledger.store.readLast(before, RECENT_EVENTS)));
    } else {
      for (let after = 0n; ; ) {
        const page = await this.ledger.store.readAll(after, 1000);
        if (page.length === 0) break;
        for (const e of page) if (e.position < before) older.push(e);
        if (older.length > RECENT_EVENTS) older.splice(0, older.length - RECENT_EVENTS);
        after = page[page.length - 1].position;
        if (after >= before) break;
      }
    }
    this.buffer = [...older, ...this.buffer.filter((e) => e.position >= before)].slice(-RECENT_EVENTS);
  }
}

function eventView(e: RecordedEvent) {
  const at = e.metadata.at ?? (e.data as { at?: unknown }).at;
  return {
    position: e.position.toString(),
    stream: e.stream,
    revision: e.revision,
    type: e.type,
    at: typeof at === 'string' ? at : null,
    actor: typeof e.metadata.actor === 'string' ? e.metadata.actor : null,
  };
}

function parseLimit(raw: unknown): number {
  if (raw === undefined) return 50;
  const text = typeof raw === 'string' ? raw : '';
  const n = /^[0-9]{1,4}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= RECENT_EVENTS)) refuse('invalid', `limit must be an integer from 1 to ${RECENT_EVENTS}, got ${JSON.stringify(raw).slice(0, 40)}`);
  return n;
}

/** Duffy-only, admin: the newest ledger events, for the ops page. */
@Controller('events')
@UseGuards(BasicAuthGuard)
export class EventsController {
  constructor(private readonly recent: RecentEvents) {}

  @ApiQuery({ name: 'limit', required: false, type: 'integer', description: `1 to ${RECENT_EVENTS}` })
  @ApiRefusals(422)
  @Get()
  async list(@CurrentActor() actor: Actor, @Query('limit') limit?: unknown) {
    if (!actor.tenant.isAdmin) refuse('forbidden', 'only admins may read the event log');
    const events = await this.recent.newest(parseLimit(limit));
    return { action: 'get', events: events.map(eventView) };
  }
}
