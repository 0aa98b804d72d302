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
  concurrent saves to one directory (the later one waits, with a warning naming the writer's pid, host
  and start time, which the holder writes into the lock file: :class:`Holder`), then replaces the
  earlier; this also closes the first-save race;
- **stale temporaries** (``.NAME.tmp-*`` of a killed save) are recognised by their own ``flock``, which
  a live writer holds, not by PID, so a save from another PID namespace is never mistaken for dead;
- **modes**: a new directory and its files honour the process umask; a re-save keeps the modes of the
  directory, files and subdirectories it replaces (a 0700 checkpoint stays 0700), and what it adds is
  no more open than the directory it goes into.

:func:`atomic_file` does the same for one text file (``zoo generate --output``): a temporary sibling,
fsync, ``os.replace``.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from zoo.errors import WRITE_ERRNOS, CheckpointError, WriteError, ZooError, few

__all__ = [
    "LOCK_TIMEOUT_S",
    "MARKER",
    "Holder",
    "OwnedFiles",
    "atomic_directory",
    "atomic_file",
    "atomic_write_bytes",
    "check_target",
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
            previous = target if owned is not None else None  # the directory this save replaces
            _apply_modes(tmp, previous, directories=False)
            _fsync_tree(tmp)
            if owned is not None:
                _carry_user_files(target, tmp, owned, what, overwrite)
            _apply_modes(tmp, previous, directories=True)  # after the carry, which may write into them
            _fsync_dir(tmp)
            _swap_into_place(tmp, target, what)
        except BaseException as error:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(error, OSError) and not isinstance(error, ZooError) and error.errno in WRITE_ERRNOS:
                message = f"{what} {str(target)!r}: cannot write: {error.strerror}"
                raise WriteError(error.errno, message, str(error.strerror)) from error
            raise
        finally:
            os.close(holder)


def check_target(
    target: str | os.PathLike, *, owned_files: OwnedFiles, what: str = "output", overwrite: bool = False
) -> None:
    """Refuse early what :func:`atomic_directory` would refuse at the end (a foreign or non-directory target).

    For commands that read or build for a long time before they save (``zoo convert``); the save checks
    again under its lock.
    """
    _ownership(_through_symlink(Path(target).absolute()), owned_files, what, overwrite)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike, *, what: str = "output file") -> Iterator[IO[str]]:
    """Write a text file atomically: yield a handle on a temporary sibling, then fsync it and rename it over
    ``target``, so that a reader (or a crash) sees the old file or the whole new one, never a part.

    Args:
        target: the file to (re)write; a symlink to a file is written through (the link stays a link).
        what: how to name it in messages (``--output``).

    If the body raises, the temporary file is removed and ``target`` is untouched. The new file gets the
    mode the umask gives (an existing file's mode is kept).

    Example:
        >>> with atomic_file("answers.jsonl", what="--output") as handle:
        ...     handle.write('{"text": "a cat"}\\n')
    """
    target = _through_symlink(Path(target).absolute())
    if target.is_dir():
        raise ZooError(f"{what} {str(target)!r} is a directory; name a file")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    except OSError as error:
        raise ZooError(
            f"cannot write {what} {str(target)!r}: its directory is not writable ({error.strerror or error})"
        ) from error
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


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
            f"{what} would replace: {few(clashes, 6)}; move them away, or pass overwrite=True / --overwrite"
        )
    if clashes:
        warnings.warn(f"zoo: replaced files in {str(target)!r} that zoo did not write: {few(clashes, 6)}", stacklevel=4)
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
_HOLDER_BYTES = 4096  # a lock file's record is read up to this size (it is another process's data)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: the holder writes this record into the lock file; whoever finds the lock busy reads it.

    The lock itself is the ``flock``: the record only names the holder. ``ended`` is set when the holder
    lets go, so a record without it under a free lock was left by a process that died holding it.
    """

    pid: int
    host: str
    started: str  # local time, ISO 8601 with the UTC offset
    command: str = ""
    ended: str | None = None

    @classmethod
    def now(cls, command: str | None = None) -> Holder:
        """This process, starting now; ``command`` defaults to the command line (shortened)."""
        if command is None:
            command = " ".join([_program(), *sys.argv[1:]])
        return cls(os.getpid(), socket.gethostname(), _now(), _shorten(command, 160))

    def describe(self) -> str:
        """``pid N on host H, started T (COMMAND)``, every part bounded."""
        command = f" ({_shorten(self.command, 80)})" if self.command else ""
        return f"pid {self.pid} on host {_shorten(self.host, 64)}, started {_shorten(self.started, 40)}{command}"

    def ending(self) -> Holder:
        """The same record, marked as let go now."""
        return Holder(self.pid, self.host, self.started, self.command, _now())

    def write(self, fd: int) -> None:
        """Replace the record in the lock file open at ``fd`` (the holder does this under its lock)."""
        data = (json.dumps(asdict(self)) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    @classmethod
    def read(cls, fd: int) -> Holder | None:
        """The record in the lock file open at ``fd``; ``None`` when it is empty, partial or not a record."""
        try:
            data = json.loads(os.pread(fd, _HOLDER_BYTES, 0).decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or isinstance(data.get("pid"), bool):
            return None
        host, started, command, ended = (data.get(k) for k in ("host", "started", "command", "ended"))
        if not (isinstance(host, str) and isinstance(started, str) and isinstance(command, str)):
            return None
        if ended is not None and not isinstance(ended, str):
            return None
        return cls(data["pid"], host, started, command, ended)


def _program() -> str:
    """How this process was started: ``zoo``, ``python -m zoo`` (``torchrun -m zoo``), or the script's name."""
    if not sys.argv or not sys.argv[0]:
        return "python"
    path = Path(sys.argv[0])
    return f"python -m {path.parent.name}" if path.name == "__main__.py" else path.name


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _shorten(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
            holder = Holder.read(fd)
            os.close(fd)
            who = f"{holder.describe()}; " if holder is not None else ""
            if not warned:
                warnings.warn(
                    f"zoo: another process is writing {str(target)!r} ({who}it holds {str(lock)!r}); "
                    "waiting for it to finish",
                    stacklevel=4,
                )
                warned = True
            if time.monotonic() > deadline:
                raise CheckpointError(
                    f"another process has been writing {str(target)!r} for more than {LOCK_TIMEOUT_S:.0f} s "
                    f"({who}it holds {str(lock)!r}); try again when it is done"
                ) from None
            time.sleep(0.01)
            continue
        if _same_file(fd, lock):
            break
        os.close(fd)  # the holder removed this lock file while we waited: take the current one
    with contextlib.suppress(OSError):
        Holder.now().write(fd)  # names this writer to a waiting one (the flock is the lock)
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


def _apply_modes(root: Path, previous: Path | None, *, directories: bool) -> None:
    """Give the files (or the directories) of the temporary directory ``root`` their modes.

    A path that ``previous`` (the directory being replaced) also has, as the same kind of entry, keeps its
    mode there; a new one gets what the umask asks for (the temporary directory is created 0700), with no
    group / other permission that ``previous`` itself lacks. A file with other links (a carried user file)
    is left alone: it is the user's inode.
    """
    mask = _umask()
    cap = 0o7777 if previous is None else (stat.S_IMODE(previous.stat().st_mode) & 0o777) | 0o700
    for path in sorted([root, *root.rglob("*")], key=lambda p: -len(p.parts)):  # children before parents
        info = path.lstat()
        is_dir = stat.S_ISDIR(info.st_mode)
        if is_dir != directories or not (is_dir or stat.S_ISREG(info.st_mode)):
            continue
        if not is_dir and info.st_nlink > 1:
            continue
        mode = stat.S_IMODE(info.st_mode)
        old = _mode_in(previous, path.relative_to(root), is_dir) if previous is not None else None
        if old is not None:
            wanted = old
        elif is_dir:
            wanted = (0o777 & ~mask if mode == 0o700 else mode) & cap
        else:
            wanted = (0o666 & ~mask if mode == 0o600 else mode) & cap
        if wanted != mode:
            os.chmod(path, wanted)


def _mode_in(previous: Path, rel: Path, is_dir: bool) -> int | None:
    """The mode of ``previous / rel`` if it is the same kind of entry (no symlink on the way), else None."""
    path = previous
    try:
        info = previous.stat()
        for part in rel.parts:
            path = path / part
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                return None
    except OSError:
        return None
    if is_dir and stat.S_ISDIR(info.st_mode):
        return stat.S_IMODE(info.st_mode)
    if not is_dir and stat.S_ISREG(info.st_mode):
        return stat.S_IMODE(info.st_mode) & 0o777
    return None


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
