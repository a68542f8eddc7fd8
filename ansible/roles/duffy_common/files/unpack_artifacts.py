#!/usr/bin/env python3
"""Unpack one machine's artifacts archive (a tar stream on stdin) into DEST on Duffy's host, keeping at most FILES
files and BYTES bytes whatever the machine sent, and reading at most BOUND bytes of the stream.

    unpack_artifacts.py DEST FILES BYTES BOUND [SENT]

The files were chosen by their listed sizes; by the time they are copied a file may have grown, and a tampered
machine can send anything. So the limit is applied again here, on the sizes in the archive, before a byte is
written: a file whose size would pass it is not made, and counted as left out. Only files and their parent
directories are made (never links, devices or names with ".."), and no more directories than FILES. SENT, when
given, is how many bytes the machine sent (the fetched archive's size): a remote node cuts its archive at BOUND
itself, unless it lies.

Prints the note (nothing when all was kept) on stdout. A truncated or malformed archive keeps what came before
it and says so in the note; only a failure on Duffy's side (its own disk) is an error.
"""
import errno
import os
import stat
import sys
import tarfile

# A name that cannot be made here is the member's fault, not the host's: left out, not an error.
NAME_ERRORS = {errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ELOOP}
CHUNK = 1 << 16


class Bounded:
    """stdin, cut after `bound` bytes; `over` says whether the reader wanted more and there was more."""

    def __init__(self, raw, bound):
        self.raw, self.left, self.read_total, self.over = raw, bound, 0, False

    def read(self, n=-1):
        if self.left <= 0:
            if n != 0 and not self.over and self.raw.read(1):
                self.over = True
            return b""
        data = self.raw.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(data)
        self.read_total += len(data)
        return data


def parts_of(name):
    """The path components to make under DEST, or None for a name that would leave it (GNU tar's rules)."""
    parts = [p for p in name.lstrip("/").split("/") if p not in ("", ".")]
    # A NUL (a pax path may hold one) is no name on this host.
    return None if not parts or ".." in parts or "\0" in name else parts


def main():
    dest, files, limit, bound = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    sent = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] else None
    os.makedirs(dest, exist_ok=True)
    src = Bounded(sys.stdin.buffer, bound)
    kept = kept_bytes = left = left_bytes = dirs = 0
    error = None
    cut = False

    def parent(parts):
        """Makes the directories above a file (counted); False if one cannot be a directory of ours."""
        nonlocal dirs
        path = dest
        for p in parts[:-1]:
            path = os.path.join(path, p)
            try:
                if stat.S_ISDIR(os.lstat(path).st_mode):
                    continue
                return False
            except FileNotFoundError:
                pass
            if dirs >= files:
                return False
            os.mkdir(path, 0o755)
            dirs += 1
        return True

    try:
        with tarfile.open(fileobj=src, mode="r|", errors="surrogateescape") as archive:
            for m in archive:
                if m.isdir():
                    continue  # made only as the parents of the files kept
                # Data past the bound is never read: stop here (tarfile would skip a huge size block by block).
                if m.offset_data + m.size > bound and (m.isreg() or m.type not in tarfile.SUPPORTED_TYPES):
                    left, left_bytes, cut = left + 1, left_bytes + (m.size if m.isreg() else 0), True
                    break
                parts = parts_of(m.name)
                if not m.isreg() or parts is None or kept + 1 > files or kept_bytes + m.size > limit:
                    left, left_bytes = left + 1, left_bytes + (m.size if m.isreg() else 0)
                    continue
                path = os.path.join(dest, *parts)
                try:
                    if not parent(parts):
                        raise OSError(errno.ENOTDIR, "no directory for it")
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, (m.mode & 0o777) | 0o600)
                except OSError as e:
                    if e.errno not in NAME_ERRORS:
                        raise
                    left, left_bytes = left + 1, left_bytes + m.size
                    continue
                # Counted before its data is read: a cut inside it leaves no half file behind.
                kept, kept_bytes = kept + 1, kept_bytes + m.size
                try:
                    data = archive.extractfile(m)
                    with os.fdopen(fd, "wb") as out:
                        while chunk := data.read(CHUNK):
                            out.write(chunk)
                except (tarfile.TarError, EOFError) as e:
                    os.unlink(path)
                    kept, kept_bytes = kept - 1, kept_bytes - m.size
                    left, left_bytes = left + 1, left_bytes + m.size
                    error = e
                    break
                try:
                    os.utime(path, (m.mtime, m.mtime))
                except (OverflowError, ValueError, OSError):
                    pass
    except (tarfile.TarError, EOFError) as e:
        error = e

    note = []
    if left:
        note.append(
            f"{left} file(s), {left_bytes} bytes, left out while copied: more than listed (a file grown since, or a "
            f"tampered machine), over the limit ({files} files, {limit} bytes per machine)"
        )
    # A node cuts its archive at the bound itself (sent == bound): that is a cut too.
    if cut or src.over or (sent is not None and sent >= bound):
        by = f" (the node sent {sent})" if sent is not None and sent > bound else ""
        note.append(f"the archive was cut at {bound} bytes, the most this limit allows{by}: what came after is left out")
    elif error is not None:
        note.append(f"the archive was unreadable after {src.read_total} bytes ({error}): what came after is left out")
    print("; ".join(note))


if __name__ == "__main__":
    main()
