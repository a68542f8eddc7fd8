import Database from 'better-sqlite3';
import { closeSync, existsSync, fsyncSync, linkSync, openSync, readFileSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { NOT_WRITABLE, makeDirs, whyNotMade } from '../make-dirs.js';

/** The embedded ledger has one writer: the process holding `<data dir>/duffy.lock`. */
export const LOCK_FILE = 'duffy.lock';
/** Held (an exclusive SQLite lock, which the kernel drops with its process) while a process decides and takes the lock. */
const TAKEOVER_FILE = 'duffy.lock.takeover';
/** The embedded ledger's file in the data directory. */
export const LEDGER_FILE = 'ledger.sqlite';
/** Beside a ledger copy `duffy backup` has not finished (killed, or still running): restore and verify refuse it. */
export const BACKUP_UNFINISHED = 'backup-unfinished';
/**
 * In a data directory while `duffy restore` moves its ledger aside and puts the backup's in place; it names where the
 * replaced ledger goes. Left there (the restore killed), nothing starts on the half-moved files until it is run again.
 */
export const RESTORE_UNFINISHED = 'restore-unfinished';
export class RestoreUnfinishedError extends Error {
  constructor(dataDir: string) {
    super(`a duffy restore into ${dataDir} was cut short (${RESTORE_UNFINISHED} is there): run the same duffy restore again; nothing started`);
  }
}
/** A half-restored directory may have no ledger: one started there would be a new, empty history. */
export function assertNoRestoreUnfinished(dataDir: string): void {
  if (existsSync(join(dataDir, RESTORE_UNFINISHED))) throw new RestoreUnfinishedError(resolve(dataDir));
}
/**
 * The ledger writer's record of the ledger's head, beside the ledger file (`verify` compares the two, so deleting the
 * newest events shows).
 */
export const headFileOf = (ledgerFile: string) => `${ledgerFile}.head`;
/**
 * The head record of `ledgerFile` as its writer wrote it (`sqlite-writer.worker.js`): null where there is none;
 * throws where it is no `{position, chain}` (altered).
 */
export function readHeadRecord(ledgerFile: string): { position: bigint; chain: string } | null {
  let text: string;
  try {
    text = readFileSync(headFileOf(ledgerFile), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  // Empty or zeros: what a power cut can leave of a file renamed into place before its data reached the disk (the
  // writer does not fsync it). As good as none; anything else unreadable may be an edit, which verify names.
  if (/^[\0\s]*$/.test(text)) return null;
  const head = JSON.parse(text) as { position?: unknown; chain?: unknown };
  if (typeof head.position !== 'string' || !/^\d+$/.test(head.position) || typeof head.chain !== 'string') throw new Error('not {position, chain}');
  return { position: BigInt(head.position), chain: head.chain };
}
/** The embedded read models' file in the data directory (derived: rebuilt from the ledger when missing). */
export const READ_MODELS_FILE = 'readmodels.sqlite';
/** The holder touches its lock this often; one not touched for STALE_MS is a dead holder's, wherever it ran. */
const HEARTBEAT_MS = 10_000;
export const STALE_MS = 60_000;
/** Locks this process holds: a lock naming our own pid that is not among them is an earlier incarnation's. */
const heldHere = new Set<string>();

export class DataDirLockedError extends Error {
  constructor(
    readonly dataDir: string,
    readonly holder: { pid: number; host?: string; since?: string },
    advice = 'Stop that process, or give this one another DUFFY_DATA_DIR (or a shared DUFFY_EVENTSTORE)',
  ) {
    super(
      `the data directory ${dataDir} is in use by another Duffy (${holder.pid > 0 ? `pid ${holder.pid}${holder.host ? ` on ${holder.host}` : ''}${holder.since ? `, since ${holder.since}` : ''}` : `it holds ${TAKEOVER_FILE}; its ${LOCK_FILE} was removed`}): ` +
        `the embedded ledger has one writer. ${advice}`,
    );
    this.name = 'DataDirLockedError';
  }
}

export interface DataDirLock {
  readonly file: string;
  release(): void;
}

type Holder = { pid: number; host?: string; since?: string };

function readHolder(file: string): Holder | undefined {
  try {
    const h = JSON.parse(readFileSync(file, 'utf8')) as Holder;
    return Number.isInteger(h?.pid) && h.pid > 0 ? h : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A holder is gone when: its pid on this host is dead; it is our own pid but not a lock this process took (a
 * container restarted as pid 1 again); or it stopped refreshing the lock (another host, a recreated container).
 */
function stale(file: string, holder: Holder, me: Holder): boolean {
  const sameHost = holder.host === undefined || holder.host === me.host;
  if (sameHost && holder.pid === process.pid) return !heldHere.has(file);
  if (sameHost && !alive(holder.pid)) return true;
  try {
    return Date.now() - statSync(file).mtimeMs > STALE_MS;
  } catch {
    return true;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists, it is just not ours to signal.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie (killed, not yet reaped by its parent) still answers signal 0, and holds nothing.
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').at(-1)?.[0] !== 'Z';
  } catch {
    return true;
  }
}

/** The data directory cannot take a write: nothing can start on it. */
export class DataDirNotWritableError extends Error {}

function makeDataDir(dir: string): void {
  try {
    makeDirs(dir, PRIVATE_DIR);
  } catch (err) {
    throw new DataDirNotWritableError(`the data directory ${dir} cannot be created (${whyNotMade(err)}); make its parent writable for this user, or set DUFFY_DATA_DIR`);
  }
}

/**
 * Writes, syncs and removes a small file in the data directory (creating it if need be): a directory that cannot
 * take a write (a file system that turned read-only after I/O errors, wrong ownership, a full disk) stops start-up
 * with one line naming it, not with SQLite's "unable to open database file" and a stack.
 */
export function assertDataDirWritable(dataDir: string): void {
  const dir = resolve(dataDir);
  const probe = join(dir, `.write-probe-${process.pid}`);
  makeDataDir(dir);
  try {
    const fd = openSync(probe, 'w');
    try {
      writeSync(fd, 'duffy');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
      // Also when the write failed (a full disk): the probe must not stay behind.
      rmSync(probe, { force: true });
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (!(code in NOT_WRITABLE)) throw err;
    const fix = code === 'ENOSPC' || code === 'EDQUOT' ? 'free space on its file system' : code === 'EIO' ? 'check the disk' : 'make it writable for this user';
    throw new DataDirNotWritableError(`the data directory ${dir} cannot be written (${code}: ${NOT_WRITABLE[code]}); Duffy keeps its ledger, signing key and playbook runs there: ${fix}, or set DUFFY_DATA_DIR`);
  }
}

/** Throws DataDirLockedError if another live process holds the lock (a check before start-up; `lockDataDir` decides). */
export function assertDataDirFree(dataDir: string): void {
  const file = join(resolve(dataDir), LOCK_FILE);
  const holder = readHolder(file);
  if (holder && !stale(file, holder, { pid: process.pid, host: hostname() })) throw new DataDirLockedError(resolve(dataDir), holder);
}

/**
 * Takes the data directory's lock or throws DataDirLockedError naming the holder. The lock file is written
 * whole under a private name and linked into place, so nobody ever reads a half-written one; a lock left by a
 * process that is gone (kill -9, a crash) is taken over (see `stale`). Released on `release()` and at process exit.
 */
/** Writes `me` whole under a private name and links it into place: false when a lock is there already. */
function link(file: string, me: Holder): boolean {
  const mine = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  writeFileSync(mine, JSON.stringify(me) + '\n', { mode: 0o644 });
  try {
    linkSync(mine, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return false;
  } finally {
    unlinkSync(mine);
  }
}

/**
 * Runs `take` while no other process runs its own: two starts that judged the same dead holder's lock stale would
 * otherwise each remove it, the second removing the lock the first had just linked, and both run as the writer.
 * Then holds the guard shared for as long as the lock is held (the connection returned): the kernel drops that with
 * the process, and while it is held no other start gets past here, even if the lock file was removed under us (a
 * cleaner of old files) and not yet put back. `onBusy` says who holds it when the guard stays taken.
 */
function oneAtATime(guard: string, take: () => void, onBusy: () => Error): Database.Database {
  const db = new Database(guard, { timeout: GUARD_WAIT_MS });
  try {
    try {
      db.exec('BEGIN EXCLUSIVE');
    } catch (err) {
      throw (err as { code?: string }).code === 'SQLITE_BUSY' ? onBusy() : err;
    }
    take();
    db.exec('COMMIT');
    holdShared(db);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}
/** A read transaction left open: SQLite's shared lock on the file, which no other connection's exclusive one passes. */
function holdShared(db: Database.Database): void {
  db.exec('BEGIN');
  db.prepare('SELECT count(*) FROM sqlite_master').get();
}

/**
 * The holder's heartbeat for its guard: touched, so a cleaner of old files leaves it, and held again on a new file
 * when it was removed anyway (a start would otherwise take a new one and, the lock file gone too, run beside us).
 */
function keepGuard(guardFile: string, guard: Database.Database, ino: number): Database.Database {
  try {
    const now = new Date();
    utimesSync(guardFile, now, now);
    if (statSync(guardFile).ino === ino) return guard;
  } catch {
    /* removed: hold a new one */
  }
  try {
    const again = new Database(guardFile, { timeout: GUARD_WAIT_MS });
    try {
      holdShared(again);
    } catch (err) {
      again.close();
      throw err;
    }
    guard.close();
    return again;
  } catch {
    // Another start holds the new file already, or the directory is gone: keep what we hold.
    return guard;
  }
}
/** Other starts take the guard for milliseconds; a live holder keeps it: past this long, the data directory is in use. */
const GUARD_WAIT_MS = 1_000;

/**
 * A data directory Duffy creates is its user's alone: it holds tenants' artifacts, the BMC secrets, the signing key and
 * the ledger (API key digests), which other local users have no business reading.
 */
const PRIVATE_DIR = 0o700;

/** A warning when other local users may read the data directory (one made before Duffy made it private, or by hand). */
export function dataDirOpenToOthers(dataDir: string): string | undefined {
  const dir = resolve(dataDir);
  const mode = statSync(dir).mode & 0o777;
  if ((mode & 0o077) === 0) return undefined;
  return `the data directory ${dir} is readable by other users (mode ${mode.toString(8)}): it holds tenants' artifacts, secrets/ and the signing key; \`chmod 700 ${dir}\` unless that is meant`;
}

/** `advice`: what to do about a live holder, for a caller other than the server (a restore: stop it first). */
export function lockDataDir(dataDir: string, advice?: string): DataDirLock {
  const dir = resolve(dataDir);
  makeDataDir(dir);
  const file = join(dir, LOCK_FILE);
  const me: Holder = { pid: process.pid, host: hostname(), since: new Date().toISOString() };
  const guardFile = join(dir, TAKEOVER_FILE);
  let guard = oneAtATime(guardFile, () => {
    for (let attempt = 0; !link(file, me); attempt++) {
      const holder = readHolder(file);
      if (holder && (!stale(file, holder, me) || attempt >= 3)) throw new DataDirLockedError(dir, holder, advice);
      if (attempt >= 3) throw new Error(`cannot take the lock ${file}: it keeps coming back unreadable`);
      // Stale, or unreadable (not a lock this code wrote): take it over.
      try {
        unlinkSync(file);
      } catch {
        /* someone else took it over first: try again */
      }
    }
  }, () => new DataDirLockedError(dir, readHolder(file) ?? { pid: 0 }, advice));
  heldHere.add(file);
  let guardIno = statSync(guardFile).ino;
  const heartbeat = setInterval(() => {
    guard = keepGuard(guardFile, guard, guardIno);
    guardIno = statSync(guardFile, { throwIfNoEntry: false })?.ino ?? guardIno;
    try {
      const now = new Date();
      utimesSync(file, now, now);
    } catch (err) {
      // Removed under us (taken for a dead one's, a cleaner): put back, or a second Duffy would start on this ledger.
      try {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') link(file, me);
      } catch {
        /* the directory itself is gone or read-only: nothing to put back */
      }
    }
  }, HEARTBEAT_MS);
  heartbeat.unref();
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    clearInterval(heartbeat);
    heldHere.delete(file);
    guard.close();
    process.off('exit', release);
    // Only our own lock: a takeover after we were presumed dead must not be undone.
    if (readHolder(file)?.pid === process.pid) {
      try {
        unlinkSync(file);
      } catch {
        /* already gone */
      }
    }
  };
  process.on('exit', release);
  return { file, release };
}

/** Writes a file's (or a directory's, so a rename in it) data to the disk: what a power cut may not take back. */
export function syncToDisk(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
