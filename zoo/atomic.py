"""Atomic, owner-aware directory writes: checkpoints and Llava exports never destroy what zoo did not write.

:func:`atomic_directory` builds the new directory as a temporary sibling, fsyncs it, then swaps it into
place (``renameat2(RENAME_EXCHANGE)`` on Linux, else a rename-aside that the next save or load repairs
if a crash hits between its two renames). Around that:

- **ownership**: an existing directory is replaced only if ``owned_files(dir)`` recognises it as zoo's
  output of the same kind (a zoo manifest, or the marker a Llava export leaves) and says which files
  zoo wrote; any other file there is the user's and is carried into the new directory (hard links),
  or the save refuses, listing the files that the new output would replace. A directory that is not
  zoo's is refused unless ``overwrite`` (then its files are kept too, and the ones replaced are named
  in a warning). A symlinked target is written through (the link stays a link);
- **one writer at a time**: an advisory ``fcntl.flock`` on the sibling lock file ``.NAME.lock`` queues
  concurrent saves to one directory (the later one waits, with a warning, then replaces the earlier);
  this also closes the first-save race;
- **stale temporaries** (``.NAME.tmp-*`` of a killed save) are recognised by their own ``flock``, which
  a live writer holds, not by PID, so a save from another PID namespace is never mistaken for dead;
- files and directories honour the process umask.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import stat
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from zoo.errors import CheckpointError

__all__ = [
    "LOCK_TIMEOUT_S",
    "MARKER",
    "OwnedFiles",
    "atomic_directory",
    "atomic_write_bytes",
    "mark_output",
    "marked_files",
    "recover_interrupted_swap",
    "save_lock",
]

LOCK_TIMEOUT_S = float(os.environ.get("ZOO_SAVE_LOCK_TIMEOUT", "600"))
MARKER = ".zoo-output.json"
OwnedFiles = Callable[[Path], "set[str] | None"]
"""``owned_files(dir)``: the relative paths zoo wrote there, or ``None`` if it is not zoo's output of this kind."""


def mark_output(root: Path, kind: str) -> None:
    """Leave the marker that lets a later save recognise ``root`` as zoo's ``kind`` output, listing its files."""
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    (root / MARKER).write_text(json.dumps({"format": "zoo.output", "kind": kind, "files": files}, indent=1) + "\n")


def marked_files(kind: str) -> OwnedFiles:
    """An ``owned_files`` for outputs marked by :func:`mark_output` with ``kind``."""

    def owned(path: Path) -> set[str] | None:
        marker = path / MARKER
        try:
            if marker.is_symlink() or not marker.is_file() or marker.stat().st_size > 16 * 1024 * 1024:
                return None
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or data.get("format") != "zoo.output" or data.get("kind") != kind:
            return None
        files = data.get("files")
        if not isinstance(files, list):
            return None
        return {str(f) for f in files} | {MARKER}

    return owned


@contextlib.contextmanager
def atomic_directory(
    target: str | os.PathLike, *, owned_files: OwnedFiles, what: str = "output", overwrite: bool = False
) -> Iterator[Path]:
    """Write a directory atomically: yield a temporary sibling, then keep the user's files and swap it in.

    Args:
        target: the directory to (re)write; a symlink to a directory is written through.
        owned_files: recognises a previous output of the same kind and lists the files zoo wrote.
        what: the kind of output, for messages.
        overwrite: also write into a directory that is not zoo's output, and replace user files that
            collide with the new output's names (all other user files are kept either way).

    If the body raises, the temporary directory is removed and ``target`` is untouched.
    """
    target = _through_symlink(Path(target).absolute())
    _make_parent(target, what)
    with save_lock(target, what):
        _clean_siblings(target)
        owned = _ownership(target, owned_files, what, overwrite)
        tmp = _make_temporary(target, "tmp", what)
        holder = _hold(tmp)
        try:
            yield tmp
            _apply_umask(tmp)
            _fsync_tree(tmp)
            if owned is not None:
                _carry_user_files(target, tmp, owned, what, overwrite)
                _fsync_dir(tmp)
            _swap_into_place(tmp, target, what)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            os.close(holder)


# -- ownership -------------------------------------------------------------------------------------
def atomic_write_bytes(target: str | os.PathLike, data: bytes, *, sync_dir: bool = False) -> Path:
    """Write one file atomically: a temporary sibling (``.NAME.part-*``), written, fsynced, renamed over ``target``.

    A reader sees the old file, no file, or the complete new one, never part of it; two writers racing
    on the same ``target`` each rename a complete file (the last one wins). The file gets the mode the
    umask asks for. ``sync_dir`` also fsyncs the folder, so that the rename itself survives a power loss
    (a cache can skip it: a lost entry is recomputed).

    Example:
        >>> atomic_write_bytes("cache/ab/abcd.safetensors", payload)
    """
    target = Path(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.part-")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, 0o666 & ~_umask())
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(name, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    if sync_dir:
        _fsync_dir(target.parent)
    return target


def _through_symlink(target: Path) -> Path:
    if target.is_symlink():
        return Path(os.path.realpath(target))
    return target


def _make_parent(target: Path, what: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=f".{target.name}.probe-", dir=target.parent)
        os.rmdir(probe)
    except OSError as error:
        raise CheckpointError(
            f"cannot write a {what} to {str(target)!r}: its parent directory is not writable ({error.strerror})"
        ) from error


def _ownership(target: Path, owned_files: OwnedFiles, what: str, overwrite: bool) -> set[str] | None:
    """The files zoo wrote in ``target`` (empty set: nothing there); None when there is no target."""
    if not os.path.lexists(target):
        return None
    if not target.is_dir():
        raise CheckpointError(f"refusing to write a {what} to {str(target)!r}: it exists and is not a directory")
    owned = owned_files(target)
    if owned is None and any(target.iterdir()) and not overwrite:
        names = sorted(p.name for p in target.iterdir())
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        raise CheckpointError(
            f"refusing to write a {what} to {str(target)!r}: it exists, is not a {what} zoo wrote, and holds "
            f"{shown}; choose another path, or pass overwrite=True / --overwrite (its files are kept unless "
            "the new output has files of the same name)"
        )
    return owned if owned is not None else set()


def _carry_user_files(target: Path, tmp: Path, owned: set[str], what: str, overwrite: bool) -> None:
    """Hard-link every file of ``target`` that zoo did not write into ``tmp``; refuse on a name clash."""
    user = _user_files(target, owned)
    clashes = [rel for rel in user if _clashes(target / rel, tmp, rel)]
    if clashes and not overwrite:
        raise CheckpointError(
            f"refusing to write the {what} {str(target)!r}: it holds files zoo did not write that the new "
            f"{what} would replace: {_few(clashes)}; move them away, or pass overwrite=True / --overwrite"
        )
    if clashes:
        warnings.warn(f"zoo: replaced files in {str(target)!r} that zoo did not write: {_few(clashes)}", stacklevel=4)
    for rel in user:
        if rel in clashes:
            continue
        source, destination = target / rel, tmp / rel
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir() and not source.is_symlink():
            destination.mkdir(exist_ok=True)
            continue
        try:
            os.link(source, destination, follow_symlinks=False)
        except OSError:
            shutil.copy2(source, destination, follow_symlinks=False)


def _user_files(target: Path, owned: set[str]) -> list[str]:
    """Relative paths under ``target`` that zoo did not write (files, symlinks and empty directories)."""
    found = []
    for root, dirs, files in os.walk(target):
        base = Path(root).relative_to(target)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = (base / name).as_posix()
            if rel not in owned:
                found.append(rel)
        if not dirs and not files and base != Path("."):
            rel = base.as_posix()
            if not any(o.startswith(rel + "/") for o in owned):
                found.append(rel)
    return sorted(found)


def _clashes(source: Path, tmp: Path, rel: str) -> bool:
    """Whether the user's ``source`` would overwrite, or be overwritten by, what zoo wrote at ``rel``."""
    path = tmp / rel
    if os.path.lexists(path):
        both_dirs = path.is_dir() and not path.is_symlink() and source.is_dir() and not source.is_symlink()
        return not both_dirs
    parent = path.parent
    while parent != tmp:
        if os.path.lexists(parent) and (parent.is_symlink() or not parent.is_dir()):
            return True
        parent = parent.parent
    return False


# -- locking ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def save_lock(target: Path, what: str = "output", timeout: float | None = None) -> Iterator[None]:
    """Hold the advisory lock of ``target`` (``.NAME.lock`` beside it); wait for another holder, with a warning.

    The lock file is removed on release; a waiter that wakes up on a removed file retries on the new one.
    """
    lock = target.parent / f".{target.name}.lock"
    deadline = time.monotonic() + (LOCK_TIMEOUT_S if timeout is None else timeout)
    warned = False
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as error:
            raise CheckpointError(f"cannot lock {str(target)!r} for writing: {error.strerror}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if not warned:
                warnings.warn(
                    f"zoo: another process is writing {str(target)!r}; waiting for it to finish", stacklevel=4
                )
                warned = True
            if time.monotonic() > deadline:
                raise CheckpointError(
                    f"another process has been writing {str(target)!r} for more than {LOCK_TIMEOUT_S:.0f} s "
                    f"(it holds {str(lock)!r}); try again when it is done"
                ) from None
            time.sleep(0.01)
            continue
        if _same_file(fd, lock):
            break
        os.close(fd)  # the holder removed this lock file while we waited: take the current one
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _hold(directory: Path) -> int:
    """Lock ``directory`` (its own fd) for as long as this writer lives: the mark of a live temporary."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _is_live(directory: Path) -> bool:
    """Whether some process holds the lock of a temporary directory (a save in progress, any namespace)."""
    return _flock_busy(directory, fcntl.LOCK_EX)


def _flock_busy(path: Path, operation: int) -> bool:
    """Whether ``flock(path, operation)`` would block: another process holds a conflicting lock on it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# -- leftovers and recovery --------------------------------------------------------------------------
def _siblings(target: Path, kind: str) -> list[Path]:
    prefix = f".{target.name}.{kind}-"
    with contextlib.suppress(OSError):
        return sorted(
            (p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink()),
            key=lambda p: p.stat().st_mtime_ns,
        )
    return []


def _clean_siblings(target: Path) -> None:
    """Under the save lock: restore an interrupted rename-aside, remove dead temporaries and old copies."""
    if not os.path.lexists(target):
        _restore_aside(target)
    for kind in ("tmp", "old"):
        for sibling in _siblings(target, kind):
            if not _is_live(sibling):
                shutil.rmtree(sibling, ignore_errors=True)


def _restore_aside(target: Path) -> bool:
    asides = [p for p in _siblings(target, "old") if not _is_live(p)]
    if not asides:
        return False
    os.rename(asides[-1], target)  # the newest previous copy: the one a crash between the renames left
    _fsync_dir(target.parent)
    return True


def recover_interrupted_swap(target: str | os.PathLike) -> bool:
    """Wait out a save between its two renames, or repair what a crash there left; True if ``target`` exists.

    While a save holds the lock, the path is back within moments (the second rename follows the first);
    if nobody holds it, a crash left the previous checkpoint aside and it is renamed back under the lock.
    """
    target = Path(target).absolute()
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while not os.path.lexists(target) and _siblings(target, "old") and time.monotonic() < deadline:
        if not _lock_held(target):
            try:
                with save_lock(target, "checkpoint"):
                    if not os.path.lexists(target):
                        _restore_aside(target)
            except (CheckpointError, OSError):
                return False
            break
        time.sleep(0.002)
    return os.path.lexists(target)


def _lock_held(target: Path) -> bool:
    return _flock_busy(target.parent / f".{target.name}.lock", fcntl.LOCK_SH)


# -- the swap ----------------------------------------------------------------------------------------
def _make_temporary(target: Path, kind: str, what: str) -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.{kind}-{os.getpid()}-", dir=target.parent))
    except OSError as error:
        raise CheckpointError(f"cannot write a {what} beside {str(target)!r}: {error.strerror}") from error


def _swap_into_place(tmp: Path, target: Path, what: str) -> None:
    try:
        if not os.path.lexists(target):
            os.rename(tmp, target)
            _fsync_dir(target.parent)
            return
        if _exchange(tmp, target):  # tmp now holds the old directory
            _fsync_dir(target.parent)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        aside = _make_temporary(target, "old", what)
        os.rmdir(aside)
        os.rename(target, aside)  # a crash right here is repaired by the next save or load
        os.rename(tmp, target)
        _fsync_dir(target.parent)
        shutil.rmtree(aside, ignore_errors=True)
    except OSError as error:
        raise CheckpointError(f"cannot put the new {what} in place at {str(target)!r}: {error}") from error


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


# -- permissions and durability ----------------------------------------------------------------------
def _umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    current = os.umask(0o022)  # not thread-safe; only where /proc is missing
    os.umask(current)
    return current


def _apply_umask(root: Path) -> None:
    """Give the temporary directory (created 0700) and what zoo wrote the modes the umask asks for."""
    mask = _umask()
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700:
            os.chmod(path, 0o777 & ~mask)
        elif stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and info.st_nlink == 1:
            os.chmod(path, 0o666 & ~mask)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_symlink():
            continue
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


def _few(names: list[str], limit: int = 6) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
