import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { PROJECTIONS, RETIRED_PROJECTIONS } from '../../projections/index.js';
import { Ledger } from './ledger.service.js';
import type { Subscription } from './ports/event-store.port.js';
import { ProjectionRunner, dropRetired, followTogether } from './projector.js';
import { READ_MODELS, type ReadModelStore } from './ports/read-model.port.js';
import { refuse } from '../domain/errors.js';

const READ_ATTEMPTS = 5;
const REREAD_AFTER_MS = 50;
/** A read a rebuild cut short. */
const CUT_SHORT: unique symbol = Symbol('cut short');

/** Runs every projection of projections/ against the configured read-model store. */
@Injectable()
export class ReadSide implements OnApplicationShutdown {
  readonly runners: ProjectionRunner[];
  private subscription?: Subscription;
  private readonly log = new Logger('ReadSide');

  constructor(
    @Inject(READ_MODELS) readonly store: ReadModelStore,
    private readonly ledger: Ledger,
  ) {
    this.runners = PROJECTIONS.map((p) => new ProjectionRunner(p, ledger.store, store));
  }

  start(): Promise<void> {
    return this.inTurn(() => this.follow());
  }

  private async follow(options: { rebuild?: boolean } = {}): Promise<void> {
    for (const name of await dropRetired(this.store, RETIRED_PROJECTIONS)) this.log.log(`read models of the retired projection ${name} removed`);
    this.subscription = await followTogether(this.runners, this.ledger.store, { ...options, head: () => this.ledger.headPosition() });
    for (const r of this.runners) if (r.rebuiltBecause) this.log.warn(`projection ${r.projection.name} is rebuilt from the ledger: ${r.rebuiltBecause}`);
  }

  private async stopAll(): Promise<void> {
    await this.subscription?.close();
    this.subscription = undefined;
    for (const r of this.runners) await r.stop();
  }

  /** Drop every read model and project the whole ledger again. */
  rebuild(): Promise<void> {
    return this.inTurn(async () => {
      await this.stopAll();
      await this.follow({ rebuild: true });
    });
  }

  /**
   * Start, rebuild and stop take turns. Two rebuilds at once each opened a subscription and only one was ever
   * closed: the other kept feeding the runners beside the next one, whose reset it could undo (a later rebuild
   * under traffic could then skip events).
   */
  private turn: Promise<unknown> = Promise.resolve();
  private inTurn<T>(work: () => Promise<T>): Promise<T> {
    const run = this.turn.then(work, work);
    this.turn = run.catch(() => undefined);
    return run;
  }

  /** Read-your-writes for endpoints that need it: wait until every projection has reached `position`. */
  async caughtUp(position: bigint): Promise<void> {
    await Promise.all(this.runners.map((r) => r.caughtUp(position)));
  }

  /**
   * `read` once the read models hold `position`, read again (up to READ_ATTEMPTS times, then 503) when a rebuild
   * dropped documents while it ran, or `whole` says it found part of what it needs: a read never shows half of the
   * old documents and half of the new.
   */
  async readWhole<T>(position: bigint, read: () => Promise<T>, whole: (result: T) => boolean = () => true): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      await this.caughtUp(position);
      const resets = this.resets();
      const result: T | typeof CUT_SHORT = await read().catch((err: unknown) => {
        // A read cut short by a rebuild (MongoDB drops a collection under an open cursor) is read again, not a 500.
        if (this.resets() === resets) throw err;
        return CUT_SHORT as typeof CUT_SHORT;
      });
      if (result !== CUT_SHORT && this.resets() === resets && whole(result)) return result;
      if (attempt === READ_ATTEMPTS) refuse('unavailable', 'the read models are being rebuilt; try again shortly');
      await new Promise((r) => setTimeout(r, REREAD_AFTER_MS));
    }
  }

  /** Changes whenever some projection's documents go back to position 0 (a rebuild). */
  private resets(): number {
    return this.runners.reduce((n, r) => n + r.resets, 0);
  }

  lagMs(): number {
    const now = Date.now();
    return Math.max(0, ...this.runners.map((r) => r.lagMs(now)));
  }

  async onApplicationShutdown(): Promise<void> {
    await this.inTurn(() => this.stopAll());
    await this.store.close();
  }
}
