import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** A file system's refusals, in words. */
export const NOT_WRITABLE: Record<string, string> = {
  EROFS: 'a read-only file system',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOSPC: 'the disk is full',
  EDQUOT: 'the disk quota is used up',
  EIO: 'the disk reported an I/O error',
  ENOTDIR: 'a part of the path is a file',
};

/** Why a directory could not be made (see makeDirs), in words: `EROFS: a read-only file system`. */
export function whyNotMade(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  // From makeDirs, whose parent exists: the file system refuses (/proc, sysfs), or the parent went meanwhile.
  if (code === 'ENOENT') return 'ENOENT: its file system takes no new directory there';
  return code in NOT_WRITABLE ? `${code}: ${NOT_WRITABLE[code]}` : (err as Error).message;
}

/**
 * `mkdir -p` that fails where a directory cannot be made: Node's recursive mkdir takes an ENOENT under a parent that
 * exists (/proc, sysfs) for a missing parent, makes that again, and so on for ever at 100 % CPU. Each missing level is
 * made in turn from the nearest one that exists, so the first that cannot be throws.
 */
export function makeDirs(dir: string, mode?: number): void {
  const missing: string[] = [];
  for (let at = resolve(dir); !existsSync(at) && dirname(at) !== at; at = dirname(at)) missing.unshift(at);
  for (const level of missing) {
    try {
      mkdirSync(level, { mode });
    } catch (err) {
      // Made meanwhile by another process: as good.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(level, { throwIfNoEntry: false })?.isDirectory()) throw err;
    }
  }
}
