import { ApiOkResponse, ApiOperation, ApiProduces, ApiTags } from '@nestjs/swagger';
import { Controller, Get, Header, Injectable, type NestMiddleware, Optional } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';
import { Metrics } from '../../adapters/metrics.js';
import { whenExchanged } from '../input.js';
import { servesEverything } from '../unmatched.js';

/** Counts every request by method, matched route and status (499: the client went away before any answer). */
@Injectable()
export class HttpMetricsMiddleware implements NestMiddleware {
  constructor(
    private readonly metrics: Metrics,
    /** The app's route paths (`/api/v1/sessions/:id`): a request refused before routing counts under its route too. */
    @Optional() private readonly routes: () => ReadonlyMap<string, string> = () => new Map(),
  ) {}
  use(req: Request, res: Response, next: NextFunction): void {
    // Aborted requests too (499, as the log line says): a Jenkins abort is an HTTP request an alert may want to see.
    whenExchanged(req, res, () => {
      // The matched route, not the raw URL, so ids do not explode the label set.
      // Nest's catch-all under the global prefix (it serves every method) is no route of Duffy's.
      const matched = req.route && !servesEverything(req.route.methods) ? (req.route.path as string) : undefined;
      const route = matched === undefined ? this.routeOf(req.originalUrl ?? req.url) : `${req.baseUrl ?? ''}${matched}`;
      this.metrics.http.inc({ method: req.method, route, status: String(res.statusCode) });
    });
    next();
  }

  /** A refused request's route: its path with its ids as parameters, when the app serves that; else `unmatched`. */
  private routeOf(url: string): string {
    const path = url.split('?')[0].replace(/\/+$/, '').replace(/\/\d+(?=\/|$)/g, '/:id');
    return this.routes().get(path) ?? 'unmatched';
  }
}

/** The route paths an Express app serves, keyed by the path with every parameter written `:id` (read once routes are in). */
export function routePaths(express: { router?: { stack?: Array<{ route?: { path?: unknown } }> } }): Map<string, string> {
  const paths = new Map<string, string>();
  for (const layer of express.router?.stack ?? []) {
    const path = layer.route?.path;
    if (typeof path === 'string') paths.set(path.replace(/\/:[^/]+/g, '/:id'), path);
  }
  return paths;
}

@ApiTags('ops')
@Controller('metrics')
export class MetricsController {
  constructor(private readonly metrics: Metrics) {}

  @ApiOperation({ summary: 'Prometheus metrics (no credentials needed)', security: [] })
  @ApiProduces('text/plain')
  @ApiOkResponse({ schema: { type: 'string' } })
  @Get()
  @Header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
  scrape(): Promise<string> {
    return this.metrics.registry.metrics();
  }
}
