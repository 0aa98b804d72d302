"""Helper of test_foreign_dirs.py: count the successful opens of one file, by any code in any process.

An audit hook sees only opens made from Python, and records them before they happen (a refused
``O_NOFOLLOW`` open looks like a read); transformers reads a tokenizer through the Rust ``tokenizers``
library, which no audit hook sees. The kernel's inotify reports ``IN_OPEN`` on a watched file once it
has been opened, whoever opened it and by whatever path (a symlink, ``/proc/self/fd/N``), so a count of
zero means the file was never opened. Linux only (``inotify_init1`` through ctypes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

__all__ = ["OpenWatch", "available"]

IN_ACCESS = 0x001
IN_OPEN = 0x020
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "inotify_init1") else None


def available() -> bool:
    """Whether this system has inotify."""
    return _libc() is not None


class OpenWatch:
    """Counts ``IN_OPEN`` (and ``IN_ACCESS``) events of one file from the moment it is created."""

    def __init__(self, path: str | os.PathLike) -> None:
        libc = _libc()
        if libc is None:
            raise OSError("inotify is not available")
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(self.fd, os.fsencode(os.fspath(path)), IN_OPEN | IN_ACCESS) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed for {path}")
        self.opened = 0
        self.read = 0

    def poll(self) -> tuple[int, int]:
        """``(opens, reads)`` seen so far."""
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                self.opened += bool(mask & IN_OPEN)
                self.read += bool(mask & IN_ACCESS)
                offset += _EVENT.size + length
        return self.opened, self.read

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> OpenWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
