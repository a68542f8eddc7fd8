import { Inject, Injectable, type OnApplicationShutdown } from '@nestjs/common';
import { PROJECTIONS } from '../../projections/index.js';
import { Ledger } from '../ledger/ledger.service.js';
import { ProjectionRunner } from './projector.js';
import { READ_MODELS, type ReadModelStore } from './read-model.port.js';

/** Runs every projection of projections/ against the configured read-model store. */
@Injectable()
export class ReadSide implements OnApplicationShutdown {
  readonly runners: ProjectionRunner[];

  constructor(
    @Inject(READ_MODELS) readonly store: ReadModelStore,
    ledger: Ledger,
  ) {
    this.runners = PROJECTIONS.map((p) => new ProjectionRunner(p, ledger.store, store));
  }

  async start(options: { rebuild?: boolean } = {}): Promise<void> {
    for (const r of this.runners) await r.start(options);
  }

  /** Drop every read model and project the whole ledger again. */
  async rebuild(): Promise<void> {
    for (const r of this.runners) await r.stop();
    for (const r of this.runners) await r.start({ rebuild: true });
  }

  /** Read-your-writes for endpoints that need it: wait until every projection has reached `position`. */
  async caughtUp(position: bigint): Promise<void> {
    await Promise.all(this.runners.map((r) => r.caughtUp(position)));
  }

  lagMs(): number {
    return Math.max(0, ...this.runners.map((r) => r.lastLagMs));
  }

  async onApplicationShutdown(): Promise<void> {
    for (const r of this.runners) await r.stop();
    await this.store.close();
  }
}
