import { Controller, Get, Header, UseGuards } from '@nestjs/common';
import { createHash } from 'node:crypto';
import { BasicAuthGuard, CurrentActor } from '../auth.js';
import type { Actor } from '../../application/commands.js';
import { refuse } from '../../domain/errors.js';
import { OPS_PAGE_HTML, OPS_PAGE_SCRIPT, OPS_PAGE_STYLE } from './ops-page.html.js';

const sha256 = (text: string) => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

/** The page may run its own inline script and style (by hash) and talk to its own origin, nothing else. */
const CSP = [
  "default-src 'none'",
  `script-src ${sha256(OPS_PAGE_SCRIPT)}`,
  `style-src ${sha256(OPS_PAGE_STYLE)}`,
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** The ops page (admin only): pool levels, wear, fairness, hand-overs and recent events, refreshed live. */
@Controller('ops')
@UseGuards(BasicAuthGuard)
export class OpsPageController {
  @Get()
  @Header('Content-Type', 'text/html; charset=utf-8')
  @Header('Cache-Control', 'no-store')
  @Header('Content-Security-Policy', CSP)
  @Header('X-Content-Type-Options', 'nosniff')
  page(@CurrentActor() actor: Actor): string {
    if (!actor.tenant.isAdmin) refuse('forbidden', 'only admins may open the ops page');
    return OPS_PAGE_HTML;
  }
}
