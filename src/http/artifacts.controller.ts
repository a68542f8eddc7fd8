import { Controller, Get, Param, StreamableFile, UseGuards } from '@nestjs/common';
import { ApiOkResponse, ApiOperation, ApiParam, ApiProduces, ApiTags } from '@nestjs/swagger';
import { ApiRefusals, ArtifactsView } from './openapi.js';
import { createReadStream } from 'node:fs';
import { lstat, readdir, realpath, stat } from 'node:fs/promises';
import { basename, isAbsolute, join, relative, sep } from 'node:path';
import { Catalog } from '../application/catalog.js';
import type { Actor } from '../application/commands.js';
import { Ledger } from '../application/ledger.service.js';
import { visibleSession } from '../domain/decide.js';
import type { Session } from '../domain/world.js';
import { collectingFor } from '../domain/provisioning.decide.js';
import { refuse } from '../domain/errors.js';
import { BasicAuthGuard, CurrentActor } from './auth.js';
import { ReadViews } from './read-views.js';

/** The real path of `rel` inside `base`, or null when it is not a file there (`..`, absolute, a symlink leading out). */
async function artifactPath(base: string, rel: string): Promise<string | null> {
  const parts = rel.split('/');
  if (rel === '' || isAbsolute(rel) || rel.includes('\0') || parts.some((p) => p === '' || p === '.' || p === '..')) return null;
  const root = await realpath(base).catch(() => null);
  const real = root && (await realpath(join(root, ...parts)).catch(() => null));
  if (!root || !real || !real.startsWith(root + sep)) return null;
  return (await stat(real)).isFile() ? real : null;
}

/** Every file under `base` (symlinks only when they resolve to a file inside it), as paths relative to it. */
async function listArtifacts(base: string): Promise<Array<{ path: string; size: number }>> {
  const root = await realpath(base).catch(() => null);
  if (!root) return [];
  const out: Array<{ path: string; size: number }> = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() || e.isSymbolicLink()) {
        const rel = relative(root, p).split(sep).join('/');
        const real = await artifactPath(root, rel);
        if (real) out.push({ path: rel, size: (await lstat(real)).size });
      }
    }
  };
  await walk(root);
  return out.sort((a, b) => a.path.localeCompare(b.path));
}

/** Files collected from a session's machines at release: its tenant and admins may list and fetch them; others get 404. */
@ApiTags('sessions')
@Controller('sessions')
@UseGuards(BasicAuthGuard)
export class ArtifactsController {
  constructor(
    private readonly catalog: Catalog,
    private readonly views: ReadViews,
    private readonly ledger: Ledger,
  ) {}

  /** The session, once the actor may see it, and its artifacts directory. */
  private async dirOf(actor: Actor, id: number): Promise<{ session: Session; dir: string }> {
    const session = visibleSession(await this.views.load({ sessions: id }), id, actor.tenant);
    return { session, dir: this.catalog.artifactsDir(id) };
  }

  @ApiOperation({ summary: "files collected from the session's machines at release (its tenant and admins)" })
  @ApiOkResponse({ type: ArtifactsView })
  @Get(':id/artifacts')
  async list(@CurrentActor() actor: Actor, @Param('id') id: number) {
    // `collecting`: the session's release has files still to collect, so the list may grow (the CLI waits for it).
    // Read before the read models, which then hold at least what it saw: `false` comes with what the collection noted.
    const collecting = collectingFor(this.ledger.world, id, (name) => this.catalog.pool(name));
    const { session, dir } = await this.dirOf(actor, id);
    // `incomplete`: machines whose collection failed or left files out, and why.
    return { action: 'get', session: id, collecting, incomplete: session.artifactsIncomplete ?? [], artifacts: await listArtifacts(dir) };
  }

  @ApiOperation({ summary: 'one artifact, as a download' })
  @ApiParam({ name: 'path', description: "the file's path in the session's artifacts, as the list names it" })
  @ApiProduces('application/octet-stream')
  @ApiOkResponse({ schema: { type: 'string', format: 'binary' } })
  @ApiRefusals(409)
  @Get(':id/artifacts/*path')
  async get(@CurrentActor() actor: Actor, @Param('id') id: number, @Param('path') path: string | string[]) {
    const rel = Array.isArray(path) ? path.join('/') : String(path);
    const { dir } = await this.dirOf(actor, id);
    // A file the release is still copying would come cut short (a full disk kept one so): none while it collects.
    if (collectingFor(this.ledger.world, id, (name) => this.catalog.pool(name))) {
      refuse('conflict', `session ${id}: its artifacts are still being collected; download them once GET /api/v1/sessions/${id}/artifacts says "collecting": false`);
    }
    const real = await artifactPath(dir, rel);
    if (!real) refuse('not_found', `artifact ${rel} not found in session ${id}`);
    const { size } = await stat(real!);
    return new StreamableFile(createReadStream(real!), { type: 'application/octet-stream', disposition: `attachment; filename="${basename(real!).replace(/[^\w.-]/g, '_')}"`, length: size });
  }
}
