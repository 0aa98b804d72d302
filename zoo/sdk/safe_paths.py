"""Paths named by a checkpoint, confined to its directory.

A manifest is data from others, so every path it names is checked twice: lexically
(:func:`member_name`: relative, no ``..``, no empty or odd parts) and then while opening
(:func:`open_member`): each component is opened relative to its parent's file descriptor with
``O_NOFOLLOW``, and a symlink met on the way is resolved by hand, lexically, against the checkpoint
root. A link that is absolute or climbs out of the root is refused before anything outside is touched
(no ``stat``, no ``open``): a checkpoint can neither read nor probe the existence of a file outside
itself. Non-regular files (FIFOs, devices) are refused without blocking.

:func:`linkable` lets a load hand files it holds open (pinned, already checked) to a confined read without
copying them: links to those descriptors are followed by :func:`zoo.sdk.foreign.confined_directory` while the
``with`` block runs, and no other absolute link is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError
from zoo.sdk.limits import brief

__all__ = ["MAX_LINK_HOPS", "fd_path", "is_linkable", "linkable", "member_name", "open_member", "open_root"]

MAX_LINK_HOPS = 32
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
_LINKABLE: Counter[str] = Counter()  # fd paths of pinned files a confined read may follow a link to (linkable)


def member_name(value: Any, field: str, where: str = "manifest") -> str:
    """``value`` as a clean relative POSIX path inside a checkpoint, or a CheckpointError naming ``field``.

    Example:
        >>> member_name("lm_adapter/adapter_config.json", "files")
        'lm_adapter/adapter_config.json'
    """
    if not isinstance(value, str):
        raise CheckpointError(f"{where}: {field} = {brief(value)}: expected a relative file name (a string)")
    bad = (
        "is empty"
        if not value
        else "is absolute"
        if value.startswith("/") or (len(value) > 1 and value[1] == ":")
        else "contains a NUL or a backslash"
        if "\0" in value or "\\" in value
        else None
    )
    parts = value.split("/")
    if bad is None and any(part in ("", ".", "..") for part in parts):
        bad = "has an empty, '.' or '..' part"
    if bad is None and len(value) > 1024:
        bad = "is longer than 1024 characters"
    if bad is not None:
        raise CheckpointError(
            f"{where}: {field} = {brief(value)} {bad}; a checkpoint names only files inside its own directory"
        )
    return value


def open_root(path: str | os.PathLike) -> int:
    """A directory file descriptor for the checkpoint ``path`` (the user's own symlink there is followed)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise
    except NotADirectoryError as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is a file; a zoo checkpoint is a directory with manifest.json"
        ) from error
    except OSError as error:
        raise CheckpointError(f"checkpoint {str(path)!r}: cannot open it: {error.strerror}") from error


def open_member(root_fd: int, name: str, field: str, where: str = "checkpoint", *, directories: bool = False) -> int:
    """Open the regular file ``name`` below the directory ``root_fd``, never leaving that directory.

    Symlinks inside the tree are followed only when their target, resolved lexically from the link's
    own directory, stays inside the root. Raises ``FileNotFoundError`` for a missing file (the caller
    decides whether the directory was swapped under it) and CheckpointError for anything that escapes
    the directory or is not a regular file (``directories``: or a directory, for listing it).
    """
    parts = member_name(name, field, where).split("/")
    for _ in range(MAX_LINK_HOPS):
        resolved = _walk(root_fd, parts, name, field, where, directories)
        if isinstance(resolved, int):
            return resolved
        parts = resolved
    raise CheckpointError(f"{where}: {field} = {name!r}: more than {MAX_LINK_HOPS} symlinks on the way")


def _walk(root_fd: int, parts: list[str], name: str, field: str, where: str, directories: bool) -> int | list[str]:
    """Open ``parts`` step by step; an fd of the file, or the new parts after resolving one symlink."""
    fds: list[int] = []
    try:
        parent = root_fd
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            flags = _OPEN_FLAGS | (os.O_NONBLOCK if last else getattr(os, "O_DIRECTORY", 0))
            try:
                fd = os.open(part, flags, dir_fd=parent)
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise
                link = _readlink(part, parent)
                if link is None:
                    raise CheckpointError(
                        f"{where}: {field} = {name!r}: {'/'.join(parts[: index + 1])!r} is not a directory"
                    ) from error
                return _resolve_link(parts, index, link, name, field, where)
            fds.append(fd)
            parent = fd
        info = os.fstat(fds[-1])
        if not (stat.S_ISREG(info.st_mode) or (directories and stat.S_ISDIR(info.st_mode))):
            raise CheckpointError(f"{where}: {field} = {name!r} is not a regular file")
        os.set_blocking(fds[-1], True)
        return fds.pop()
    finally:
        for fd in fds:
            os.close(fd)


def _readlink(part: str, parent: int) -> str | None:
    try:
        return os.readlink(part, dir_fd=parent)
    except OSError:
        return None


def _resolve_link(parts: list[str], index: int, link: str, name: str, field: str, where: str) -> list[str]:
    """The path after replacing ``parts[index]`` (a symlink) by its target, refused if it leaves the root."""
    if link.startswith("/") or not link:
        raise CheckpointError(
            f"{where}: {field} = {name!r}: {'/'.join(parts[: index + 1])!r} is a symlink to an absolute path; "
            "a checkpoint may not point outside its directory"
        )
    resolved = list(parts[:index])
    for part in [*link.split("/"), *parts[index + 1 :]]:
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise CheckpointError(
                    f"{where}: {field} = {name!r}: {'/'.join(parts[: index + 1])!r} is a symlink that leads "
                    "outside the checkpoint directory"
                )
            resolved.pop()
        else:
            resolved.append(part)
    if not resolved:
        raise CheckpointError(f"{where}: {field} = {name!r}: a symlink resolves to the checkpoint directory itself")
    return resolved


def fd_path(fd: int) -> str:
    """A path that opens the very file behind ``fd`` (still valid after it was renamed or unlinked)."""
    for base in ("/proc/self/fd", "/dev/fd"):
        if Path(base).is_dir():
            return f"{base}/{fd}"
    raise CheckpointError("this platform has neither /proc/self/fd nor /dev/fd: zoo cannot read checkpoints safely")


@contextlib.contextmanager
def linkable(fds: Iterable[int]) -> Iterator[list[str]]:
    """The :func:`fd_path` of each of ``fds`` (files zoo opened confined and holds open), which a confined read
    (:func:`zoo.sdk.foreign.confined_directory`) follows a link to while the block runs, instead of refusing it."""
    paths = [fd_path(fd) for fd in fds]
    _LINKABLE.update(paths)
    try:
        yield paths
    finally:
        _LINKABLE.subtract(paths)
        for path in paths:
            if _LINKABLE[path] <= 0:
                del _LINKABLE[path]


def is_linkable(target: str) -> bool:
    """Whether a link to ``target`` leads to a file made :func:`linkable` (and open) right now."""
    return _LINKABLE[target] > 0  # a Counter: 0 for a path never made linkable
