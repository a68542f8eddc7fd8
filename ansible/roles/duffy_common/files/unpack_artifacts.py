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
import re
import stat
import sys
import tarfile

# A name that cannot be made here is the member's fault, not the host's: left out, not an error.
NAME_ERRORS = {errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ELOOP}
CHUNK = 1 << 16
# An extended header (a pax one, a GNU long name) is read whole into memory: an honest one holds a path (at most
# PATH_MAX, 4096 bytes) and a few times; past this size the archive is taken as unreadable from there.
HEADER_MAX = 1 << 16
# A digit run past NAME_MAX (255) is in no name or number; python 3.11's pax parser searches one in quadratic time.
LONG_DIGITS = re.compile(rb"[0-9]{256}")
# A member has at most a global and an extended pax header, or a GNU long name and long link name, before it.
EXTENDED_RUN_MAX = 4
# tarfile keeps a sparse file's map as a list (48 bytes of memory per byte of map) and crashes on a short one.
SPARSE = "a sparse file (GNU tar makes none without --sparse)"
EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


def pax_problem(buf):
    """Why a pax header's records are not well formed ("LENGTH KEY=VALUE\\n", LENGTH the record's), or None.
    Checked in linear time, as tarfile's own parser is not (its searches run past a record's end)."""
    pos = 0
    while pos < len(buf):
        space = buf.find(b" ", pos, pos + 21)
        if space <= pos or not buf[pos:space].isdigit():
            return f"a pax record without its length at byte {pos}"
        end = pos + int(buf[pos:space])
        if not space < end <= len(buf) or buf[end - 1] != 0x0A or buf.find(b"=", space, end) < 0:
            return f"a pax record of a wrong length at byte {pos}"
        pos = end
    return "a pax record with a run of more than 255 digits" if LONG_DIGITS.search(buf) else None


class CheckedInfo(tarfile.TarInfo):
    """A member whose extended headers are checked before tarfile parses them."""

    budget = 0  # bytes of extended headers still allowed, set by main

    def _proc_member(self, tf):
        # tarfile reads the headers before a member recursively: a long run of them would overflow the stack.
        tf.extended_run = getattr(tf, "extended_run", 0) + 1 if self.type in EXTENDED else 0
        if tf.extended_run > EXTENDED_RUN_MAX:
            raise tarfile.SubsequentHeaderError(f"more than {EXTENDED_RUN_MAX} extended headers in a row")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise tarfile.SubsequentHeaderError(SPARSE)
        if self.type in EXTENDED:
            if self.size > HEADER_MAX:
                raise tarfile.SubsequentHeaderError(f"an extended header of {self.size} bytes, more than {HEADER_MAX}")
            # Parsing one costs up to 0.5 us a byte (the digit runs): only tar's overhead allowance may be headers.
            CheckedInfo.budget -= self.size
            if CheckedInfo.budget < 0:
                raise tarfile.SubsequentHeaderError("extended headers past tar's overhead allowance (BOUND - BYTES)")
        return super()._proc_member(tf)

    def _proc_pax(self, tf):
        buf = tf.fileobj.read(self._block(self.size))
        problem = pax_problem(buf[: self.size]) or (SPARSE if b" GNU.sparse." in buf else None)
        if problem:
            raise tarfile.SubsequentHeaderError(problem)
        # tarfile reads the header itself: it gets these bytes again, then the stream.
        stream = tf.fileobj
        tf.fileobj = Replay(buf, stream)
        try:
            return super()._proc_pax(tf)
        finally:
            tf.fileobj = stream


class Replay:
    """`first`, then what `rest` reads."""

    def __init__(self, first, rest):
        self.first, self.rest = first, rest

    def read(self, n):
        if self.first:
            data, self.first = self.first[:n], self.first[n:]
            return data
        return self.rest.read(n)

    def tell(self):
        return self.rest.tell() - len(self.first)


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
        CheckedInfo.budget = bound - limit
        with tarfile.open(fileobj=src, mode="r|", errors="surrogateescape", tarinfo=CheckedInfo) as archive:
            for m in archive:
                # tarfile keeps every member it has read in a list: a count bomb would fill the memory.
                archive.members.clear()
                if m.isdir():
                    continue  # made only as the parents of the files kept
                # A negative size (pax, or GNU's base-256) would take bytes off what was kept.
                if m.size < 0:
                    error = tarfile.HeaderError("a negative size")
                    break
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
