import { describe, expect, it } from '@jest/globals';
import type { Response } from 'express';
import { sendList } from '../../src/http/json-list.js';

/** What the helper gives Express: the type it set and the body it sent. */
function answer() {
  const sent: { type?: string; body?: string } = {};
  const res = { type: (t: string) => ((sent.type = t), res), send: (b: string) => ((sent.body = b), res) } as unknown as Response;
  return { res, sent };
}

describe('sendList', () => {
  it.each([0, 1, 500, 501, 1_234])('given %i items, sends the very text JSON.stringify gives the whole answer', async (n) => {
    const items = Array.from({ length: n }, (_, i) => ({ id: i, name: `n\u00e9-${i}"\n`, data: i % 2 ? null : { a: [1, { b: null }] } }));
    const view = (x: (typeof items)[number]) => ({ id: x.id, hostname: x.name, data: x.data, comment: null });
    const { res, sent } = answer();
    await sendList(res, { action: 'get' }, 'nodes', items, view);
    expect(sent.type).toBe('json');
    expect(sent.body).toBe(JSON.stringify({ action: 'get', nodes: items.map(view) }));
  });

  it('gives the event loop turns while it builds a long list', async () => {
    let turns = 0;
    let building = true;
    const count = () => building && (turns++, setImmediate(count));
    setImmediate(count);
    const { res } = answer();
    await sendList(res, { action: 'get' }, 'nodes', Array.from({ length: 5_000 }, (_, i) => i), (i) => ({ id: i }));
    building = false;
    expect(turns).toBeGreaterThan(5);
  });
});
