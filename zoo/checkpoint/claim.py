"""Owned output directories: a run claims its directory (a marker and a lock) before it writes there.

``zoo train``, ``zoo bench --out`` and ``zoo data shapes OUT`` write many files into one directory, in
place and over a long time (checkpoints inside it are still written atomically, :mod:`zoo.checkpoint.atomic`).
:func:`claim_directory` makes that directory the run's first:

- **ownership**: the directory must be new, empty, or marked as this kind of zoo output by the marker
  :data:`zoo.checkpoint.atomic.MARKER` that an earlier claim left. A directory holding anything else (a user's own
  ``log.jsonl``, another tool's output) is refused, naming a few of its files, unless ``overwrite`` (zoo
  then writes beside them and replaces those whose names it writes) or ``adopt(directory)`` accepts it
  (``zoo train --resume`` of a run directory written before markers existed);
- **one run at a time**: an exclusive ``flock`` on ``.zoo-output.lock`` inside the directory, held until
  the run ends, with a :class:`zoo.checkpoint.atomic.Holder` record naming the run (pid, host, start time, command).
  A second claim is refused at once, naming the running one (not queued: two runs writing one output
  would mix their files);
- **stale locks**: the kernel drops the ``flock`` of a process that dies, so a lock file whose lock is
  free is stale whatever pid or host its record names (PID namespaces and other hosts included). The
  claim takes it over; when the record says the run never let go (it died), :attr:`Claim.stale` names it.

The lock file and the marker are created with ``O_NOFOLLOW`` / ``O_EXCL``: a symbolic link planted under
either name is refused, never written through.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zoo.checkpoint.atomic import MARKER, Holder, marked_files
from zoo.errors import OutputDirError

__all__ = ["LOCK", "Claim", "claim_directory", "foreign_entries"]

LOCK = ".zoo-output.lock"
_OPEN_FLAGS = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_HOLDER_WAIT_S = 1.0  # how long a refused claim waits for a fresh holder to write its record


@dataclass(frozen=True)
class Claim:
    """A held claim: the directory (a symlink resolved) and the run that died holding it before, if one did."""

    path: Path
    stale: Holder | None = None


@contextlib.contextmanager
def claim_directory(
    directory: str | os.PathLike,
    *,
    kind: str,
    key: str,
    overwrite: bool = False,
    adopt: Callable[[Path], bool] | None = None,
    hint: str = "",
    command: str | None = None,
) -> Iterator[Claim]:
    """Claim ``directory`` for one run of ``kind`` output; hold it until the ``with`` block ends.

    Args:
        directory: the output directory (created with its parents if missing; a symlink is written through).
        kind: the kind of output, recorded in the marker (``"zoo train output"``); a directory marked
            with another kind is not this run's.
        key: the option or YAML key that named the directory, for messages (``"train.output_dir"``).
        overwrite: also claim a directory holding files zoo did not write (they are kept).
        adopt: accepts an unmarked directory as this kind's (``--resume`` of a run from before markers).
        hint: more ways out for the refusal of a foreign directory (``"or --resume to continue a run"``).
        command: the command named in the lock record (default: this process's command line).

    Raises:
        OutputDirError: the directory is another run's right now, holds files zoo did not write, is not a
            directory, or its lock file is a symbolic link. Nothing in it is changed then.

    Example:
        >>> with claim_directory("runs/a", kind="zoo train output", key="--output-dir") as claim:
        ...     (claim.path / "log.jsonl").write_text("...")
    """
    path = _make_directory(Path(directory), key)
    fd, made_lock = _lock(path, key)
    try:
        previous = Holder.read(fd)
        stale = previous if previous is not None and previous.ended is None else None
        if marked_files(kind)(path) is None:
            foreign = foreign_entries(path)
            if foreign and not overwrite and not (adopt is not None and adopt(path)):
                _refuse_foreign(path, key, kind, foreign, hint, made_lock)
            _write_marker(path, kind, key)
        holder = Holder.now(command)
        holder.write(fd)
        try:
            yield Claim(path, stale)
        finally:
            with contextlib.suppress(OSError):
                holder.ending().write(fd)
    finally:
        os.close(fd)  # releases the flock


def foreign_entries(directory: str | os.PathLike) -> list[str]:
    """Names in ``directory`` other than a claim's own lock file and marker, sorted."""
    return sorted(name for name in os.listdir(directory) if name not in (LOCK, MARKER))


def _make_directory(directory: Path, key: str) -> Path:
    where = f"{key} = {str(directory)!r}"
    if directory.is_symlink() and not directory.exists():
        raise OutputDirError(f"{where} is a dangling symbolic link")
    path = Path(os.path.realpath(directory)) if directory.is_symlink() else directory.absolute()
    if os.path.lexists(path) and not path.is_dir():
        raise OutputDirError(f"{where} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputDirError(f"cannot create {where}: {error.strerror or error}") from error
    return path


def _lock(path: Path, key: str) -> tuple[int, bool]:
    """Open and ``flock`` the lock file (no-follow); refuse at once, naming the holder, if it is held."""
    lock = path / LOCK
    while True:
        made = True
        try:
            fd = os.open(lock, _OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            made = False
            try:
                fd = os.open(lock, _OPEN_FLAGS)
            except FileNotFoundError:
                continue  # removed between the two opens (a refused claim cleaning up): try again
            except OSError as error:
                raise _lock_error(lock, key, error) from error
        except OSError as error:
            raise _lock_error(lock, key, error) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_of_busy(fd)
            os.close(fd)
            who = holder.describe() if holder is not None else "a process that has not named itself yet"
            raise OutputDirError(
                f"{key} = {str(path)!r} is in use by another zoo run ({who}); wait for it to finish, or choose "
                "another directory"
            ) from None
        if _same_file(fd, lock):
            return fd, made
        os.close(fd)  # a refused claim removed the file it had made while we waited: take the current one


def _holder_of_busy(fd: int) -> Holder | None:
    """The record of a held lock; a holder that has just taken it may not have written it yet."""
    deadline = time.monotonic() + _HOLDER_WAIT_S
    while True:
        holder = Holder.read(fd)
        if (holder is not None and holder.ended is None) or time.monotonic() > deadline:
            return holder if holder is not None and holder.ended is None else None
        time.sleep(0.02)


def _lock_error(lock: Path, key: str, error: OSError) -> OutputDirError:
    if error.errno == errno.ELOOP:
        return OutputDirError(f"{key}: the lock file {str(lock)!r} is a symbolic link; refusing to follow it")
    return OutputDirError(f"cannot lock {key} = {str(lock.parent)!r}: {error.strerror or error}")


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _refuse_foreign(path: Path, key: str, kind: str, foreign: list[str], hint: str, made_lock: bool) -> None:
    if made_lock:  # leave the user's directory as it was
        with contextlib.suppress(OSError):
            os.unlink(path / LOCK)
    shown = ", ".join(foreign[:6]) + (f" and {len(foreign) - 6} more" if len(foreign) > 6 else "")
    raise OutputDirError(
        f"{key} = {str(path)!r} holds files zoo did not write there ({shown}; no {kind} marker {MARKER}); "
        f"choose a new or empty directory, or pass --overwrite (overwrite=True) to write beside them (files of "
        f"the names zoo writes are replaced){', ' + hint if hint else ''}"
    )


def _write_marker(path: Path, kind: str, key: str) -> None:
    """Mark ``path`` as ``kind`` output, atomically (a temporary file renamed over any old marker)."""
    data = json.dumps({"format": "zoo.output", "kind": kind, "files": [], "claimed": True}, indent=1) + "\n"
    temporary = path / f"{MARKER}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(temporary, flags, 0o666)  # the umask applies, as to any file zoo writes
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
            os.replace(temporary, path / MARKER)  # replaces a link planted there; never writes through it
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as error:
        raise OutputDirError(f"cannot mark {key} = {str(path)!r} as zoo's: {error.strerror or error}") from error
