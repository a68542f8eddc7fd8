import { Controller, Get, Query, UseGuards } from '@nestjs/common';
import { ApiQuery } from '@nestjs/swagger';
import { ApiRefusals } from '../openapi.js';
import { BasicAuthGuard, CurrentActor } from '../auth.js';
import type { RecordedEvent } from '../../application/ports/event-store.port.js';
import type { Actor } from '../../application/commands.js';
import { refuse } from '../../domain/errors.js';
import { Ledger } from '../../application/ledger.service.js';

/** The most `GET /events` hands out. */
const RECENT_EVENTS = 200;

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

/**
 * Duffy-only, admin: the newest ledger events the World has folded, newest first, for the ops page. Read from the
 * store when asked (by its position index on the embedded file, backwards from the end on KurrentDB), not kept from
 * the live events: a handler on the EventBus cost every request some 3 KB of allocations (Nest's mergeMap per event
 * per handler) for a page polled every few seconds.
 */
@Controller('events')
@UseGuards(BasicAuthGuard)
export class EventsController {
  constructor(private readonly ledger: Ledger) {}

  @ApiQuery({ name: 'limit', required: false, type: 'integer', description: `1 to ${RECENT_EVENTS}` })
  @ApiRefusals(422)
  @Get()
  async list(@CurrentActor() actor: Actor, @Query('limit') limit?: unknown) {
    if (!actor.tenant.isAdmin) refuse('forbidden', 'only admins may read the event log');
    const events = await this.ledger.store.readLast(this.ledger.world.position + 1n, parseLimit(limit));
    return { action: 'get', events: events.reverse().map(eventView) };
  }
}
