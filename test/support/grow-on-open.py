#!/usr/bin/env python3
"""A process still running on a machine that grows a file at the worst moment for Duffy's artifacts collection.

grow-on-open.py TRIGGER FILE BYTES: when something first opens TRIGGER (Duffy's copy does; its listing, a stat
only, never opens a file), append BYTES bytes to FILE, then let that open go on. A fanotify permission event holds
the opener until FILE has grown, so the growth lands after the listing and before the copy reads FILE (the copy
takes the files in path order: TRIGGER must sort before FILE). Needs root (CAP_SYS_ADMIN). Prints "ready" once
armed, exits after the first open.
"""
import ctypes
import os
import struct
import sys

FAN_CLASS_CONTENT = 0x04
FAN_MARK_ADD = 0x01
FAN_OPEN_PERM = 0x00010000
FAN_ALLOW = 0x01
AT_FDCWD = -100

trigger, target, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
fan = libc.fanotify_init(FAN_CLASS_CONTENT, os.O_RDONLY)
if fan < 0:
    sys.exit(f"fanotify_init: {os.strerror(ctypes.get_errno())}")
if libc.fanotify_mark(fan, FAN_MARK_ADD, FAN_OPEN_PERM, AT_FDCWD, os.fsencode(trigger)) < 0:
    sys.exit(f"fanotify_mark: {os.strerror(ctypes.get_errno())}")
print("ready", flush=True)

# struct fanotify_event_metadata: event_len u32, vers u8, reserved u8, metadata_len u16, mask u64, fd s32, pid s32.
event = os.read(fan, 4096)
_, _, _, _, mask, fd, _ = struct.unpack_from("IBBHQii", event)
with open(target, "ab") as f:
    f.write(b"g" * size)
os.write(fan, struct.pack("iI", fd, FAN_ALLOW))
os.close(fd)
print("grown", flush=True)
