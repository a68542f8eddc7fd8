// The embedded read models' writer for large batches (a rebuild, a catch-up): its own connection on its own thread,
// so the main thread reads and folds the next batch meanwhile. Plain JavaScript: a worker loads this file directly,
// from src/ under the tests and from dist/ in production. The statements come from SqliteReadModels (workerData).
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const db = new Database(workerData.file);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.pragma(`busy_timeout = ${workerData.busyTimeoutMs}`);
const put = db.prepare(workerData.sql.put);
const del = db.prepare(workerData.sql.del);
const saveCheckpoint = db.prepare(workerData.sql.saveCheckpoint);

/** rows: [collection, id, JSON of the document or null for a delete, position] per change, flat. */
const applyTx = db.transaction((projection, version, rows, checkpoint) => {
  for (let i = 0; i < rows.length; i += 4) {
    if (rows[i + 2] === null) del.run(rows[i], rows[i + 1], rows[i + 3]);
    else put.run(rows[i], rows[i + 1], rows[i + 2], rows[i + 3]);
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
