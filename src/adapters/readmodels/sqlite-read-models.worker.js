// The embedded read models' writer: its own connection on its own thread, so the main thread serves requests, or
// reads and folds a rebuild's next batch, meanwhile. Plain JavaScript: a worker loads this file directly,
// from src/ under the tests and from dist/ in production. The statements come from SqliteReadModels (workerData).
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

/** Puts per statement (SQLite applies a statement's rows in order, each upsert on its own). */
const CHUNK = workerData.putsPerStatement;

const db = new Database(workerData.file);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.pragma(`busy_timeout = ${workerData.busyTimeoutMs}`);
// A rebuild writes all over the documents' B-tree: keep more of it in memory than the default 2 MB.
db.pragma('cache_size = -65536');
const put = db.prepare(workerData.sql.put);
const puts = db.prepare(workerData.sql.puts);
const del = db.prepare(workerData.sql.del);
const saveCheckpoint = db.prepare(workerData.sql.saveCheckpoint);
const args = new Array(CHUNK * 4);

/** rows: [collection, id, JSON of the document or null for a delete, position] per change, flat, applied in order. */
const applyTx = db.transaction((projection, version, rows, checkpoint) => {
  let i = 0;
  while (i < rows.length) {
    if (rows[i + 2] === null) {
      del.run(rows[i], rows[i + 1], rows[i + 3]);
      i += 4;
      continue;
    }
    // The next CHUNK changes are all puts: one statement.
    let n = 0;
    while (n < CHUNK && i + n * 4 < rows.length && rows[i + n * 4 + 2] !== null) n++;
    if (n === CHUNK) {
      for (let k = 0; k < CHUNK * 4; k++) args[k] = rows[i + k];
      puts.run(args);
    } else {
      for (let k = 0; k < n; k++) put.run(rows[i + k * 4], rows[i + k * 4 + 1], rows[i + k * 4 + 2], rows[i + k * 4 + 3]);
    }
    i += n * 4;
  }
  saveCheckpoint.run(projection, checkpoint, version);
});

parentPort.on('message', ({ id, projection, version, rows, checkpoint }) => {
  try {
    applyTx(projection, version, rows, checkpoint);
    parentPort.postMessage({ id });
  } catch (err) {
    parentPort.postMessage({ id, error: { message: String(err?.message ?? err), code: err?.code } });
  }
});
