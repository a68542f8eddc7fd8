import { type DynamicModule, type MiddlewareConsumer, Module, type NestModule } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { CqrsModule } from '@nestjs/cqrs';
import { TerminusModule } from '@nestjs/terminus';
import { LoggerModule } from 'nestjs-pino';
import { randomUUID } from 'node:crypto';
import { HealthController } from './ops/health.controller.js';
import { HttpMetricsMiddleware, Metrics, MetricsController } from './ops/metrics.js';
import { EventsController, RecentEvents } from './ops/events.controller.js';
import { OpsPageController } from './ops/ops-page.controller.js';
import { NodesController, PoolProfilesController, PoolsController, TenantsController } from './api/admin.controller.js';
import { BasicAuthGuard } from './api/auth.js';
import { ErrorsFilter } from './api/errors.filter.js';
import { LegacyController } from './api/legacy.controller.js';
import { SessionsController } from './api/sessions.controller.js';
import { ReadViews } from './api/read-views.js';
import { StatsController } from './api/stats.controller.js';
import { QueueController } from './api/queue.controller.js';
import { READ_MODELS } from './readmodels/read-model.port.js';
import { createReadModels } from './readmodels/read-models.factory.js';
import { ReadSide } from './readmodels/read-side.service.js';
import { type Settings } from './config/config.js';
import { EVENT_STORE, type EventStore } from './eventstore/event-store.port.js';
import { createEventStore } from './eventstore/event-store.factory.js';
import { Bootstrap } from './ledger/bootstrap.service.js';
import { Catalog, SETTINGS } from './ledger/catalog.js';
import { CancelWaitingHandler } from './ledger/handlers/cancel-waiting.handler.js';
import { EndSessionHandler } from './ledger/handlers/end-session.handler.js';
import { ExtendSessionHandler } from './ledger/handlers/extend-session.handler.js';
import { RegisterMachineHandler } from './ledger/handlers/register-machine.handler.js';
import { RegisterTenantHandler } from './ledger/handlers/register-tenant.handler.js';
import { RequestSessionHandler } from './ledger/handlers/request-session.handler.js';
import { UpdateTenantHandler } from './ledger/handlers/update-tenant.handler.js';
import { Ledger } from './ledger/ledger.service.js';
import { SessionLifecycle } from './ledger/session-lifecycle.js';
import { Reconciler } from './ledger/reconciler.service.js';
import { QueueSaga, ServeWaitingRequestsHandler, WaitingQueue } from './scheduling/queue.service.js';
import { AnsibleRunner, PLAYBOOK_RUNNER } from './provisioning/ansible-runner.js';
import { LookForProvisioningWorkHandler, Provisioner, ProvisioningSaga } from './provisioning/provisioner.service.js';

@Module({})
export class AppModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(HttpMetricsMiddleware).forRoutes('*path');
  }

  /** `store` lets tests hand in an adapter; otherwise the settings pick one. */
  static forRoot(settings: Settings, store?: EventStore): DynamicModule {
    return {
      module: AppModule,
      imports: [
        CqrsModule.forRoot(),
        TerminusModule,
        LoggerModule.forRoot({
          pinoHttp: {
            level: process.env.DUFFY_LOG_LEVEL ?? 'info',
            // One id per request, taken from the caller when it sends one, echoed back for support tickets.
            genReqId: (req, res) => {
              const id = String(req.headers['x-request-id'] ?? '').slice(0, 128) || randomUUID();
              res.setHeader('X-Request-Id', id);
              return id;
            },
            redact: ['req.headers.authorization'],
            // One short line per request: serialising every header of every request cost more CPU than deciding it.
            serializers: {
              req: (req: { id: string; method: string; url: string }) => ({ id: req.id, method: req.method, url: req.url }),
              res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
            },
          },
        }),
      ],
      controllers: [SessionsController, TenantsController, NodesController, PoolsController, PoolProfilesController, LegacyController, StatsController, QueueController, HealthController, MetricsController, OpsPageController, EventsController],
      providers: [
        { provide: SETTINGS, useValue: settings },
        { provide: EVENT_STORE, useFactory: () => store ?? createEventStore(settings.eventStoreUrl, settings.dataDir) },
        { provide: READ_MODELS, useFactory: () => createReadModels(settings.readModelsUrl, settings.dataDir) },
        ReadSide,
        ReadViews,
        Metrics,
        RecentEvents,
        { provide: APP_FILTER, useClass: ErrorsFilter },
        Catalog,
        Ledger,
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
      ],
    };
  }
}
