/**
 * The stores' error contract, read by the application as well as the adapters that throw them: errors that mean the
 * storage cannot take a write (a full disk, an I/O error, a read-only file system), told by their code, never their
 * message: SQLite's extended codes (better-sqlite3's `code`) and Node's errno names.
 */
export interface StorageFault {
  code: string;
  /** What went wrong, in words an operator acts on. */
  what: string;
  /** What the operator does about it. */
  fix: string;
  /** A full disk: over once there is free space again, which can be seen without a write. */
  full?: true;
}

const FULL = new Set(['SQLITE_FULL', 'ENOSPC', 'EDQUOT']);
/** The embedded ledger's writer thread is gone (an uncaught error, its memory limit): no write until a restart. */
export const WRITER_STOPPED = 'DUFFY_LEDGER_WRITER_STOPPED';
const READ_ONLY = new Set(['EROFS']);
/** KurrentDB did not take a write now but may later (unreachable, not the leader, timed out); the error's message says which. */
export const EVENTSTORE_UNAVAILABLE = 'DUFFY_EVENTSTORE_UNAVAILABLE';

const FREE_SPACE = 'free space on its file system';

export function storageFault(error: unknown): StorageFault | undefined {
  // Adapters and handlers may wrap the driver's error: look down the cause chain (bounded).
  let e = error as { code?: unknown; cause?: unknown } | undefined;
  for (let depth = 0; e && typeof e === 'object' && depth < 5; depth++, e = e.cause as typeof e) {
    const code = typeof e.code === 'string' ? e.code : undefined;
    if (!code) continue;
    // A quota (EDQUOT) is no disk's free space: its end cannot be seen from the file system.
    if (FULL.has(code)) return { code, what: 'the disk is full', fix: FREE_SPACE, ...(code === 'EDQUOT' ? {} : { full: true as const }) };
    if (code === WRITER_STOPPED) return { code, what: 'the ledger writer stopped, until Duffy is restarted', fix: 'restart Duffy' };
    if (code === EVENTSTORE_UNAVAILABLE) return { code, what: String((e as { message?: unknown }).message), fix: 'check DUFFY_EVENTSTORE' };
    // SQLite could not grow a database's -shm file: on a local disk, nearly always a full one.
    if (code === 'SQLITE_IOERR_SHMSIZE') return { code, what: 'the disk is full (SQLite could not grow its -shm file)', fix: FREE_SPACE, full: true };
    if (code.startsWith('SQLITE_IOERR') || code === 'EIO') return { code, what: 'the disk reported an I/O error', fix: 'check the disk' };
    if (code.startsWith('SQLITE_READONLY') || READ_ONLY.has(code)) {
      return { code, what: 'the storage is read-only', fix: 'make the data directory and its files writable for this user (a file another user created there, such as a root-owned ledger.sqlite-wal, is read-only to Duffy)' };
    }
  }
  return undefined;
}

/** SQLite's code when a file is not a sound database (damaged, or not SQLite at all); undefined for any other error. */
export function damagedDatabase(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && /^SQLITE_(CORRUPT|NOTADB)/.test(code) ? code : undefined;
}

/**
 * A log that says a storage fault (a full disk fails every write alike) once per interval, with how many it kept
 * quiet since, without a stack (it is no bug); any other error at once, as an error.
 */
export class FaultLog {
  private loggedAt = -Infinity;
  private quiet = 0;
  /** The last fault kept quiet, said at the interval's end if none comes after it (its count would be lost). */
  private lastQuiet = '';
  private trailing?: NodeJS.Timeout;

  constructor(
    private readonly log: { warn(message: string): void; error(message: string): void },
    private readonly everyMs = 10_000,
  ) {}

  /** `message` says what failed; `error` decides how it is logged. */
  failed(message: string, error: unknown): void {
    if (storageFault(error)) this.storageFault(message);
    else this.log.error(message);
  }

  storageFault(message: string): void {
    const now = Date.now();
    if (now - this.loggedAt < this.everyMs) {
      this.quiet += 1;
      this.lastQuiet = message;
      this.trailing ??= setTimeout(() => this.sayQuiet(), this.loggedAt + this.everyMs - now).unref();
      return;
    }
    this.say(message, this.quiet, now);
  }

  private sayQuiet(): void {
    this.trailing = undefined;
    if (this.quiet > 0) this.say(this.lastQuiet, this.quiet - 1, Date.now());
  }

  /** `message`, and how many more like it were kept quiet before it. */
  private say(message: string, before: number, now: number): void {
    clearTimeout(this.trailing);
    this.trailing = undefined;
    this.log.warn(before > 0 ? `${message} (and ${before} more like it since the last line)` : message);
    this.loggedAt = now;
    this.quiet = 0;
  }
}
