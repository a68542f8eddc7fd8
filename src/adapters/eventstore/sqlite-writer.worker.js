// The embedded ledger's single writer, on its own thread so no fsync blocks the event loop that serves requests.
// Plain JavaScript: a worker loads this file directly, from src/ under the tests and from dist/ in production.
// It owns the only write connection; everything that arrives while a commit runs goes into the next transaction
// (group commit), each call checked and written whole (see SqliteEventStore for the contract).
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const db = new Database(workerData.file);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
const lastRevision = db.prepare('SELECT MAX(revision) AS r FROM events WHERE stream = ?');
const insert = db.prepare('INSERT INTO events (position, stream, revision, id, type, data, metadata, chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
const head = db.prepare('SELECT position, chain FROM events ORDER BY position DESC LIMIT 1').safeIntegers(true).get();
let lastPosition = head ? BigInt(head.position) : 0n;
let lastChain = head ? head.chain : '0'.repeat(64);
/** This thread is the only writer, so a stream's last revision stays true once read. */
const revisions = new Map();

// The same link as src/audit/chain.ts globalLink (a worker cannot import TypeScript); the audit tests check both agree.
const globalLink = (prev, position, hash) => createHash('sha256').update(`${prev}\n${position}\n${hash}`).digest('hex');

const revisionOf = (stream, staged) => {
  const known = staged.get(stream) ?? revisions.get(stream);
  if (known !== undefined) return known;
  const r = lastRevision.get(stream)?.r ?? -1;
  revisions.set(stream, r);
  return r;
};

const matches = (expected, last) => (expected === 'any' ? true : expected === 'no_stream' ? last < 0 : expected === last);

/** An append as SqliteEventStore.append sends it: [id, n, then per write stream, expected, k, then per event id, type, data, metadata, hash]. */
function unpack(m) {
  let i = 0;
  const id = m[i++];
  const writes = new Array(m[i++]);
  for (let w = 0; w < writes.length; w++) {
    const stream = m[i++];
    const expected = m[i++];
    const events = new Array(m[i++]);
    for (let e = 0; e < events.length; e++) events[e] = { id: m[i++], type: m[i++], data: m[i++], metadata: m[i++], hash: m[i++] };
    writes[w] = { stream, expected, events };
  }
  return { id, writes };
}

// The writer's own record of the ledger's head (position and global chain link), beside the file: an auditor's
// `verify` compares the ledger with it, so deleting the newest events (which leaves a consistent chain behind)
// shows. Written after the answers went out, replaced atomically; it may lag a commit, never lead one.
const headFile = workerData.headFile;
function recordHead() {
  try {
    writeFileSync(`${headFile}.tmp`, JSON.stringify({ position: String(lastPosition), chain: lastChain }));
    renameSync(`${headFile}.tmp`, headFile);
  } catch {
    // A full disk: the ledger write itself is what reports it.
  }
}

// One a power cut left empty, zeroed or cut short (the start has checked the ledger and warned of it): written anew
// now, not at the next commit, so an idle server's ledger verifies and backs up meanwhile. One that is missing
// waits for the next commit (a ledger of 2026-11-26 is told by having none).
const headReadable = () => {
  try {
    const h = JSON.parse(readFileSync(headFile, 'utf8'));
    // As readHeadRecord (data-dir-lock.ts) reads it.
    return typeof h.position === 'string' && /^\d+$/.test(h.position) && typeof h.chain === 'string';
  } catch {
    return false;
  }
};
if (headFile && lastPosition > 0n && existsSync(headFile) && !headReadable()) recordHead();

let queue = [];
let scheduled = false;

function flush() {
  scheduled = false;
  const batch = queue;
  queue = [];
  const staged = new Map();
  let chain = lastChain;
  let position = lastPosition;
  const outcomes = [];
  try {
    db.transaction(() => {
      for (const call of batch) {
        const conflict = call.writes.find((w) => !matches(w.expected, revisionOf(w.stream, staged)));
        if (conflict) {
          const actual = revisionOf(conflict.stream, staged);
          outcomes.push({ id: call.id, ok: false, stream: conflict.stream, expected: conflict.expected, actual: actual < 0 ? 'no_stream' : actual });
          continue;
        }
        const first = position + 1n;
        const bases = [];
        for (const w of call.writes) {
          let revision = revisionOf(w.stream, staged);
          bases.push(revision + 1);
          for (const e of w.events) {
            revision += 1;
            position += 1n;
            chain = globalLink(chain, position, e.hash);
            insert.run(position, w.stream, revision, e.id, e.type, e.data, e.metadata, chain);
          }
          staged.set(w.stream, revision);
        }
        outcomes.push({ id: call.id, ok: true, first, bases });
      }
    })();
  } catch (err) {
    // An I/O error (a full disk, say) aborts the whole transaction: every call in it fails, nothing is written.
    parentPort.postMessage({ failed: batch.map((c) => c.id), error: { message: err.message, code: err.code } });
    return;
  }
  for (const [stream, revision] of staged) revisions.set(stream, revision);
  lastChain = chain;
  lastPosition = position;
  parentPort.postMessage({ outcomes });
  recordHead();
}

parentPort.on('message', (msg) => {
  if (msg.close) {
    if (queue.length > 0) flush();
    db.close();
    parentPort.postMessage({ closed: true });
    return;
  }
  // The appends of one turn of the main thread's event loop.
  for (const m of msg) {
    queue.push(unpack(m));
    if (!workerData.groupCommit) flush();
  }
  if (!workerData.groupCommit) return;
  if (!scheduled) {
    scheduled = true;
    setImmediate(flush);
  }
});
