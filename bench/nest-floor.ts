/**
 * P1's second yardstick: Duffy's HTTP pipeline with nothing behind it. The same Nest app shape (Express adapter,
 * body parser with the depth check and null reviver, IdParamsPipe, the strict ValidationPipe over the real DTOs,
 * the request log line and the metrics middleware), controllers that answer at once. What Duffy costs above this is
 * Duffy's own; what this costs above bare Express is the framework's.
 */
import 'reflect-metadata';
import { Body, type CanActivate, Controller, HttpCode, Injectable, type MiddlewareConsumer, Module, type NestModule, Param, Post, Put, UseGuards, ValidationPipe } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication, NestExpressBodyParserOptionsFor } from '@nestjs/platform-express';
import pino from 'pino';
import { IdParamsPipe, checkJsonDepth, reviveJsonBody, emptyBodyIsNone, logSettings, requestLogging, validationFailed } from '../src/http/input.js';
import { SessionCreateDto, SessionUpdateDto } from '../src/http/dto.js';
import { Metrics } from '../src/adapters/metrics.js';
import { HttpMetricsMiddleware } from '../src/http/ops/metrics.controller.js';

@Injectable()
class AnyoneGuard implements CanActivate {
  canActivate(): boolean {
    return true;
  }
}

let next = 0;

@Controller('sessions')
@UseGuards(AnyoneGuard)
class FloorController {
  @Post()
  @HttpCode(201)
  create(@Body() body: SessionCreateDto) {
    return { action: 'post', session: { id: ++next, specs: body.nodes_specs.length } };
  }

  @Put(':id')
  update(@Param('id') id: number, @Body() body: SessionUpdateDto) {
    return { action: 'put', session: { id, active: body.active ?? true } };
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
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void app.close().then(() => process.exit(0)));
