import { type DynamicModule, Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { CqrsModule } from '@nestjs/cqrs';
import { TerminusModule } from '@nestjs/terminus';
import { LoggerModule, PinoLogger } from 'nestjs-pino';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { HealthController } from './http/ops/health.controller.js';
import { Metrics } from './adapters/metrics.js';
import { HttpMetricsMiddleware, MetricsController, routePaths } from './http/ops/metrics.controller.js';
import { EventsController } from './http/ops/events.controller.js';
import { OpsPageController } from './http/ops/ops-page.controller.js';
import { NodesController, PoolProfilesController, PoolsController, TenantsController } from './http/admin.controller.js';
import { BasicAuthGuard } from './http/auth.js';
import { ErrorsFilter } from './http/errors.filter.js';
import { httpLogging, requestLogging } from './http/input.js';
import { LegacyController } from './http/legacy.controller.js';
import { SessionsController } from './http/sessions.controller.js';
import { ArtifactsController } from './http/artifacts.controller.js';
import { ReadViews } from './http/read-views.js';
import { StatsController } from './http/stats.controller.js';
import { QueueController } from './http/queue.controller.js';
import { Stopping } from './http/stopping.js';
import { READ_MODELS } from './application/ports/read-model.port.js';
import { createReadModels } from './adapters/readmodels/read-models.factory.js';
import { ReadSide } from './application/read-side.service.js';
import { AuditController } from './audit/audit.controller.js';
import { CheckpointService } from './audit/checkpoint.service.js';
import { type Settings } from './config/config.js';
import { EVENT_STORE, type EventStore } from './application/ports/event-store.port.js';
import { createEventStore } from './adapters/eventstore/event-store.factory.js';
import { Bootstrap } from './application/bootstrap.service.js';
import { Catalog, SETTINGS } from './application/catalog.js';
import { CancelWaitingHandler } from './application/handlers/cancel-waiting.handler.js';
import { EndSessionHandler } from './application/handlers/end-session.handler.js';
import { ExtendSessionHandler } from './application/handlers/extend-session.handler.js';
import { RegisterMachineHandler } from './application/handlers/register-machine.handler.js';
import { RegisterTenantHandler } from './application/handlers/register-tenant.handler.js';
import { RequestSessionHandler } from './application/handlers/request-session.handler.js';
import { UpdateTenantHandler } from './application/handlers/update-tenant.handler.js';
import { Ledger } from './application/ledger.service.js';
import { ChangeNodeServiceHandler } from './application/handlers/node-service.handler.js';
import { SessionLifecycle } from './application/session-lifecycle.js';
import { Reconciler } from './application/reconciler.service.js';
import { QueueSaga, ServeWaitingRequestsHandler, WaitingQueue } from './application/queue.service.js';
import { AnsibleRunner, PLAYBOOK_RUNNER } from './adapters/ansible-runner.js';
import { LookForProvisioningWorkHandler, Provisioner, ProvisioningSaga } from './application/provisioner.service.js';

/**
 * The request line, its id and its count, as the first Express middleware (createApp): a write refused as cross-site
 * or a body the parser refuses is logged and counted too. As a module middleware they ran after both, which then
 * left no trace.
 */
export function observeRequests(app: { get<T>(type: new (...args: never[]) => T): T; getHttpAdapter(): { getInstance(): unknown } }): Array<(req: IncomingMessage, res: ServerResponse, next: () => void) => void> {
  // Made on first use: nestjs-pino sets its root logger while the modules are being configured.
  let log: ReturnType<typeof requestLogging> | undefined;
  // Read at the first refused request, when every route is in.
  let routes: ReadonlyMap<string, string> | undefined;
  const metrics = new HttpMetricsMiddleware(app.get(Metrics), () => (routes ??= routePaths(app.getHttpAdapter().getInstance() as Parameters<typeof routePaths>[0])));
  return [(req, res, next) => (log ??= requestLogging(PinoLogger.root))(req, res, next), (req, res, next) => metrics.use(req as never, res as never, next)];
}

@Module({})
export class AppModule {

  /** `store` lets tests hand in an adapter; otherwise the settings pick one. */
  static forRoot(settings: Settings, store?: EventStore): DynamicModule {
    return {
      module: AppModule,
      imports: [
        CqrsModule.forRoot(),
        // No error line per failing probe (a load balancer asks every few seconds): each fault is logged where it
        // happens, once per interval, and /health's answer names it.
        TerminusModule.forRoot({ logger: false }),
        LoggerModule.forRoot({
          pinoHttp: {
            level: process.env.DUFFY_LOG_LEVEL ?? 'info',
            ...httpLogging,
          },
          // The request line is logged by requestLogging (see configure), without nestjs-pino's per-request context.
          forRoutes: [],
        }),
      ],
      controllers: [SessionsController, ArtifactsController, TenantsController, NodesController, PoolsController, PoolProfilesController, LegacyController, StatsController, QueueController, HealthController, MetricsController, OpsPageController, EventsController, AuditController],
      providers: [
        { provide: SETTINGS, useValue: settings },
        { provide: EVENT_STORE, useFactory: () => store ?? createEventStore(settings.eventStoreUrl, settings.dataDir) },
        { provide: READ_MODELS, useFactory: () => createReadModels(settings.readModelsUrl, settings.dataDir) },
        Stopping,
        ReadSide,
        ReadViews,
        Metrics,
        { provide: APP_FILTER, useClass: ErrorsFilter },
        Catalog,
        Ledger,
        CheckpointService,
        SessionLifecycle,
        Reconciler,
        WaitingQueue,
        QueueSaga,
        ServeWaitingRequestsHandler,
        { provide: PLAYBOOK_RUNNER, useFactory: () => new AnsibleRunner() },
        Provisioner,
        ProvisioningSaga,
        LookForProvisioningWorkHandler,
        Bootstrap,
        BasicAuthGuard,
        RegisterTenantHandler,
        UpdateTenantHandler,
        RegisterMachineHandler,
        RequestSessionHandler,
        EndSessionHandler,
        CancelWaitingHandler,
        ExtendSessionHandler,
        ChangeNodeServiceHandler,
      ],
    };
  }
}
