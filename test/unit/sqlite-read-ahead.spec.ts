import { afterEach, describe, expect, it } from '@jest/globals';
import Database from 'better-sqlite3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LeanEvent } from '../../src/application/ports/event-store.port.js';
import { PageReader } from '../../src/adapters/eventstore/sqlite-page-reader.js';
import { APPEND_ONLY_TRIGGERS, SqliteEventStore } from '../../src/adapters/eventstore/sqlite-event-store.js';

/** A closed ledger of `n` events over a few streams and types, with data of a few shapes. */
async function ledger(n: number): Promise<string> {
  const file = join(mkdtempSync(join(tmpdir(), 'duffy-ahead-')), 'ledger.sqlite');
  const store = new SqliteEventStore(file);
  const batch = 250;
  for (let from = 0; from < n; from += batch) {
    const events = Array.from({ length: Math.min(batch, n - from) }, (_, i) => ({
      type: ['Counted', 'Named', 'Nested'][(from + i) % 3],
      data: { n: from + i, name: `"quoted", with commas, ${from + i}`, nested: { list: [from + i, null, true] }, unicode: 'é✓' },
      metadata: { actor: 'test' },
    }));
    await store.append([{ stream: `s-${(from / batch) % 4}`, expected: 'any', events }]);
  }
  await store.close();
  return file;
}

function edit(file: string, sql: string): void {
  const db = new Database(file);
  db.exec(`DROP TRIGGER events_no_update; ${sql}; ${APPEND_ONLY_TRIGGERS.events_no_update}`);
  db.close();
}

/** Everything a lean subscription delivers up to `until`, or the error it stopped with. */
async function leanUntil(store: SqliteEventStore, until: bigint): Promise<{ events: LeanEvent[]; error?: unknown }> {
  const events: LeanEvent[] = [];
  let finish!: (error?: unknown) => void;
  const done = new Promise<unknown>((r) => (finish = r));
  const sub = store.subscribeAllLean(
    0n,
    (e) => {
      events.push(e);
      if (e.position >= until) finish();
    },
    (err) => finish(err),
  );
  const error = await done;
  await sub.close();
  return { events, error };
}

const lean = ({ position, revision, type, data }: LeanEvent) => ({ position, revision, type, data });

describe('the embedded ledger reads a long lean catch-up ahead on a thread', () => {
  const open: SqliteEventStore[] = [];
  const store = (file: string, readAheadFrom?: number) => {
    const s = new SqliteEventStore(file, { readonly: true, readAheadFrom });
    open.push(s);
    return s;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  it('delivers over many pages exactly what the rows say, as reading them here does', async () => {
    const file = await ledger(3_500);
    const ahead = await leanUntil(store(file, 0), 3_500n);
    const here = await leanUntil(store(file, Number.POSITIVE_INFINITY), 3_500n);
    expect(ahead.error).toBeUndefined();
    expect(ahead.events).toHaveLength(3_500);
    expect(ahead.events.map(lean)).toEqual(here.events.map(lean));
    expect(ahead.events.map((e) => e.position)).toEqual(Array.from({ length: 3_500 }, (_, i) => BigInt(i + 1)));
  });

  it('gives pages in step with the subscriber, and none out of step', async () => {
    const file = await ledger(2_100);
    const reader = new PageReader(file, 0n, 1_000);
    try {
      const first = await reader.next(0n);
      expect(first?.map((e) => e.position)).toEqual(Array.from({ length: 1_000 }, (_, i) => BigInt(i + 1)));
      expect(first?.[0]).toEqual({ position: 1n, revision: 0, type: 'Counted', data: { n: 0, name: '"quoted", with commas, 0', nested: { list: [0, null, true] }, unicode: 'é✓' } });
      // Asked for what does not follow the last page: not given, the caller reads it itself.
      expect(await reader.next(5n)).toBeUndefined();
    } finally {
      reader.close();
    }
  });

  it('a damaged row stops the subscription naming its position, as without the thread', async () => {
    const file = await ledger(1_500);
    edit(file, "UPDATE events SET data = '{not json' WHERE position = 1200");
    const ahead = await leanUntil(store(file, 0), 1_500n);
    const here = await leanUntil(store(file, Number.POSITIVE_INFINITY), 1_500n);
    expect(String((ahead.error as Error)?.message)).toMatch(/^the ledger's row at position 1200 is not an event \(not JSON: .*\)/);
    expect(String((ahead.error as Error)?.message)).toBe(String((here.error as Error)?.message));
    // The pages before the damaged one.
    expect(ahead.events.map(lean)).toEqual(here.events.map(lean));
    expect(ahead.events).toHaveLength(1_000);
  });

  // After a refused page the subscription reads on here: each case on a ledger of its own.
  it.each([
    ['a comma in its type', "UPDATE events SET type = 'Odd,Type' WHERE position = 1020", (e: LeanEvent) => expect(e.type).toBe('Odd,Type')],
    ['a revision that is not a number', "UPDATE events SET revision = 'x' WHERE position = 1020", (e: LeanEvent) => expect(e.revision).toBe('x')],
    ['a revision that is not whole', 'UPDATE events SET revision = 1.5 WHERE position = 1020', (e: LeanEvent) => expect(e.revision).toBe(1.5)],
    ['a negative revision', 'UPDATE events SET revision = -1 WHERE position = 1020', (e: LeanEvent) => expect(e.revision).toBe(-1)],
    ['an empty revision', "UPDATE events SET revision = '' WHERE position = 1020", (e: LeanEvent) => expect(e.revision).toBe('')],
  ])('a row the page texts cannot carry (%s) is read here and delivered whole', async (_, sql, check) => {
    const file = await ledger(2_500);
    edit(file, sql);
    const ahead = await leanUntil(store(file, 0), 2_500n);
    expect(ahead.error).toBeUndefined();
    expect(ahead.events.map((e) => e.position)).toEqual(Array.from({ length: 2_500 }, (_, i) => BigInt(i + 1)));
    check(ahead.events[1019]);
  });

  it('rows whose data parse only together (one value over two rows, two values in a third) are named, never shifted onto each other', async () => {
    const file = await ledger(1_500);
    edit(file, `UPDATE events SET data = '{"a":[1' WHERE position = 1100; UPDATE events SET data = '2]}' WHERE position = 1101; UPDATE events SET data = '{"c":1},{"d":2}' WHERE position = 1102`);
    const ahead = await leanUntil(store(file, 0), 1_500n);
    const here = await leanUntil(store(file, Number.POSITIVE_INFINITY), 1_500n);
    expect(String((ahead.error as Error)?.message)).toMatch(/^the ledger's row at position 1100 is not an event \(not JSON/);
    expect(String((ahead.error as Error)?.message)).toBe(String((here.error as Error)?.message));
    expect(ahead.events.map(lean)).toEqual(here.events.map(lean));
  });

  it('a row whose data is two values is named as not JSON, as without the thread', async () => {
    const file = await ledger(2_500);
    edit(file, "UPDATE events SET data = '{\"n\":2100}' || ',' || '{\"n\":-1}' WHERE position = 2101");
    const ahead = await leanUntil(store(file, 0), 2_500n);
    expect(ahead.events.map((e) => e.data.n)).toEqual(Array.from({ length: 2_000 }, (_, i) => i));
    expect(String((ahead.error as Error)?.message)).toMatch(/^the ledger's row at position 2101 is not an event \(not JSON/);
  });
});
