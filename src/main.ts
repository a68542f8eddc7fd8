import 'reflect-metadata';
import { Logger, ValidationPipe } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { NestExpressApplication, NestExpressBodyParserOptionsFor } from '@nestjs/platform-express';
import type { Request, Response } from 'express';
import { Logger as PinoLogger, PinoLogger as Pino } from 'nestjs-pino';
import { Metrics } from './adapters/metrics.js';
import { AppModule, observeRequests } from './app.module.js';
import { ConfigError, REQUEST_TIMEOUT_SECONDS, type Settings, dataDirOf, loadSettings, maxConnectionsOf } from './config/config.js';
import { type IncomingMessage, type Server as HttpServer, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { answerUnmatched } from './http/unmatched.js';
import { Stopping, refuseWhileStopping } from './http/stopping.js';
import { IdParamsPipe, MAX_BODY_BYTES, answerDetail, bodyDeclaredTooLarge, checkJsonDepth, requireHost, reviveJsonBody, emptyBodyIsNone, isJsonBody, refuseCrossSiteWrites, refuseOversizedBodies, refuseUnreadBodies, validationFailed } from './http/input.js';
import { type EventStore } from './application/ports/event-store.port.js';
import { DataDirLockedError, DataDirNotWritableError, LEDGER_FILE, RestoreUnfinishedError, assertDataDirFree, assertNoRestoreUnfinished, assertDataDirWritable, dataDirOpenToOthers } from './adapters/eventstore/data-dir-lock.js';
import { LedgerDamagedError, assertLedgerReadable, assertNotBehindHead } from './adapters/eventstore/sqlite-event-store.js';
import { UnknownEventTypeError } from './application/ledger.service.js';
import { retryableWrite } from './adapters/eventstore/kurrentdb-event-store.js';
import { storageFault } from './application/ports/storage-fault.port.js';
import { isLegacyLedger } from './adapters/eventstore/legacy-ledger.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { assertAdminKey } from './application/catalog.js';
import { type Socket, createServer } from 'node:net';
import { refusalKindOf } from './http/refusal.js';
import { Refusal, describeRefusals } from './http/openapi.js';
import { Bootstrap } from './application/bootstrap.service.js';

/** Builds the whole app; tests call this with their own settings and port 0. */
export async function createApp(settings: Settings, options: { store?: EventStore; logger?: false; reconcileEveryMs?: number; showAdminKey?: (key: string) => void } = {}) {
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(settings, options.store), {
    bufferLogs: options.logger !== false,
    logger: options.logger === false ? false : undefined,
    bodyParser: false,
    // A provider that cannot start (the data directory in use) rejects here, for main's one line, not Nest's stack
    // (its buffered log of the error is never flushed).
    abortOnError: false,
    autoFlushLogs: false,
  });
  // Structured JSON logs (pino), with the request id of each HTTP request.
  if (options.logger !== false) {
    app.useLogger(app.get(PinoLogger));
    app.flushLogs();
  }
  // The depth check runs on the raw bytes before parsing; the reviver makes a JSON null "not given" for every field of every body.
  // (Nest's type omits `verify`, which it reserves for rawBody; rawBody is off, so express gets ours.)
  app.use(...observeRequests(app), requireHost, refuseWhileStopping(app.get(Stopping)), refuseCrossSiteWrites, refuseOversizedBodies, refuseUnreadBodies);
  const json = { limit: MAX_BODY_BYTES, strict: false, type: isJsonBody, verify: checkJsonDepth, reviver: reviveJsonBody };
  app.useBodyParser('json', json as NestExpressBodyParserOptionsFor<'json'>);
  app.use(emptyBodyIsNone);
  // API answers change with every call: an ETag per response is a hash of every body for nothing.
  app.set('etag', false);
  app.disable('x-powered-by');
  app.setGlobalPrefix('api/v1', { exclude: ['Node/get', 'Node/done', 'Node/fail', 'Inventory', 'health', 'health/live', 'metrics', 'ops'] });
  app.useGlobalPipes(
    new IdParamsPipe(),
    new ValidationPipe({
      whitelist: true,
      // Strict bodies: a field the API does not know is refused by name, never silently ignored.
      forbidNonWhitelisted: true,
      forbidUnknownValues: true,
      stopAtFirstError: true,
      transform: true,
      // The value tells a missing field from a wrong one; only its absence is read (see validationFailed).
      validationError: { target: false, value: true },
      exceptionFactory: validationFailed,
    }),
  );
  const openapi = new DocumentBuilder()
    .setTitle('Duffy')
    .setDescription('Machines for CI on an event-sourced ledger: the Duffy v3 API, cico legacy calls, ops endpoints')
    .setVersion('1')
    .addBasicAuth({ type: 'http', scheme: 'basic', description: 'tenant name and API key' }, 'tenant')
    .addSecurityRequirements('tenant')
    .build();
  SwaggerModule.setup('api/docs', app, () => describeRefusals(SwaggerModule.createDocument(app, openapi, { extraModels: [Refusal] })));
  // Slow senders (a body trickled a byte at a time) and connection floods: neither may starve other clients, nor
  // Duffy's own files (a playbook run that cannot open its input fails). Node checks the timeout every 30 s.
  const server = app.getHttpServer() as HttpServer;
  server.requestTimeout = (settings.requestTimeoutSeconds ?? REQUEST_TIMEOUT_SECONDS) * 1000;
  server.headersTimeout = Math.min(server.headersTimeout, server.requestTimeout);
  // An idle keep-alive connection is closed after as long as a request may take, not Node's 5 s: a close decided
  // while the main thread was busy (a GET /nodes of 20,000 machines takes it for a second or more) lands on
  // requests the client had sent meanwhile, which it then sees reset (a farm tester lost 39 releases so).
  server.keepAliveTimeout = server.requestTimeout;
  server.maxConnections = maxConnectionsOf(settings);
  server.on('clientError', clientErrorAnswer(server.requestTimeout / 1000, unreadableRequestReport(app.get(Metrics))));
  server.on('connect', answerConnect(server));
  // An Expect Node does not know (anything but 100-continue): Node's own 417 had no body. The client may be holding
  // its body back for an answer that never comes: the connection is closed.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    res.shouldKeepAlive = false;
    answerDetail(res, 417, `Expect: ${String(req.headers.expect).slice(0, 100)} is not served: only 100-continue`);
  });
  // Expect: 100-continue with a body declared over the limit: no 100 (the client would send it), straight to the 413.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (!bodyDeclaredTooLarge(req)) res.writeContinue();
    server.emit('request', req, res);
  });
  // requireHost answers a missing Host in JSON; Node's own check would answer first, with no body.
  (server as HttpServer & { requireHostHeader: boolean }).requireHostHeader = false;
  // Nest's list but SIGHUP: a `systemctl reload` would stop Duffy; main() says it has no reload.
  app.enableShutdownHooks(['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGUSR2']);
  await app.init();
  // Nest answers unknown paths under its global prefix only; the others (legacy, ops, anything) would get Express's
  // HTML page. The same JSON 404 (or 405) for all of them, registered after every route.
  app.use((req: Request, res: Response) => answerUnmatched(req.app, req, res));
  try {
    await app.get(Bootstrap).run({ reconcileEveryMs: options.reconcileEveryMs, showAdminKey: options.showAdminKey });
    return { app };
  } catch (err) {
    // A refused start leaves nothing open (the data directory's lock, the ledger's writer thread).
    await app.close().catch(() => undefined);
    throw err;
  }
}

/**
 * What Node answers a request it could not read (too slow, headers too large, not HTTP), in Duffy's words: a JSON
 * `{"detail"}` as every other error, where Node's own answers have no body. As Node's own handler does, it answers
 * only where no answer of this connection's current request has begun, and then destroys the socket: a half-closed
 * one would hold a connection for good, and would go on parsing what still arrives (a late body would still run).
 */
export function clientErrorAnswer(timeoutSeconds: number, answeredBeforeAnyRequest: (status: number, detail: string, socket: Duplex) => void = () => undefined) {
  return (err: NodeJS.ErrnoException, socket: Duplex): void => {
    const current = (socket as Duplex & { _httpMessage?: { headersSent?: boolean; statusCode: number } })._httpMessage;
    if (socket.writable && !current?.headersSent) {
      const [status, reason, detail] =
        err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'Request Timeout', `the request was not sent whole within ${timeoutSeconds} s (DUFFY_REQUEST_TIMEOUT_SECONDS)`]
          : err.code === 'HPE_HEADER_OVERFLOW'
            ? [431, 'Request Header Fields Too Large', 'the request headers are too large']
            : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW'
              ? [413, 'Payload Too Large', 'the chunk extensions are too large']
              : [400, 'Bad Request', `not a readable HTTP request (${err.code ?? err.message})`];
      const body = JSON.stringify({ detail });
      // The request under way, if any, was answered so: its log line and request count say this status.
      if (current) current.statusCode = Number(status);
      // No request reached the app (its headers were never read whole): nothing else would log or count this answer.
      else answeredBeforeAnyRequest(Number(status), detail, socket);
      socket.write(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nDuffy-Refusal: ${refusalKindOf(Number(status))}\r\nConnection: close\r\n\r\n${body}`);
    }
    socket.destroy(err);
  };
}

/** An answer Node's parser gave before any request was read whole (431, 400, a 408 during headers): logged and counted as requests are. */
function unreadableRequestReport(metrics: Metrics) {
  return (status: number, detail: string, socket: Duplex): void => {
    Pino.root.warn({ res: { statusCode: status }, remoteAddress: (socket as Socket).remoteAddress, detail }, 'request unreadable');
    metrics.http.inc({ method: 'unknown', route: 'unreadable', status: String(status) });
  };
}

/**
 * CONNECT (a proxy's method) leaves Node's HTTP parser: without a 'connect' listener Node closed the connection
 * unanswered. Handed to the app as a plain request, a path gets what any other method does (405 with Allow, or 404);
 * its usual target, `host:port`, is no path, which Express would answer with its HTML page. Then the connection is
 * closed, since the parser no longer reads it.
 */
function answerConnect(server: HttpServer) {
  return (req: IncomingMessage, socket: Duplex): void => {
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as Socket);
    res.on('finish', () => socket.end());
    socket.on('error', () => socket.destroy());
    if (req.url?.startsWith('/')) server.emit('request', req, res);
    else answerDetail(res, 404, `Cannot CONNECT ${String(req.url).slice(0, 200)}`);
  };
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
  // Before anything is written: a first start on a busy port, on a data directory another Duffy holds or with an
  // admin key no API key could be must not create the ledger (and print an admin key) and then die.
  await portIsFree(settings.port);
  // With KurrentDB too: the signing key, the playbook runs and the artifacts live there.
  assertDataDirWritable(settings.dataDir);
  const openDataDir = dataDirOpenToOthers(settings.dataDir);
  let ledgerWarnings: string[] = [];
  if (!settings.eventStoreUrl) {
    assertDataDirFree(settings.dataDir);
    // Before the head check, which would call the half-moved files a damaged ledger.
    assertNoRestoreUnfinished(settings.dataDir);
    // Only an empty ledger takes the key (Bootstrap checks it there too, for KurrentDB).
    if (!existsSync(join(settings.dataDir, LEDGER_FILE))) {
      assertNotBehindHead(join(settings.dataDir, LEDGER_FILE));
      assertAdminKey(settings.adminKey);
    }
    // A ledger of 2026-11-26 lacks the global chain: the store adds it, under the data dir's lock.
    else ledgerWarnings = assertLedgerReadable(join(settings.dataDir, LEDGER_FILE), isLegacyLedger(join(settings.dataDir, LEDGER_FILE)));
  }
  // An operator sees the stop begin (requests in flight finish first; Nest's hooks then close everything), also
  // during a long start-up (a large inventory), when Nest's hooks already listen.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => new Logger('Duffy').log(`${signal}: stopping; requests in flight finish, callers waiting are answered 503`));
  // Daemons reload on SIGHUP (`systemctl reload`): Duffy reads its configuration at start only, so it says so and goes on.
  process.on('SIGHUP', () => new Logger('Duffy').warn('SIGHUP: Duffy has no configuration reload; restart it (SIGTERM, then start) to apply a changed configuration'));
  // Plain words apart from the JSON log lines: it is shown once, and the README's examples read it from the variable.
  const showAdminKey = (key: string) => console.error(`\nduffy: created the admin tenant '${settings.adminName}'; its API key, shown this once:\n\n  export DUFFY_ADMIN_KEY=${key}\n`);
  const { app } = await createApp(settings, { showAdminKey });
  for (const warning of ledgerWarnings) new Logger('Ledger').warn(warning);
  if (openDataDir) new Logger('Duffy').warn(openDataDir);
  await app.listen(settings.port);
  new Logger('Duffy').log(`listening on :${settings.port}, ledger ${settings.eventStoreUrl ?? join(settings.dataDir, LEDGER_FILE)}, config ${settings.configFile}`);
}

async function portIsFree(port: number): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const probe = createServer()
      .once('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'EADDRINUSE' ? new StartError(`port ${port} is in use (set DUFFY_PORT)`) : err),
      )
      .once('listening', () => probe.close(() => resolve()))
      .listen(port);
  });
}

/** A start-up failure whose message says it all: one line, no stack. */
class StartError extends Error {}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    if (err instanceof ConfigError) {
      console.error(`duffy: bad configuration: ${err.message}`);
      process.exit(2);
    }
    const known = err instanceof StartError || err instanceof DataDirLockedError || err instanceof DataDirNotWritableError || err instanceof RestoreUnfinishedError || err instanceof LedgerDamagedError || err instanceof UnknownEventTypeError || /^DUFFY_[A-Z_]+: /.test(String(err?.message));
    // KurrentDB out of reach printed the client's `UnavailableError: UnavailableError` and its stack.
    const store = retryableWrite(err);
    // The data directory failing under a start that got past its write probe (a disk with a few KiB left).
    const storage = store ? undefined : storageFault(err);
    if (store) console.error(`duffy: failed to start: ${store} (${err?.message ?? err}); check DUFFY_EVENTSTORE`);
    else if (known) console.error(`duffy: failed to start: ${err.message}`);
    else if (storage) console.error(`duffy: failed to start: ${storage.what} (${storage.code}: ${err?.message}) in the data directory ${dataDirOf()}; ${storage.fix}, then start again`);
    else console.error('duffy: failed to start:', err);
    process.exit(1);
  });
}
