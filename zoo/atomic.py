"""Atomic directory writes: build the new directory beside the old one, fsync it, then swap.

A crash at any point leaves either the old directory or the new one in place, never a mix: the swap
is ``renameat2(RENAME_EXCHANGE)`` on Linux, else a rename-aside. Checkpoints and Llava exports use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from zoo.errors import CheckpointError

__all__ = ["atomic_directory"]


@contextlib.contextmanager
def atomic_directory(
    target: str | os.PathLike, *, replaceable: Callable[[Path], bool], what: str = "output"
) -> Iterator[Path]:
    """Write a directory atomically: yield a temporary sibling, then fsync it and swap it into place.

    An existing ``target`` is replaced only if it is empty or ``replaceable(target)`` says it is the same
    kind of output (a checkpoint is never written over an unrelated directory). If the body raises, the
    temporary directory is removed and ``target`` is untouched. Temporary siblings left behind by a
    killed process (``.NAME.tmp-PID-*``) are removed by the next write once that process is gone.
    """
    target = Path(target).absolute()
    if target.exists() and not (target.is_dir() and (not any(target.iterdir()) or replaceable(target))):
        raise CheckpointError(
            f"refusing to write a {what} to {str(target)!r}: it exists and is not a {what}; choose another path"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.rename(tmp, target)
        _fsync_dir(target.parent)
        return
    if _exchange(tmp, target):  # tmp now holds the old directory
        _fsync_dir(target.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
    os.rmdir(aside)
    os.rename(target, aside)
    os.rename(tmp, target)
    _fsync_dir(target.parent)
    shutil.rmtree(aside, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, f"renameat2(RENAME_EXCHANGE) failed: {os.strerror(code)}", str(b))


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_siblings(target: Path) -> None:
    """Remove ``.NAME.tmp-PID-*`` (and, if ``target`` exists, ``.NAME.old-PID-*``) of dead processes."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old)-(\d+)-")
    for sibling in target.parent.iterdir():
        found = pattern.match(sibling.name)
        if not found or not sibling.is_dir():
            continue
        if found.group(1) == "old" and not target.exists():
            continue  # the only copy left by a swap interrupted between its two renames
        if not _process_alive(int(found.group(2))):
            shutil.rmtree(sibling, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
