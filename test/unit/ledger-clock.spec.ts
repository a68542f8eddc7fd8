import { afterEach, describe, expect, it, jest } from '@jest/globals';
import { LedgerClock } from '../../src/application/ledger-clock.js';

describe('the ledger clock', () => {
  let wall = 0;
  let monotonic = 0;
  afterEach(() => {
    jest.restoreAllMocks();
  });
  const clock = () => {
    jest.spyOn(Date, 'now').mockImplementation(() => wall);
    jest.spyOn(performance, 'now').mockImplementation(() => monotonic);
    return new LedgerClock();
  };
  const pass = (ms: number, wallTo = wall + ms) => {
    monotonic += ms;
    wall = wallTo;
  };

  it("given a host clock going forward, then it is the host's", () => {
    wall = 1_000_000;
    const c = clock();
    expect(c.nowMs()).toBe(1_000_000);
    pass(5_000);
    expect(c.nowMs()).toBe(1_005_000);
    pass(1_000, wall + 60_000); // stepped forward: followed
    expect(c.nowMs()).toBe(1_065_000);
  });

  it('given the host clock stepped back a day, then it goes on from where it was at the seconds that pass, and follows the host again once that is ahead', () => {
    wall = 100 * 86_400_000;
    const c = clock();
    const before = c.nowMs();
    pass(2_000, wall - 86_400_000 + 2_000);
    expect(c.nowMs()).toBe(before + 2_000);
    pass(3_000, wall + 3_000);
    expect(c.nowMs()).toBe(before + 5_000);
    expect(c.now()).toBe(new Date(before + 5_000).toISOString());
    pass(1_000, before + 10_000); // the host's clock is ahead again
    expect(c.nowMs()).toBe(before + 10_000);
  });

  it('given a time already vouched for ahead of the host clock (a checkpoint it signed), then never before it, and on from it', () => {
    wall = 1_000_000;
    const c = clock();
    c.notBefore(1_600_000);
    expect(c.nowMs()).toBe(1_600_000);
    pass(1_000);
    expect(c.nowMs()).toBe(1_601_000);
    c.notBefore(1_000); // an earlier one changes nothing
    expect(c.nowMs()).toBe(1_601_000);
  });
});
