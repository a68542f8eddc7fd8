// Reads the embedded ledger ahead of a subscriber that is far behind (a rebuild), on its own thread and its own
// read-only connection, so SQLite's work is not on the event loop. Plain JavaScript, as the writer (see there).
// A page is four texts SQLite builds (the events' data, their types, positions and revisions) and the row count: the
// main thread splits them, not reading four cells a row. See PageReader for the checks.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const db = new Database(workerData.file, { readonly: true, fileMustExist: true });
const read = db
  .prepare(
    // In the subquery's order, which is the rows' (no sort per aggregate); PageReader checks that positions rise.
    // The data apart by U+0001, which no JSON text holds (a control character is escaped inside a string).
    `SELECT group_concat(data, char(1)), group_concat(type), group_concat(position), group_concat(revision), count(*), max(position)
     FROM (SELECT position, revision, type, data FROM events WHERE position > ? ORDER BY position LIMIT ?)`,
  )
  .raw(true);

let after = workerData.after;
let credit = workerData.ahead;
let ended = false;

function pump() {
  while (credit > 0 && !ended) {
    credit -= 1;
    const [data, types, positions, revisions, count, last] = read.get(after, workerData.limit);
    parentPort.postMessage({ from: after, count, data, types, positions, revisions });
    // The end of the file as it is now: the subscriber reads on by itself (the live tail follows).
    if (count === 0) ended = true;
    else after = last;
  }
}

parentPort.on('message', (pages) => {
  credit += pages;
  pump();
});
pump();
