import { describe, expect, it } from '@jest/globals';
import { STATUS_OF_KIND, refusalKindOf } from '../../src/http/refusal.js';

describe('the Duffy-Refusal kinds', () => {
  it("read a kind-less answer's status as the plain kind of that status: every kind but quota and capacity, which only Duffy's rules name", () => {
    for (const [kind, status] of Object.entries(STATUS_OF_KIND)) {
      expect([kind, refusalKindOf(status)]).toEqual([kind, kind === 'quota' ? 'forbidden' : kind === 'capacity' ? 'invalid' : kind]);
    }
    expect([400, 405, 413, 415, 431].map(refusalKindOf)).toEqual(['invalid', 'invalid', 'invalid', 'invalid', 'invalid']);
    expect([200, 201, 500].map(refusalKindOf)).toEqual([undefined, undefined, undefined]);
  });
});
