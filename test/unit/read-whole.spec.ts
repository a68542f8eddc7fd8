import { describe, expect, it } from '@jest/globals';
import { ReadSide } from '../../src/application/read-side.service.js';
import type { Ledger } from '../../src/application/ledger.service.js';
import type { ReadModelStore } from '../../src/application/ports/read-model.port.js';

/** A ReadSide whose runners have caught up with nothing (position 0): readWhole reads at once. */
const readSide = () => new ReadSide({} as ReadModelStore, { store: {} } as unknown as Ledger);

describe('ReadSide.readWhole', () => {
  it('given a read that fails while a rebuild drops the documents, when it reads, then it reads again and answers', async () => {
    const side = readSide();
    let reads = 0;
    const answer = await side.readWhole(0n, async () => {
      reads += 1;
      if (reads === 1) {
        side.runners[0].resets += 1; // the rebuild, under the read
        throw new Error('collection dropped under the cursor');
      }
      return 'whole';
    });
    expect([answer, reads]).toEqual(['whole', 2]);
  });

  it('given a read that fails with no rebuild under way, then the failure is the answer', async () => {
    await expect(readSide().readWhole(0n, async () => Promise.reject(new Error('the store is down')))).rejects.toThrow('the store is down');
  });
});
