import { Worker } from 'node:worker_threads';
import type { LeanEvent } from '../../application/ports/event-store.port.js';
import { isRecord } from '../../audit/chain.js';

/** Between two events' data in a page: a control character, which a JSON text only holds escaped. */
const DATA_SEPARATOR = '\u0001';

/** A page as sqlite-reader.worker.js sends it. */
interface PageMessage {
  /** The position the page was read after. */
  from: number;
  count: number;
  /** The events' data separated by DATA_SEPARATOR; types, positions and revisions by commas; null for an empty page. */
  data: string | null;
  types: string | null;
  positions: string | null;
  revisions: string | null;
}

/**
 * Pages of lean events read ahead on a thread of its own (sqlite-reader.worker.js), for a subscriber far behind the
 * ledger's head. An optimisation only: `next` answers undefined whenever a page cannot be taken as it is (out of step,
 * a row SQLite's texts cannot carry, the thread gone), and the caller reads that page itself, which also names a
 * damaged row as it always did.
 */
export class PageReader {
  private readonly worker: Worker;
  private readonly pages: PageMessage[] = [];
  private waiting?: () => void;
  private broken = false;

  constructor(file: string, after: bigint, limit: number, ahead = 3) {
    this.worker = new Worker(new URL('./sqlite-reader.worker.js', import.meta.url), { workerData: { file, after: Number(after), limit, ahead } });
    this.worker.on('message', (page: PageMessage) => {
      this.pages.push(page);
      this.waiting?.();
    });
    const stop = () => {
      this.broken = true;
      this.waiting?.();
    };
    this.worker.on('error', stop);
    this.worker.on('exit', stop);
    this.worker.unref();
  }

  /** The events after `after`, or undefined when this reader cannot give them (read them yourself). */
  async next(after: bigint): Promise<LeanEvent[] | undefined> {
    if (this.pages.length === 0 && !this.broken) {
      // Only a subscriber waiting for a page keeps the process alive.
      this.worker.ref();
      await new Promise<void>((r) => (this.waiting = r));
      this.waiting = undefined;
      this.worker.unref();
    }
    const page = this.pages.shift();
    if (!page || page.from !== Number(after)) return undefined;
    this.worker.postMessage(1);
    return leanPage(page, after);
  }

  close(): void {
    void this.worker.terminate();
  }
}

/**
 * The page's events, or undefined unless every row came through whole: as many data, types, positions and revisions
 * as rows (SQLite's group_concat skips NULLs, and a separator inside a value splits it), positions rising from
 * `after`, revisions of digits alone, and each data a JSON object on its own (as reading the row here checks it).
 */
function leanPage(page: PageMessage, after: bigint): LeanEvent[] | undefined {
  const { count } = page;
  if (count === 0) return [];
  const texts = page.data?.split(DATA_SEPARATOR) ?? [];
  const types = page.types?.split(',') ?? [];
  if (texts.length !== count || types.length !== count) return undefined;
  const positions = new Float64Array(count);
  const revisions = new Float64Array(count);
  if (!page.positions || !page.revisions || !wholeNumbers(page.positions, positions) || !wholeNumbers(page.revisions, revisions)) return undefined;
  const events = new Array<LeanEvent>(count);
  let last = Number(after);
  try {
    for (let i = 0; i < count; i++) {
      const data: unknown = JSON.parse(texts[i]);
      if (positions[i] <= last || !isRecord(data)) return undefined;
      last = positions[i];
      events[i] = { position: BigInt(positions[i]), revision: revisions[i], type: types[i], data };
    }
  } catch {
    return undefined;
  }
  return events;
}

/**
 * Reads `text`, whole numbers apart by commas, into `into`; false unless it holds exactly that many, each of digits
 * alone and exact as a double. Scanned, not split: a string and a parse per number cost a rebuild about 90 ms a million.
 */
function wholeNumbers(text: string, into: Float64Array): boolean {
  let k = 0;
  let n = 0;
  let digits = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i === text.length ? 44 : text.charCodeAt(i);
    if (c === 44) {
      if (digits === 0 || k === into.length || n > Number.MAX_SAFE_INTEGER) return false;
      into[k++] = n;
      n = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      n = n * 10 + (c - 48);
      digits += 1;
    } else {
      return false;
    }
  }
  return k === into.length;
}
