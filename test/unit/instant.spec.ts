import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { instant } from '../../src/domain/instant.js';

describe('instant (Date.parse, remembered for the last few texts)', () => {
  it('gives what Date.parse gives, for any sequence of texts, repeats and invalid ones included', () => {
    const text = fc.oneof(
      fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }).map((d) => d.toISOString()),
      fc.constantFrom('', 'not a time', '2026-13-01T00:00:00Z', '2026-01-01', '2026-01-01T00:00:00+02:00'),
    );
    // Few distinct texts, so repeats hit the ring and evicted ones come back.
    fc.assert(
      fc.property(fc.array(text, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 60 }), (pool, picks) => {
        for (const i of picks) {
          const t = pool[i % pool.length];
          expect(Object.is(instant(t), Date.parse(t))).toBe(true);
        }
      }),
    );
  });

  it('tells apart texts that differ only in their last digit', () => {
    expect(instant('2026-01-01T00:00:00.001Z')).toBe(Date.parse('2026-01-01T00:00:00.001Z'));
    expect(instant('2026-01-01T00:00:00.002Z')).toBe(Date.parse('2026-01-01T00:00:00.002Z'));
    expect(instant('2026-01-01T00:00:00.001Z')).toBe(Date.parse('2026-01-01T00:00:00.001Z'));
  });
});
