import { linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';

/** The embedded ledger has one writer: the process holding `<data dir>/duffy.lock`. */
export const LOCK_FILE = 'duffy.lock';

export class DataDirLockedError extends Error {
  constructor(
    readonly dataDir: string,
    readonly holder: { pid: number; host?: string; since?: string },
  ) {
    super(
      `the data directory ${dataDir} is in use by another Duffy (pid ${holder.pid}${holder.host ? ` on ${holder.host}` : ''}${holder.since ? `, since ${holder.since}` : ''}): ` +
        `the embedded ledger has one writer. Stop that process, or give this one another DUFFY_DATA_DIR (or a shared DUFFY_EVENTSTORE)`,
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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, it is just not ours to signal.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes the data directory's lock or throws DataDirLockedError naming the holder. The lock file is written
 * whole under a private name and linked into place, so nobody ever reads a half-written one; a lock left by a
 * process that is gone (kill -9, a crash) is taken over. Released on `release()` and at process exit.
 */
export function lockDataDir(dataDir: string): DataDirLock {
  const dir = resolve(dataDir);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, LOCK_FILE);
  const me: Holder = { pid: process.pid, host: hostname(), since: new Date().toISOString() };
  const mine = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  writeFileSync(mine, JSON.stringify(me) + '\n', { mode: 0o644 });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        linkSync(mine, file);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = readHolder(file);
      // Another host's pid means nothing here: only a local holder can be judged dead.
      const stale = holder !== undefined && (holder.host === undefined || holder.host === me.host) && !alive(holder.pid);
      if (holder && (!stale || attempt >= 3)) throw new DataDirLockedError(dir, holder);
      if (attempt >= 3) throw new Error(`cannot take the lock ${file}: it keeps coming back unreadable`);
      // Stale, or unreadable (not a lock this code wrote): take it over.
      try {
        unlinkSync(file);
      } catch {
        /* someone else took it over first: try again */
      }
    }
  } finally {
    unlinkSync(mine);
  }
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
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
