import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The built store (a worker thread does not run under jest's transform), in a process of its own: under jest
// something else always keeps the event loop alive, which hid this.
const STORE = fileURLToPath(new URL('../../dist/src/adapters/eventstore/sqlite-event-store.js', import.meta.url));

describe('embedded ledger: close in a process with nothing else to do', () => {
  it.each([true, false])('resolves after the last append, group commit %s (it used to let the process exit first)', (groupCommit) => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-close-'));
    const file = join(dir, 'ledger.sqlite');
    const script = `
      const { SqliteEventStore } = await import(${JSON.stringify(STORE)});
      const store = new SqliteEventStore(${JSON.stringify(file)}, ${groupCommit});
      await store.append([{ stream: 's-1', expected: 'no_stream', events: [{ type: 'X', data: { n: 1 } }] }]);
      await store.close();
      console.log('closed');`;
    writeFileSync(join(dir, 'close.mjs'), script);
    const run = spawnSync(process.execPath, [join(dir, 'close.mjs')], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, NODE_OPTIONS: '' } });
    expect(run.stderr).toBe('');
    expect(run.stdout.trim()).toBe('closed');
    expect(run.status).toBe(0);
  });
});
