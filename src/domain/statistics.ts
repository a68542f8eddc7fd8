/** Pure figures for comparing allocation policies (see src/scheduling/simulator.ts). */

/**
 * Gini coefficient of non-negative values: 0 when all are equal, (n-1)/n when one holds everything.
 * Half the mean absolute difference over all ordered pairs, divided by the mean. All zeros (or none) give 0.
 */
export function gini(values: readonly number[]): number {
  const n = values.length;
  if (n === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted[0] < 0) throw new RangeError('gini needs non-negative values');
  let total = 0;
  let ranked = 0;
  sorted.forEach((x, i) => {
    total += x;
    ranked += (i + 1) * x;
  });
  if (total === 0) return 0;
  // With x sorted ascending and ranks 1..n: G = 2 sum(i x_i) / (n sum x) - (n + 1) / n.
  return Math.max(0, (2 * ranked) / (n * total) - (n + 1) / n);
}

/**
 * Jain's fairness index (sum x)^2 / (n sum x^2): 1 when all are equal, 1/n when one gets everything.
 * All zeros count as equal (1); no values give NaN.
 */
export function jain(values: readonly number[]): number {
  const n = values.length;
  if (n === 0) return NaN;
  let sum = 0;
  let squares = 0;
  for (const x of values) {
    sum += x;
    squares += x * x;
  }
  return squares === 0 ? 1 : (sum * sum) / (n * squares);
}

/**
 * Nearest-rank percentile: the smallest value with at least p% of the values at or below it (p in [0, 100]).
 * No values give NaN.
 */
export function percentile(values: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be within [0, 100], got ${p}`);
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1];
}

/**
 * Max-min fair split of `capacity` among demands (water-filling): nobody gets more than it asks for, and what
 * one cannot use is shared equally among the others. The result keeps the order of `demands`.
 */
export function maxMinFair(capacity: number, demands: readonly number[]): number[] {
  const share = demands.map(() => 0);
  const order = demands.map((d, i) => ({ d: Math.max(0, d), i })).sort((a, b) => a.d - b.d);
  let left = Math.max(0, capacity);
  for (let k = 0; k < order.length; k++) {
    const even = left / (order.length - k);
    const given = Math.min(order[k].d, even);
    share[order[k].i] = given;
    left -= given;
  }
  return share;
}
