import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, Logger, NotFoundException } from '@nestjs/common';
import type { Request, Response } from 'express';
import { FaultLog, storageFault } from '../application/ports/storage-fault.port.js';
import { DomainError } from '../domain/errors.js';
import { BODY_TOO_LARGE, requestIdOf } from './input.js';
import { answerUnmatched } from './unmatched.js';
import { STATUS_OF_KIND, markRefusal } from './refusal.js';


/** Every error leaves as `{"detail": "..."}` (Duffy v3); nothing internal leaks, nothing is a bare 500 page. */
@Catch()
export class ErrorsFilter implements ExceptionFilter {
  private readonly log = new Logger('HTTP');
  /** A storage fault's answers: one line per interval, not per request. */
  private readonly faults = new FaultLog(this.log);

  catch(error: unknown, host: ArgumentsHost): void {
    const res = host.switchToHttp().getResponse<Response>();
    if (res.headersSent) return;
    // res.json keeps a type the handler set before it refused (/ops: text/html): every refusal is JSON.
    res.setHeader('Content-Type', 'application/json; charset=utf-8');
    // Nest's own answer for a path no route took under /api/v1: the same 404 or 405 as everywhere else.
    if (error instanceof NotFoundException) {
      const req = host.switchToHttp().getRequest<Request>();
      if (error.message === `Cannot ${req.method} ${req.originalUrl}`) {
        answerUnmatched(req.app, req, res);
        return;
      }
    }
    // The legacy API has its own error shape (`{"msg": ...}`), which cico expects; /health keeps terminus's report.
    const body = error instanceof HttpException ? error.getResponse() : undefined;
    if (body && typeof body === 'object' && ('msg' in body || 'details' in body)) {
      markRefusal(res, (error as HttpException).getStatus());
      res.status((error as HttpException).getStatus()).json(body);
      return;
    }
    const [status, detail] = describe(error);
    // A 503 for a storage fault (a full disk fails every write, and the reads behind them, alike): once per interval.
    if (status === 503 && storageFault(error)) this.faults.storageFault(`503 ${detail}`);
    // A 503 Duffy decided on (a hand-over that could not finish, a stop) is an answer, not a fault: no stack.
    else if (status >= 500 && error instanceof DomainError) this.log.warn(requestOf(host), `${status} ${detail}`);
    else if (status >= 500) this.log.error(requestOf(host), error instanceof Error ? (error.stack ?? error.message) : String(error));
    markRefusal(res, status, error instanceof DomainError ? error.kind : undefined);
    if (status === 401) res.setHeader('WWW-Authenticate', 'Basic realm="duffy"');
    if (status === 503) res.setHeader('Retry-After', '60');
    res.status(status).json({ detail });
  }

}

/** The request's id, as its access line names it (`req.id`): with many requests at once, the only way to join the two lines. */
function requestOf(host: ArgumentsHost): { req: { id: string } } {
  return { req: { id: requestIdOf(host.switchToHttp().getRequest<Request>() as never) } };
}

export function describe(error: unknown): [number, string] {
  if (error instanceof DomainError) return [STATUS_OF_KIND[error.kind], error.message];
  // Nest hands body-parser's errors on wrapped in an HttpException; their own type says what was wrong.
  const parser = bodyParserError(error instanceof HttpException ? error.cause : error);
  if (parser) return parser;
  if (error instanceof HttpException) {
    const body = error.getResponse();
    if (typeof body === 'string') return [error.getStatus(), body];
    const b = body as { detail?: unknown; message?: unknown };
    const detail = b.detail ?? b.message ?? error.message;
    return [error.getStatus(), Array.isArray(detail) ? detail.join('; ') : String(detail)];
  }
  // A write the store cannot make is Duffy's trouble, not the client's, and it passes: 503 with Retry-After.
  const fault = storageFault(error);
  if (fault) return [503, `Duffy cannot write its data: ${fault.what} (${fault.code}); try again later`];
  return [500, 'internal error: see the server log'];
}

/** An error raised by body-parser (it carries its own 4xx status and a type), as status and detail. */
function bodyParserError(error: unknown): [number, string] | undefined {
  const e = error as { status?: number; type?: string; message?: string; charset?: string } | undefined;
  if (typeof e?.status !== 'number' || e.status < 400 || e.status >= 500) return undefined;
  if (e.type === 'entity.parse.failed') return [400, `malformed JSON body: ${e.message}`];
  if (e.type === 'entity.too.large') return [413, BODY_TOO_LARGE];
  // A charset it cannot decode: refused as checkJsonDepth refuses the ones it can (body-parser says `unsupported charset "X"`).
  if (e.type === 'charset.unsupported') return [415, `JSON bodies must be UTF-8, not ${e.charset}`];
  return [e.status, e.message ?? 'bad request'];
}
