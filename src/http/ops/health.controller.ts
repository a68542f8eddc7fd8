import { ApiOperation, ApiTags } from '@nestjs/swagger';
import { Controller, Get, Inject } from '@nestjs/common';
import { HealthCheck, HealthCheckService, HealthIndicatorService } from '@nestjs/terminus';
import { PLAYBOOK_RUNNER, type PlaybookRunner } from '../../adapters/ansible-runner.js';
import { writeHealthOf } from '../../adapters/eventstore/event-store.factory.js';
import { Ledger } from '../../application/ledger.service.js';
import { READ_MODELS, type ReadModelStore } from '../../application/ports/read-model.port.js';
import { Provisioner } from '../../application/provisioner.service.js';
import { ReadSide } from '../../application/read-side.service.js';

const withTimeout = <T>(p: Promise<T>, ms: number) =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms).unref())]);

/**
 * Readiness for load balancers and compose (`/health`): 200 when all parts answer, 503 naming the one that does not.
 * Liveness (`/health/live`): the process answers, nothing more; a restart mends neither a full disk nor a missing
 * Ansible, so a liveness probe must not restart Duffy over them.
 */
@ApiTags('ops')
@Controller('health')
export class HealthController {
  private ansible?: Promise<string>;

  constructor(
    private readonly health: HealthCheckService,
    private readonly indicators: HealthIndicatorService,
    private readonly ledger: Ledger,
    @Inject(READ_MODELS) private readonly readModels: ReadModelStore,
    private readonly provisioner: Provisioner,
    private readonly readSide: ReadSide,
    @Inject(PLAYBOOK_RUNNER) private readonly runner: PlaybookRunner,
  ) {}

  @ApiOperation({ summary: 'liveness: the process answers (no credentials needed)', security: [] })
  @Get('live')
  live() {
    return { status: 'ok' };
  }

  @ApiOperation({ summary: 'readiness: every part answers (no credentials needed)', security: [] })
  @Get()
  @HealthCheck()
  check() {
    return this.health.check([
      async () => {
        const ledger = this.indicators.check('ledger');
        try {
          if (this.ledger.failure) throw this.ledger.failure;
          // A store that answers reads may still refuse writes (a full disk).
          const problem = await writeHealthOf(this.ledger.store)?.problem();
          if (problem && 'down' in problem) return ledger.down({ message: problem.down });
          await withTimeout(this.ledger.store.ping(), 2000);
          return ledger.up({ position: this.ledger.world.position.toString(), ...problem });
        } catch (err) {
          return ledger.down({ message: String((err as Error)?.message ?? err) });
        }
      },
      async () => {
        const rm = this.indicators.check('readModels');
        // The store may answer a ping and still refuse writes (a full disk): the projections know.
        const refused = this.readSide.runners.find((r) => r.writeFailure);
        if (refused) return rm.down({ message: `projection ${refused.projection.name}: last write failed: ${String((refused.writeFailure as Error)?.message ?? refused.writeFailure)}` });
        return withTimeout(this.readModels.ping(), 2000).then(
          () => rm.up(),
          (err: Error) => rm.down({ message: err.message }),
        );
      },
      async () => {
        const ansible = this.indicators.check('ansible');
        // Runs failing on Duffy's side (Ansible gone since, a playbook missing) say more than the version did.
        const fault = this.provisioner.environmentFault;
        if (fault) return ansible.down({ message: `${fault.reason} (playbook runs failing since ${fault.since})` });
        // Looked up once while it works: the runs above tell when it stops working.
        this.ansible ??= this.runner.version();
        // A pool's broken playbook, a machine whose runs die: named, but Duffy stays up for the load balancer.
        const broken = this.provisioner.scopedFaults;
        return this.ansible.then(
          (version) => ansible.up({ version, ...(broken.length > 0 ? { broken } : {}) }),
          (err: Error) => {
            this.ansible = undefined;
            return ansible.down({ message: err.message });
          },
        );
      },
    ]);
  }
}
