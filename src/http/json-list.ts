import type { Response } from 'express';

/** Items turned into JSON between turns of the event loop: a few milliseconds of the main thread. */
const CHUNK = 500;

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Answers `{ ...head, [key]: items.map(view) }`, the very text `res.json` sends, building it CHUNK items at a
 * time with a turn of the event loop between chunks: an admin's listing of 20,000 nodes held the main thread, and
 * every request behind it, for as long as its views and their JSON took.
 */
export async function sendList<T>(res: Response, head: Record<string, unknown>, key: string, items: readonly T[], view: (item: T) => unknown): Promise<void> {
  // `{...,"key":[` and `]}`: `key` is the last member.
  const empty = JSON.stringify({ ...head, [key]: [] });
  const parts = [empty.slice(0, -2)];
  for (let i = 0; i < items.length; i += CHUNK) {
    if (i > 0) await nextTurn();
    const chunk = items.slice(i, i + CHUNK).map((item) => JSON.stringify(view(item)));
    parts.push((i > 0 ? ',' : '') + chunk.join(','));
  }
  parts.push(']}');
  res.type('json').send(parts.join(''));
}
