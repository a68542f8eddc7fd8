import 'reflect-metadata';
import { Logger, ValidationPipe } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { Logger as PinoLogger } from 'nestjs-pino';
import { AppModule } from './app.module.js';
import { ConfigError, type Settings, describeValidation, loadSettings } from './config/config.js';
import { type EventStore } from './application/ports/event-store.port.js';
import { Bootstrap } from './application/bootstrap.service.js';
import { DomainError } from './domain/errors.js';

/** Builds the whole app; tests call this with their own settings and port 0. */
export async function createApp(settings: Settings, options: { store?: EventStore; logger?: false; reconcileEveryMs?: number } = {}) {
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(settings, options.store), {
    bufferLogs: options.logger !== false,
    logger: options.logger === false ? false : undefined,
    bodyParser: false,
  });
  // Structured JSON logs (pino), with the request id of each HTTP request.
  if (options.logger !== false) app.useLogger(app.get(PinoLogger));
  // 1 MB is far above any real request and keeps a hostile body from costing memory.
  app.useBodyParser('json', { limit: '1mb', strict: false });
  // API answers change with every call: an ETag per response is a hash of every body for nothing.
  app.set('etag', false);
  app.disable('x-powered-by');
  app.setGlobalPrefix('api/v1', { exclude: ['Node/get', 'Node/done', 'Node/fail', 'Inventory', 'health', 'metrics', 'ops'] });
  app.useGlobalPipes(
    new ValidationPipe({
      whitelist: true,
      stopAtFirstError: true,
      transform: true,
      validationError: { target: false },
      exceptionFactory: (errors) =>
        new DomainError('invalid', describeValidation(errors).join('; ') || 'invalid request body'),
    }),
  );
  const openapi = new DocumentBuilder()
    .setTitle('Duffy')
    .setDescription('Machines for CI on an event-sourced ledger: the Duffy v3 API, cico legacy calls, ops endpoints')
    .setVersion('1')
    .addBasicAuth({ type: 'http', scheme: 'basic', description: 'tenant name and API key' }, 'tenant')
    .addSecurityRequirements('tenant')
    .build();
  SwaggerModule.setup('api/docs', app, () => SwaggerModule.createDocument(app, openapi));
  app.enableShutdownHooks();
  await app.init();
  const boot = await app.get(Bootstrap).run({ reconcileEveryMs: options.reconcileEveryMs });
  return { app, adminKey: boot.adminKey };
}

async function main() {
  let settings: Settings;
  try {
    settings = loadSettings();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`duffy: bad configuration: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const { app } = await createApp(settings);
  await app.listen(settings.port);
  new Logger('Duffy').log(`listening on :${settings.port}, ledger ${settings.eventStoreUrl ?? settings.dataDir + '/ledger.sqlite'}, config ${settings.configFile}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    console.error('duffy: failed to start:', err);
    process.exit(1);
  });
}
