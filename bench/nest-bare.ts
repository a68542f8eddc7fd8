/**
 * P1's third yardstick: Nest itself (the card's Express adapter, Nest's default JSON body parser) with the same two
 * routes answering at once, and nothing else: no validation, no request log line, no metrics, no guard. Beside
 * nest-floor.ts it shows what the framework costs and what Duffy's request pipeline adds to it.
 */
import 'reflect-metadata';
import { Body, Controller, HttpCode, Module, Param, Post, Put } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';

let next = 0;

@Controller('sessions')
class BareController {
  @Post()
  @HttpCode(201)
  create(@Body() body: { nodes_specs: unknown[] }) {
    return { action: 'post', session: { id: ++next, specs: body.nodes_specs.length } };
  }

  @Put(':id')
  update(@Param('id') id: string, @Body() body: { active?: boolean }) {
    return { action: 'put', session: { id: Number(id), active: body.active ?? true } };
  }
}

@Module({ controllers: [BareController] })
class BareModule {}

const app = await NestFactory.create<NestExpressApplication>(BareModule, { logger: false });
app.set('etag', false);
app.disable('x-powered-by');
app.setGlobalPrefix('api/v1');
await app.listen(Number(process.env.PORT ?? 0), '127.0.0.1');
console.log(`listening ${(app.getHttpServer().address() as { port: number }).port}`);
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void app.close().then(() => process.exit(0)));
