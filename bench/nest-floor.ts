/**
 * P1's second yardstick: Duffy's HTTP pipeline with nothing behind it. The same Nest app shape (Express adapter,
 * body parser with the depth check and null reviver, IdParamsPipe, the strict ValidationPipe over the real DTOs,
 * the request log line and the metrics middleware), controllers that answer at once. What Duffy costs above this is
 * Duffy's own; what this costs above bare Express is the framework's.
 *
 * With FLOOR_LEDGER (a file), each answer waits first for the embedded ledger's durable append (the real adapter:
 * writer thread, group commit, synchronous=FULL) of the events Duffy writes for it: a request's MachineRequested,
 * QuotaClaimed, MachineReserved and SessionStarted, a release's SessionReleased, MachineReleased, QuotaReturned and
 * MachineRecycled, over the same three streams, with metadata of the same size. No decision, chain, World or read
 * side: what the stack and durability alone cost.
 */
import 'reflect-metadata';
import { Body, type CanActivate, Controller, HttpCode, Injectable, type MiddlewareConsumer, Module, type NestModule, Param, Post, Put, UseGuards, ValidationPipe } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication, NestExpressBodyParserOptionsFor } from '@nestjs/platform-express';
import pino from 'pino';
import { randomUUID } from 'node:crypto';
import { IdParamsPipe, checkJsonDepth, reviveJsonBody, emptyBodyIsNone, logSettings, requestLogging, validationFailed } from '../src/http/input.js';
import { SessionCreateDto, SessionUpdateDto } from '../src/http/dto.js';
import { Metrics } from '../src/adapters/metrics.js';
import { HttpMetricsMiddleware } from '../src/http/ops/metrics.controller.js';
import { SqliteEventStore } from '../src/adapters/eventstore/sqlite-event-store.js';
import type { NewEvent } from '../src/application/ports/event-store.port.js';

@Injectable()
class AnyoneGuard implements CanActivate {
  canActivate(): boolean {
    return true;
  }
}

let next = 0;

const ledger = process.env.FLOOR_LEDGER ? new SqliteEventStore(process.env.FLOOR_LEDGER) : undefined;
// Chain fields as long as Duffy's (two SHA-256 in hex): the bytes written, not their computing.
const HASH = 'f'.repeat(64);

/** The events of a request (or a release) of session `id`, as Duffy appends them: one call, three streams. */
async function append(store: SqliteEventStore, id: number, release: boolean): Promise<void> {
  // One time and one correlation id per append, as Duffy stamps its decision's events.
  const at = new Date().toISOString();
  const correlationId = randomUUID();
  const event = (type: string, data: object): NewEvent => ({ type, data: { ...data, at }, metadata: { correlationId, actor: 'bench-0', at, prevHash: HASH, hash: HASH } });
  const machineId = id % 200;
  const [session, machine, quota] = release
    ? [[event('SessionReleased', { sessionId: id, reason: 'done' })], [event('MachineReleased', { machineId, sessionId: id, reason: 'done' }), event('MachineRecycled', { machineId, policy: 'reuse', state: 'ready' })], [event('QuotaReturned', { tenantId: 1, sessionId: id, count: 1 })]]
    : [
        [event('MachineRequested', { sessionId: id, tenantId: 1, tenant: 'bench-0', specs: [{ type: 'baremetal', arch: 'x86_64', quantity: 1 }], expiresAt: at }), event('SessionStarted', { sessionId: id, machineIds: [machineId] })],
        [event('MachineReserved', { machineId, hostname: `bench-${machineId}.test`, sessionId: id, tenantId: 1, pool: 'metal-bench', platform: 'intel', affinity: 'kept', contextualize: false })],
        [event('QuotaClaimed', { tenantId: 1, sessionId: id, count: 1 })],
      ];
  await store.append([
    { stream: `session-${id}`, expected: 'any', events: session },
    { stream: `machine-m${machineId}`, expected: 'any', events: machine },
    { stream: 'tenant-bench-0', expected: 'any', events: quota },
  ]);
}

@Controller('sessions')
@UseGuards(AnyoneGuard)
class FloorController {
  @Post()
  @HttpCode(201)
  create(@Body() body: SessionCreateDto) {
    const id = ++next;
    const answer = { action: 'post', session: { id, specs: body.nodes_specs.length } };
    // Without the ledger, answered in the same turn, as before the ledger was an option.
    return ledger ? append(ledger, id, false).then(() => answer) : answer;
  }

  @Put(':id')
  update(@Param('id') id: number, @Body() body: SessionUpdateDto) {
    const answer = { action: 'put', session: { id, active: body.active ?? true } };
    return ledger ? append(ledger, id, true).then(() => answer) : answer;
  }
}

@Module({ controllers: [FloorController], providers: [AnyoneGuard, { provide: Metrics, useValue: { http: { inc() {} } } }] })
class FloorModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(requestLogging(pino({ ...logSettings, level: 'info' }, pino.destination('/dev/null'))), HttpMetricsMiddleware).forRoutes('*path');
  }
}

const app = await NestFactory.create<NestExpressApplication>(FloorModule, { logger: false, bodyParser: false });
app.useBodyParser('json', { limit: '1mb', strict: false, verify: checkJsonDepth, reviver: reviveJsonBody } as NestExpressBodyParserOptionsFor<'json'>);
app.use(emptyBodyIsNone);
app.set('etag', false);
app.disable('x-powered-by');
app.setGlobalPrefix('api/v1');
app.useGlobalPipes(
  new IdParamsPipe(),
  new ValidationPipe({ whitelist: true, forbidNonWhitelisted: true, forbidUnknownValues: true, stopAtFirstError: true, transform: true, validationError: { target: false, value: true }, exceptionFactory: validationFailed }),
);
await app.listen(Number(process.env.PORT ?? 0), '127.0.0.1');
console.log(`listening ${(app.getHttpServer().address() as { port: number }).port}`);
// A clean exit on a signal, so `--cpu-prof` can write its profile.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void app.close().then(() => ledger?.close()).then(() => process.exit(0)));
