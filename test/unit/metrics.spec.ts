import { describe, expect, it } from '@jest/globals';
import { gini, jain, maxMinFair, percentile } from '../../src/domain/statistics.js';

describe('gini', () => {
  it('is 0 when everyone has the same, and for all zeros or nothing', () => {
    expect(gini([5, 5, 5, 5])).toBe(0);
    expect(gini([0, 0, 0])).toBe(0);
    expect(gini([])).toBe(0);
  });

  it('is (n-1)/n when one holds everything', () => {
    // sorted 0,0,0,1: 2*(4*1)/(4*1) - 5/4 = 0.75
    expect(gini([0, 1, 0, 0])).toBeCloseTo(0.75, 12);
  });

  it('matches the mean absolute difference by hand', () => {
    // 1,2,3: sum over ordered pairs |xi-xj| = 2*(1+2+1) = 8; 8 / (2 * n^2 * mean) = 8 / (2*9*2) = 2/9
    expect(gini([3, 1, 2])).toBeCloseTo(2 / 9, 12);
    // 1,1,4: pairs 0,3,3 -> 12 / (2*9*2) = 1/3
    expect(gini([1, 4, 1])).toBeCloseTo(1 / 3, 12);
  });

  it('does not depend on scale or order', () => {
    expect(gini([10, 20, 30])).toBeCloseTo(gini([3, 1, 2]), 12);
  });

  it('refuses negative values', () => {
    expect(() => gini([1, -1])).toThrow(RangeError);
  });
});

describe('jain', () => {
  it('is 1 for equal values and 1/n when one gets everything', () => {
    expect(jain([2, 2, 2, 2])).toBe(1);
    expect(jain([0, 0, 7, 0])).toBe(0.25);
    expect(jain([0, 0])).toBe(1);
  });

  it('matches the formula by hand', () => {
    // (1+2+3)^2 / (3 * (1+4+9)) = 36/42
    expect(jain([1, 2, 3])).toBeCloseTo(6 / 7, 12);
    // (1+3)^2 / (2 * 10) = 0.8
    expect(jain([1, 3])).toBeCloseTo(0.8, 12);
  });

  it('is NaN without values', () => {
    expect(jain([])).toBeNaN();
  });
});

describe('percentile (nearest rank)', () => {
  const five = [50, 15, 40, 20, 35];

  it('takes the value at rank ceil(p/100 * n)', () => {
    expect(percentile(five, 30)).toBe(20); // rank ceil(1.5) = 2
    expect(percentile(five, 40)).toBe(20); // rank 2
    expect(percentile(five, 50)).toBe(35); // rank ceil(2.5) = 3
    expect(percentile(five, 100)).toBe(50);
    expect(percentile(five, 0)).toBe(15);
  });

  it('gives p50, p95, p99 of 1..100 as 50, 95, 99', () => {
    const hundred = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect([50, 95, 99].map((p) => percentile(hundred, p))).toEqual([50, 95, 99]);
  });

  it('does not change its input, and is NaN without values', () => {
    const copy = [...five];
    percentile(five, 50);
    expect(five).toEqual(copy);
    expect(percentile([], 50)).toBeNaN();
    expect(() => percentile(five, 101)).toThrow(RangeError);
  });
});

describe('maxMinFair', () => {
  it('gives everyone its demand when there is enough', () => {
    expect(maxMinFair(10, [2, 3])).toEqual([2, 3]);
  });

  it('shares what the small demands leave equally among the large ones', () => {
    // 10 over [2, 8, 8]: 2, then 8 left for two -> 4 each
    expect(maxMinFair(10, [8, 2, 8])).toEqual([4, 2, 4]);
    // 9 over [1, 2, 10, 10]: 1, 2, then 6 for two -> 3 each
    expect(maxMinFair(9, [10, 1, 10, 2])).toEqual([3, 1, 3, 2]);
  });

  it('splits evenly among equal demands and gives nothing without capacity', () => {
    expect(maxMinFair(3, [5, 5, 5])).toEqual([1, 1, 1]);
    expect(maxMinFair(0, [1, 2])).toEqual([0, 0]);
  });
});
