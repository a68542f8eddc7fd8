import { ApiTags } from '@nestjs/swagger';
import { Controller, Get, Header, Injectable, type NestMiddleware } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';
import { Metrics } from '../../adapters/metrics.js';

/** Counts every answered request by method, matched route and status. */
@Injectable()
export class HttpMetricsMiddleware implements NestMiddleware {
  constructor(private readonly metrics: Metrics) {}
  use(req: Request, res: Response, next: NextFunction): void {
    res.on('finish', () => {
      // The matched route, not the raw URL, so ids do not explode the label set.
      const route = (req.route?.path as string | undefined) ?? 'unmatched';
      this.metrics.http.inc({ method: req.method, route: `${req.baseUrl ?? ''}${route}`, status: String(res.statusCode) });
    });
    next();
  }
}

@ApiTags('ops')
@Controller('metrics')
export class MetricsController {
  constructor(private readonly metrics: Metrics) {}

  @Get()
  @Header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
  scrape(): Promise<string> {
    return this.metrics.registry.metrics();
  }
}
