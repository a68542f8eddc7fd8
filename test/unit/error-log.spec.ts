import { describe, expect, it } from '@jest/globals';
import { DomainError } from '../../src/domain/errors.js';
import { ErrorsFilter } from '../../src/http/errors.filter.js';

/** What the filter logs for `error` answered to a request whose id is `id`. */
function logged(error: unknown, id: string): unknown[][] {
  const filter = new ErrorsFilter();
  const lines: unknown[][] = [];
  const log = (filter as unknown as { log: Record<'warn' | 'error', (...args: unknown[]) => void> }).log;
  log.warn = (...args) => lines.push(['warn', ...args]);
  log.error = (...args) => lines.push(['error', ...args]);
  const res = { headersSent: false, setHeader: () => undefined, status() { return this; }, json: () => undefined };
  const req = { id, method: 'POST', originalUrl: '/api/v1/sessions', headers: {} };
  filter.catch(error, { switchToHttp: () => ({ getResponse: () => res, getRequest: () => req }) } as never);
  return lines;
}

describe('a 5xx logged by the errors filter', () => {
  it('names its request id, as its access line and its events do, so the two lines can be joined', () => {
    expect(logged(new DomainError('unavailable', "can't provision nodes: playbook failed"), 'job-7')).toEqual([['warn', { req: { id: 'job-7' } }, "503 can't provision nodes: playbook failed"]]);
    const [[level, fields, text]] = logged(new Error('boom'), 'job-8');
    expect([level, fields]).toEqual(['error', { req: { id: 'job-8' } }]);
    expect(String(text)).toMatch(/^Error: boom\n/);
  });
});
