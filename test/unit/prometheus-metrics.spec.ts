import { describe, expect, it } from '@jest/globals';
import { Metrics } from '../../src/adapters/metrics.js';
import type { Ledger } from '../../src/application/ledger.service.js';
import type { ReadSide } from '../../src/application/read-side.service.js';
import { given, machine, quarantined } from '../support/given.js';

/** The registry over a World folded from `history`; the other sources stand still. */
function scrape(...history: Parameters<typeof given>): Promise<string> {
  const ledger = { world: given(...history) } as unknown as Ledger;
  const readSide = { lagMs: () => 0 } as unknown as ReadSide;
  return new Metrics(ledger, readSide).registry.metrics();
}

describe('duffy_machines', () => {
  it('says 0 for a level no machine of a pool is in, so an alert on free machines fires when none is left', async () => {
    // Pool a: one ready machine; pool b: all quarantined, none ready.
    const text = await scrape(machine(1, 'a-1', 'a'), ...quarantined('b', 2));
    expect(text).toMatch(/^duffy_machines\{pool="a",state="ready"\} 1$/m);
    expect(text).toMatch(/^duffy_machines\{pool="b",state="quarantined"\} 2$/m);
    // An absent series is no 0 to Prometheus: `duffy_machines{state="ready"} < 1` would never fire for pool b.
    expect(text).toMatch(/^duffy_machines\{pool="b",state="ready"\} 0$/m);
    expect(text).toMatch(/^duffy_machines\{pool="a",state="deployed"\} 0$/m);
  });
});
