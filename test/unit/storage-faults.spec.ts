import { describe, expect, it, jest } from '@jest/globals';
import Database from 'better-sqlite3';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorsFilter, describe as describeError } from '../../src/http/errors.filter.js';
import { FaultLog, storageFault } from '../../src/application/ports/storage-fault.port.js';
import { createReadModels } from '../../src/adapters/readmodels/read-models.factory.js';
import { KEY_FILE, loadOrCreateKey } from '../../src/audit/checkpoint.service.js';
import { DataDirLockedError, LOCK_FILE, STALE_MS, lockDataDir } from '../../src/adapters/eventstore/data-dir-lock.js';
import { isLegacyLedger } from '../../src/adapters/eventstore/legacy-ledger.js';
import { APPEND_ONLY_TRIGGERS, LedgerDamagedError, SqliteEventStore, assertLedgerReadable, assertNotBehindHead } from '../../src/adapters/eventstore/sqlite-event-store.js';

/** Errors as better-sqlite3 and Node raise them: the code says what happened, the message is free text. */
const raised = (code: string, message = 'something went wrong') => Object.assign(new Error(message), { code });

describe('a write the store cannot make', () => {
  it.each([
    ['SQLITE_FULL', 'the disk is full'],
    ['SQLITE_IOERR_WRITE', 'the disk reported an I/O error'],
    ['SQLITE_IOERR', 'the disk reported an I/O error'],
    ['ENOSPC', 'the disk is full'],
    ['SQLITE_READONLY', 'the storage is read-only'],
  ])('%s is a 503 naming the cause', (code, what) => {
    expect(describeError(raised(code))).toEqual([503, `Duffy cannot write its data: ${what} (${code}); try again later`]);
  });

  it.each([
    ['SQLITE_FULL', 'free space on its file system'],
    ['SQLITE_IOERR_SHMSIZE', 'free space on its file system'],
    ['SQLITE_IOERR_WRITE', 'check the disk'],
    ['SQLITE_READONLY_DBMOVED', 'make the data directory and its files writable for this user'],
    ['EROFS', 'make the data directory and its files writable for this user'],
  ])('%s says what to do about it (a start that fails on it says so in one line)', (code, fix) => {
    expect(storageFault(raised(code))?.fix).toMatch(new RegExp(`^${fix}`));
  });

  it('is found under a wrapping error, by its code and never its message', () => {
    expect(describeError(new Error('commit failed', { cause: raised('SQLITE_FULL') }))[0]).toBe(503);
    expect(describeError(new Error('database or disk is full'))).toEqual([500, 'internal error: see the server log']);
  });

  it('answers with Retry-After', () => {
    const headers: Record<string, string> = {};
    let sent: { status?: number; body?: unknown } = {};
    const res = {
      headersSent: false,
      setHeader: (k: string, v: string) => (headers[k] = v),
      status(status: number) {
        sent.status = status;
        return this;
      },
      json: (body: unknown) => (sent = { ...sent, body }),
    };
    new ErrorsFilter().catch(raised('SQLITE_FULL', 'database or disk is full'), { switchToHttp: () => ({ getResponse: () => res }) } as never);
    expect(sent.status).toBe(503);
    expect(headers['Retry-After']).toBe('60');
    expect(sent.body).toEqual({ detail: 'Duffy cannot write its data: the disk is full (SQLITE_FULL); try again later' });
  });

  it('is logged as one line without a stack per 10 s, however many requests it refuses', () => {
    jest.useFakeTimers({ now: 0 });
    try {
      const filter = new ErrorsFilter();
      const logged: string[] = [];
      const log = (filter as unknown as { log: { warn: (m: string) => void; error: (m: string) => void } }).log;
      log.warn = (m) => logged.push(`warn ${m}`);
      log.error = (m) => logged.push(`error ${m}`);
      const res = { headersSent: false, setHeader: () => undefined, status() { return this; }, json: () => undefined };
      const answer = () => filter.catch(raised('SQLITE_FULL', 'database or disk is full'), { switchToHttp: () => ({ getResponse: () => res }) } as never);
      for (let i = 0; i < 500; i++) answer();
      jest.setSystemTime(10_000);
      answer();
      expect(logged).toEqual([
        'warn 503 Duffy cannot write its data: the disk is full (SQLITE_FULL); try again later',
        'warn 503 Duffy cannot write its data: the disk is full (SQLITE_FULL); try again later (and 499 more like it since the last line)',
      ]);
    } finally {
      jest.useRealTimers();
    }
  });
});

describe('FaultLog', () => {
  it('says the faults it kept quiet once the interval is over, even when none comes after them', () => {
    jest.useFakeTimers({ now: 0 });
    try {
      const logged: string[] = [];
      const faults = new FaultLog({ warn: (m) => logged.push(`warn ${m}`), error: (m) => logged.push(`error ${m}`) });
      faults.storageFault('write failed: disk full (1)');
      jest.advanceTimersByTime(1_000);
      faults.storageFault('write failed: disk full (2)');
      faults.storageFault('write failed: disk full (3)');
      expect(logged).toEqual(['warn write failed: disk full (1)']);
      // The disk freed: nothing more fails, and the last two are not lost.
      jest.advanceTimersByTime(9_000);
      expect(logged).toEqual(['warn write failed: disk full (1)', 'warn write failed: disk full (3) (and 1 more like it since the last line)']);
      jest.advanceTimersByTime(60_000);
      expect(logged).toHaveLength(2);
      // A fault that is no storage fault is said at once, as an error.
      faults.failed('reconcile failed: bug', new Error('bug'));
      expect(logged[2]).toBe('error reconcile failed: bug');
    } finally {
      jest.useRealTimers();
    }
  });
});

describe('the signing key after a crash', () => {
  it('replaces a key file a crash left empty during the first start, instead of failing every start after it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-key-'));
    writeFileSync(join(dir, KEY_FILE), '');
    const key = loadOrCreateKey(dir);
    expect(key.created).toBe(true);
    // Whole and durable under its own name: no private copy left beside it, and the next start reads the same key.
    expect(readdirSync(dir)).toEqual([KEY_FILE]);
    expect(statSync(join(dir, KEY_FILE)).mode & 0o777).toBe(0o600);
    expect(loadOrCreateKey(dir)).toMatchObject({ created: false, publicKey: key.publicKey });
  });
});

describe('the data directory lock', () => {
  it('has one holder: a second taker is refused with the holder\'s pid and the directory; release frees it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-lock-'));
    const lock = lockDataDir(dir);
    expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    expect(() => lockDataDir(dir)).toThrow(DataDirLockedError);
    expect(() => lockDataDir(dir)).toThrow(new RegExp(`${dir}.*pid ${process.pid}`));
    lock.release();
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
    lockDataDir(dir).release();
  });

  it('puts its lock back within a heartbeat when it is removed under it, so no second Duffy starts on the ledger', () => {
    jest.useFakeTimers();
    const dir = mkdtempSync(join(tmpdir(), 'duffy-lock-'));
    const lock = lockDataDir(dir);
    try {
      // An operator who took it for a dead one's, or a cleaner of old files.
      unlinkSync(join(dir, LOCK_FILE));
      jest.advanceTimersByTime(10_000);
      expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
      expect(() => lockDataDir(dir)).toThrow(DataDirLockedError);
    } finally {
      lock.release();
      jest.useRealTimers();
    }
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
  });

  it('refuses a second taker while its lock file is removed and not yet put back (the holder keeps the takeover guard)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-lock-'));
    const lock = lockDataDir(dir);
    try {
      unlinkSync(join(dir, LOCK_FILE));
      expect(() => lockDataDir(dir)).toThrow(/in use by another Duffy \(it holds duffy\.lock\.takeover; its duffy\.lock was removed\)/);
      expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
    } finally {
      lock.release();
    }
    lockDataDir(dir).release();
  });

  it('holds its takeover guard again within a heartbeat when both files are removed under it (rm duffy.lock*)', () => {
    jest.useFakeTimers();
    const dir = mkdtempSync(join(tmpdir(), 'duffy-lock-'));
    const lock = lockDataDir(dir);
    try {
      unlinkSync(join(dir, LOCK_FILE));
      unlinkSync(join(dir, 'duffy.lock.takeover'));
      jest.advanceTimersByTime(10_000);
      expect(existsSync(join(dir, 'duffy.lock.takeover'))).toBe(true);
      unlinkSync(join(dir, LOCK_FILE));
      expect(() => lockDataDir(dir)).toThrow(/it holds duffy\.lock\.takeover/);
    } finally {
      lock.release();
      jest.useRealTimers();
    }
  });

  it('takes over a lock left by a process that is gone', () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-lock-'));
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
    const deadPid = Number(gone.stdout.toString());
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: deadPid }));
    const lock = lockDataDir(dir);
    expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    lock.release();
  });

  it('takes over a lock left by a process that was killed and not yet reaped (a zombie)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-lock-'));
    // `sleep 0.05` exits under a parent that never reaps it (sh replaced by `sleep 5`): a zombie for 5 s.
    const parent = spawn('sh', ['-c', 'sleep 0.05 & echo $!; exec sleep 5'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const zombie = Number(await new Promise<string>((r) => parent.stdout!.once('data', (d) => r(String(d)))));
      await new Promise((r) => setTimeout(r, 300));
      expect(readFileSync(`/proc/${zombie}/stat`, 'utf8')).toMatch(/\) Z /);
      writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: zombie, host: hostname() }));
      lockDataDir(dir).release();
    } finally {
      parent.kill('SIGKILL');
    }
  });

  it('takes over a lock naming its own pid that it never took (a container restarted as pid 1 again)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-lock-'));
    writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: process.pid, host: hostname() }));
    lockDataDir(dir).release();
  });

  it('refuses a fresh lock of another host, and takes it over once it is no longer refreshed', () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-lock-'));
    const file = join(dir, LOCK_FILE);
    writeFileSync(file, JSON.stringify({ pid: 4242, host: 'elsewhere' }));
    expect(() => lockDataDir(dir)).toThrow(/pid 4242 on elsewhere/);
    const old = new Date(Date.now() - STALE_MS - 5_000);
    utimesSync(file, old, old);
    lockDataDir(dir).release();
  });
});

describe('a damaged embedded read-model file', () => {
  const put = (id: string, position: bigint) => [{ op: 'put' as const, collection: 'c', id, doc: { id }, position }];
  /** A read-model file of earlier runs, then damaged: its first page garbled, or not SQLite at all. */
  const damaged = async (how: 'garbled' | 'not-sqlite') => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-rm-'));
    const file = join(dir, 'readmodels.sqlite');
    if (how === 'not-sqlite') writeFileSync(file, Buffer.alloc(8192, 0x5a));
    else {
      const earlier = createReadModels(undefined, dir);
      await earlier.apply('entities', 1, put('old', 7n), 7n);
      await earlier.close();
      const raw = readFileSync(file);
      raw.fill(0xff, 100, 300); // the first page's header and the schema table's cells
      writeFileSync(file, raw);
    }
    return { dir, file, bytes: readFileSync(file) };
  };

  it.each(['garbled', 'not-sqlite'] as const)('(%s) is set aside and a fresh one opened: Duffy starts and rebuilds it from the ledger', async (how) => {
    const { dir, bytes } = await damaged(how);
    const store = createReadModels(undefined, dir);
    expect(await store.checkpoint('entities')).toBeUndefined(); // from position 0
    await store.apply('entities', 1, put('new', 3n), 3n);
    expect(await store.find('c')).toEqual([{ id: 'new' }]);
    await store.close();
    const aside = readdirSync(dir).filter((f) => /^readmodels\.sqlite\.damaged-[^.]*$/.test(f) && !/-(wal|shm)$/.test(f));
    expect(aside).toHaveLength(1);
    expect(readFileSync(join(dir, aside[0]))).toEqual(bytes); // kept as it was, for a look
  });
});

describe('a damaged embedded ledger file', () => {
  it('is named in one line before start-up opens it (garbage, or a torn SQLite header); an SQLite file without events yet is an empty ledger', () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-bad-ledger-'));
    const file = join(dir, 'ledger.sqlite');
    for (const bytes of [Buffer.from('not a database at all, but long enough to look like a page header.'.repeat(100)), Buffer.concat([Buffer.from('SQLite format 3\0'), Buffer.alloc(84, 0xff)])]) {
      writeFileSync(file, bytes);
      expect(() => assertLedgerReadable(file)).toThrow(LedgerDamagedError);
      expect(() => assertLedgerReadable(file)).toThrow(/^the ledger .*ledger\.sqlite is damaged \(SQLITE_(NOTADB|CORRUPT)/);
    }
    writeFileSync(file, '');
    expect(() => assertLedgerReadable(file)).not.toThrow();
    const store = new SqliteEventStore(join(dir, 'good.sqlite'));
    return store.close().then(() => expect(() => assertLedgerReadable(join(dir, 'good.sqlite'))).not.toThrow());
  });

  it.each([
    ['a trigger dropped', 'DROP TRIGGER events_no_delete', /trigger events_no_delete is missing/],
    ['a trigger neutered', "DROP TRIGGER events_no_update; CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT 1; END", /trigger events_no_update was changed/],
    ['a trigger of its own', "CREATE TRIGGER hush BEFORE INSERT ON events BEGIN SELECT RAISE(IGNORE); END", /trigger hush is not Duffy's/],
    // SQLite compares names without case: this one fires on events too.
    ['a trigger of its own ON EVENTS', "CREATE TRIGGER zz BEFORE INSERT ON EVENTS BEGIN SELECT RAISE(IGNORE); END", /trigger zz is not Duffy's/],
    ['a column of its own', 'ALTER TABLE events ADD COLUMN note TEXT', /the events table has columns Duffy never made \(note\)/],
    ['an index of its own', 'CREATE INDEX evx ON events(type)', /index evx is not Duffy's/],
    ['a view', 'CREATE VIEW v AS SELECT * FROM events', /view v is not Duffy's/],
    [
      'the table made again without AUTOINCREMENT or UNIQUE',
      'ALTER TABLE events RENAME TO old; CREATE TABLE events (position INTEGER PRIMARY KEY, stream, revision, id, type, data, metadata, chain); INSERT INTO events SELECT * FROM old; DROP TABLE old; ' +
        APPEND_ONLY_TRIGGERS.events_no_update + '; ' + APPEND_ONLY_TRIGGERS.events_no_delete,
      /the events table is not the one Duffy made/,
    ],
    ["SQLite's counter removed", 'DELETE FROM sqlite_sequence', /SQLite's counter of the events table is gone/],
  ])('with %s (an edit with a SQL shell) stops start-up in one line: the server would sign checkpoints over it', async (_, sql, problem) => {
    const file = join(mkdtempSync(join(tmpdir(), 'duffy-guard-')), 'ledger.sqlite');
    const store = new SqliteEventStore(file);
    await store.append([{ stream: 's', expected: 'any', events: [{ type: 'T', data: {}, metadata: {} }] }]);
    await store.close();
    expect(() => assertLedgerReadable(file)).not.toThrow();
    const db = new Database(file);
    db.exec(sql);
    db.close();
    expect(() => assertLedgerReadable(file)).toThrow(LedgerDamagedError);
    expect(() => assertLedgerReadable(file)).toThrow(problem);
    expect(() => assertLedgerReadable(file)).toThrow(/was edited outside Duffy .*check it with `duffy audit --ledger .* verify`/);
  });

  describe("behind its writer's head record (the newest events deleted, the file emptied or removed, its -wal lost)", () => {
    const written = async () => {
      const file = join(mkdtempSync(join(tmpdir(), 'duffy-behind-')), 'ledger.sqlite');
      const store = new SqliteEventStore(file);
      for (let i = 0; i < 3; i++) await store.append([{ stream: 's', expected: 'any', events: [{ type: 'T', data: {}, metadata: {} }] }]);
      await store.close();
      expect(JSON.parse(readFileSync(`${file}.head`, 'utf8')).position).toBe('3');
      expect(() => assertLedgerReadable(file)).not.toThrow();
      return file;
    };
    /** What a SQL shell can do: the append-only guard dropped, rows deleted, the guard put back. */
    const deleteBySql = (file: string, where: string) => {
      const db = new Database(file);
      db.exec(`DROP TRIGGER events_no_delete; DELETE FROM events ${where}`);
      db.exec(APPEND_ONLY_TRIGGERS.events_no_delete);
      db.close();
    };
    const behind = (last: number) => new RegExp(`ends at position ${last}, but its writer recorded events up to 3: the newest events are gone .*move .*ledger\\.sqlite\\.head aside`);

    it('the newest events deleted: start-up stops in one line (a write would cover the gap, and verify then say OK)', async () => {
      const file = await written();
      deleteBySql(file, 'WHERE position > 1');
      // SQLite's counter says so before the head record does: moving the record aside is no way past it.
      expect(() => assertLedgerReadable(file)).toThrow(/edited outside Duffy \(SQLite's counter of the events table reached position 3, the ledger ends at 1: the newest events were deleted\).*restore it from a backup/);
      // Without SQL (the file replaced by a copy made before its last commits): the head record's message.
      expect(() => assertNotBehindHead(file, 3n, 1n)).toThrow(behind(1));
    });

    it("the newest events deleted and the head record removed or garbled: SQLite's counter, or the garbled record, still stops start-up", async () => {
      const file = await written();
      deleteBySql(file, 'WHERE position > 1');
      // Garbled (a power cut, or an edit): no longer a refusal of its own, the counter speaks.
      writeFileSync(`${file}.head`, 'garbage');
      expect(() => assertLedgerReadable(file)).toThrow(/edited outside Duffy \(SQLite's counter of the events table reached position 3, the ledger ends at 1/);
      // Empty, as a power cut may leave it: as good as none (the counter still speaks).
      writeFileSync(`${file}.head`, '');
      expect(() => assertLedgerReadable(file)).toThrow(/edited outside Duffy \(SQLite's counter of the events table reached position 3, the ledger ends at 1: the newest events were deleted\)/);
    });

    it("history rewritten up to the head (its hashes recomputed, the head record left): start-up stops, before a write would record the rewritten chain as the head", async () => {
      const file = await written();
      const db = new Database(file);
      db.exec(`DROP TRIGGER events_no_update; UPDATE events SET chain = '${'0'.repeat(64)}' WHERE position = 3`);
      db.exec(APPEND_ONLY_TRIGGERS.events_no_update);
      db.close();
      expect(() => assertLedgerReadable(file)).toThrow(/edited outside Duffy \(at position 3, the writer's head: the global chain here is not the one the writer recorded: history up to it was rewritten\).*restore it from a backup/);
    });

    it("an operator's ANALYZE (statistics for SQLite's planner) is no edit", async () => {
      const file = await written();
      const db = new Database(file);
      db.exec('ANALYZE');
      db.close();
      expect(assertLedgerReadable(file)).toEqual([]);
    });

    it('a head record a power cut left empty or garbled (renamed into place before its data reached the disk) stops nothing; garbled, it is warned of', async () => {
      const file = await written();
      writeFileSync(`${file}.head`, '');
      expect(assertLedgerReadable(file)).toEqual([]);
      writeFileSync(`${file}.head`, Buffer.alloc(40));
      expect(assertLedgerReadable(file)).toEqual([]);
      writeFileSync(`${file}.head`, '{"position":"3","ch');
      expect(assertLedgerReadable(file)).toEqual([expect.stringMatching(/^the writer's head record .*\.head cannot be read .*: a power cut, or an edit; going on without it, and writing it anew/)]);
      // The writer writes it anew as it opens the ledger, not at its next commit: an idle server's ledger verifies and backs up.
      const store = new SqliteEventStore(file);
      await store.close();
      expect(JSON.parse(readFileSync(`${file}.head`, 'utf8'))).toMatchObject({ position: '3' });
      expect(assertLedgerReadable(file)).toEqual([]);
    });

    it('every event deleted and the head record moved aside: SQLite\'s counter still stops start-up', async () => {
      const file = await written();
      deleteBySql(file, '');
      rmSync(`${file}.head`);
      expect(() => assertLedgerReadable(file)).toThrow(/SQLite's counter of the events table reached position 3, the ledger ends at 0: the newest events were deleted/);
    });

    it('a ledger of 2026-11-26 (no chain column yet, no head record) with its newest events deleted: SQLite\'s counter stops start-up too', () => {
      const file = join(mkdtempSync(join(tmpdir(), 'duffy-legacy-')), 'ledger.sqlite');
      copyFileSync(new URL('../fixtures/upgrade-0920043/datadir/ledger.sqlite', import.meta.url), file);
      expect(isLegacyLedger(file)).toBe(true);
      expect(assertLedgerReadable(file, true)).toEqual([]);
      deleteBySql(file, 'WHERE position > 127');
      expect(() => assertLedgerReadable(file, true)).toThrow(/SQLite's counter of the events table reached position 132, the ledger ends at 127/);
    });

    it('the file emptied (0 bytes) or removed: not a new ledger', async () => {
      const file = await written();
      writeFileSync(file, '');
      expect(() => assertLedgerReadable(file)).toThrow(behind(0));
      rmSync(file);
      expect(() => assertNotBehindHead(file)).toThrow(behind(0));
      // The operator's way on with what is left: the head record moved aside.
      rmSync(`${file}.head`);
      expect(() => assertNotBehindHead(file)).not.toThrow();
    });
  });

  it.each([
    ['data that is not JSON', "UPDATE events SET data = '{not json' WHERE position = 2", /^the ledger's row at position 2 is not an event \(not JSON: .*\): it was edited outside Duffy/],
    ['metadata that is null', "UPDATE events SET metadata = 'null' WHERE position = 2", /^the ledger's row at position 2 is not an event \(its data or metadata is not a JSON object\)/],
  ])('a row with %s stops start-up in one line naming its position, not with a stack trace from deep inside', async (_, sql, problem) => {
    const file = join(mkdtempSync(join(tmpdir(), 'duffy-row-')), 'ledger.sqlite');
    const store = new SqliteEventStore(file);
    for (let i = 0; i < 3; i++) await store.append([{ stream: 's', expected: 'any', events: [{ type: 'T', data: {}, metadata: {} }] }]);
    await store.close();
    const db = new Database(file);
    db.exec(`DROP TRIGGER events_no_update; ${sql}; ${APPEND_ONLY_TRIGGERS.events_no_update}`);
    db.close();
    const reopened = new SqliteEventStore(file, { groupCommit: false, readonly: true });
    try {
      await expect(reopened.readAll(0n, 10)).rejects.toThrow(LedgerDamagedError);
      await expect(reopened.readAll(0n, 10)).rejects.toThrow(problem);
    } finally {
      await reopened.close();
    }
  });

  it('made by an earlier Duffy (its triggers written over several lines, with IF NOT EXISTS) starts as it is', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'duffy-old-guard-')), 'ledger.sqlite');
    const store = new SqliteEventStore(file);
    await store.append([{ stream: 's', expected: 'any', events: [{ type: 'T', data: {}, metadata: {} }] }]);
    await store.close();
    const db = new Database(file);
    db.exec(`DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;
      CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
      CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;`);
    db.close();
    expect(() => assertLedgerReadable(file)).not.toThrow();
  });

  it('a directory where the ledger file should be is named as such, not "disk I/O error"', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'duffy-dir-ledger-')), 'ledger.sqlite');
    mkdirSync(file);
    expect(() => assertLedgerReadable(file)).toThrow(new LedgerDamagedError(`the ledger ${file} is a directory, not a file; move it aside`));
  });
});
