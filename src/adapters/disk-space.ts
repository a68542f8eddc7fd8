import { statfs } from 'node:fs/promises';

/** Less free space than this on a disk Duffy writes to (its data directory): that disk is full. */
export const FULL_DISK_BYTES = 1024 * 1024;

/** Bytes this user may still write on the file system of `dir` (root also the blocks kept for it); undefined when that cannot be read. */
export async function freeBytes(dir: string): Promise<number | undefined> {
  const fs = await statfs(dir).catch(() => undefined);
  return fs && (process.getuid?.() === 0 ? fs.bfree : fs.bavail) * fs.bsize;
}
