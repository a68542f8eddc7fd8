import { Injectable, type OnModuleDestroy } from '@nestjs/common';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { answerDetail } from './input.js';

/**
 * Set at the first step of a stop (Nest's destroy hooks run before its callers are let go and before the HTTP server
 * closes). The server's close only drops connections idle at that instant: a client that sends its next call as soon
 * as an answer comes keeps its connection busy, and was served as if nothing stopped, a request that joined the queue
 * then holding the stop for its whole wait.
 */
@Injectable()
export class Stopping implements OnModuleDestroy {
  now = false;

  onModuleDestroy(): void {
    this.now = true;
  }
}

/**
 * Express middleware: once the stop began, every request is answered 503 and its connection closed; but cico's
 * legacy calls, which cico cannot read a `{"detail"}` from (it retries on their own failure answers, which a stop gives).
 */
export function refuseWhileStopping(stopping: Stopping) {
  return (req: IncomingMessage, res: ServerResponse, next: () => void): void => {
    if (!stopping.now) return next();
    res.setHeader('Connection', 'close');
    if (/^\/(Node\/|Inventory\b)/.test(req.url ?? '')) return next();
    res.setHeader('Retry-After', '60');
    answerDetail(res, 503, 'Duffy is stopping; ask again');
  };
}
