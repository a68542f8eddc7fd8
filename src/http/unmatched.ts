import type { Application, Request, Response } from 'express';
import { METHODS } from 'node:http';
import { GET_ONLY_PATHS } from './legacy.controller.js';
import { markRefusal } from './refusal.js';

/** One registered route as the router keeps it: a layer that matches a path, and the methods its route serves. */
interface RouteLayer {
  match(path: string): boolean;
  route?: { methods: Record<string, boolean> };
}

/**
 * The answer to a request no route took, as Duffy v3 (FastAPI) gives it: 405 with `Allow` when the path exists under
 * other methods, else a 404 that names what was asked.
 */
export function answerUnmatched(app: Application, req: Request, res: Response): void {
  // The whole path, wherever the router that gave up is mounted; the query stays out of the answer (a legacy key rides there).
  const path = req.originalUrl.split('?')[0];
  const allowed = methodsServing(app, path);
  if (allowed.length > 0) {
    res.setHeader('Allow', allowed.join(', '));
    markRefusal(res, 405);
    res.status(405).json({ detail: 'Method Not Allowed' });
    return;
  }
  markRefusal(res, 404);
  res.status(404).json({ detail: `Cannot ${req.method} ${path}` });
}

/** Methods the app's routes serve at `path` (only asked once no route matched, so a scan costs nothing on the hot path). */
function methodsServing(app: Application, path: string): string[] {
  const stack = (app as unknown as { router?: { stack: RouteLayer[] } }).router?.stack ?? [];
  const methods = new Set<string>();
  for (const layer of stack) {
    if (!layer.route || servesEverything(layer.route.methods) || !layer.match(path)) continue;
    for (const [method, served] of Object.entries(layer.route.methods)) {
      if (served && method !== '_all') methods.add(method.toUpperCase());
    }
  }
  // Express answers HEAD from a GET route, but for the legacy calls that change things.
  if (methods.has('GET') && !GET_ONLY_PATHS.has(path)) methods.add('HEAD');
  return [...methods].sort();
}

/** Nest's pass-through for paths excluded from the global prefix serves every method: not an endpoint of its own. */
export const servesEverything = (methods: Record<string, boolean>) => methods._all === true || METHODS.every((m) => methods[m.toLowerCase()]);
