"""Directories zoo did not write (Llava exports, LM and tower checkpoints, tokenizers), read confined.

transformers, tokenizers, safetensors and timm open files by path and follow every symlink they
meet, so a downloaded directory whose ``chat_template.jinja`` links to ``~/.ssh/id_rsa`` would have
that file read (and copied into the zoo checkpoint made from it). :func:`confined_directory` reads a
foreign directory the way zoo reads its own checkpoints (:mod:`zoo.sdk.safe_paths`): every file below it
is opened relative to the directory's own descriptor with ``O_NOFOLLOW``, a symlink is followed only
if it resolves (lexically) inside the directory, and one that points out is refused in one line that
names it, before anything outside is opened or even probed. The libraries are then handed a private
staging directory (0700) that mirrors the tree with links to those open descriptors
(``/proc/self/fd/N``): they read exactly the pinned files, and a swap of the directory meanwhile
cannot change what they see.

Hidden directories (``.git``, ``.cache``) are not staged (no library reads them), nor anything
deeper than :data:`MAX_DEPTH`; at most :data:`MAX_FILES` files are pinned.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError, ZooError
from zoo.sdk.limits import brief
from zoo.sdk.safe_paths import fd_path, is_linkable, member_name, open_member, open_root

__all__ = [
    "MAX_DEPTH",
    "MAX_FILES",
    "MAX_JSON_BYTES",
    "check_confined_file",
    "confined_directory",
    "read_json_file",
    "unstage_name",
]

MAX_FILES = 4096
MAX_DEPTH = 4
_MAX_INDEX_BYTES = 64 * 1024**2
MAX_JSON_BYTES = 64 * 1024**2  # a config.json or processor config (published ones are a few KiB)
_CHECKPOINT_TAIL = "; a checkpoint may not point outside its directory"
_HINT = "; zoo reads nothing outside a directory it imports (copy the file in if you trust it)"


@contextlib.contextmanager
def confined_directory(path: str | os.PathLike, *, what: str) -> Iterator[Path]:
    """A staging directory that shows the files of ``path`` and nothing outside it, for the ``with`` block.

    Args:
        path: the foreign directory (a symlink naming the directory itself is the caller's own and followed).
        what: how errors name it, e.g. ``"model.lm.checkpoint = 'qwen/'"``.

    Raises:
        CheckpointError: ``path`` is not a directory, or a file in it links outside it, is not a regular
            file, or cannot be opened; a ``ZooError`` raised in the block names ``path``, not the staging.

    Example:
        >>> with confined_directory("llava-1.5-7b-hf", what="Llava directory") as staged:
        ...     config = AutoConfig.from_pretrained(staged)
    """
    source = Path(path).expanduser()
    try:
        root = os.open(source, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CheckpointError(f"{what}: no such directory") from None
    except NotADirectoryError:
        raise CheckpointError(f"{what}: not a directory") from None
    except OSError as error:
        raise CheckpointError(f"{what}: cannot open it: {error.strerror or error}") from None
    fds: list[int] = []
    names: dict[str, str] = {}
    staging = Path(tempfile.mkdtemp(prefix="zoo-read-"))
    try:
        _stage(root, "", staging, fds, names, what, depth=0)
        _check_indexes(staging, names, what)
        names = {staged: str(source / name) for staged, name in names.items()}
        names[str(staging)] = str(source)
        try:
            yield staging
        except (ZooError, OSError) as error:
            _unstage(error, names)
            raise
    finally:
        for fd in fds:
            os.close(fd)
        os.close(root)
        shutil.rmtree(staging, ignore_errors=True)  # links only: rmtree never follows them


def unstage_name(loaded: Any, staged: Path, source: str | os.PathLike) -> Any:
    """``loaded`` (a model, config or tokenizer read from ``staged``) renamed to the directory it came from.

    transformers records where an object was loaded from (``config._name_or_path``, a tokenizer's
    ``name_or_path``) and peft writes it into ``adapter_config.json``: it must be the user's directory,
    not the staging, which is gone once the ``with`` block ends.
    """
    for holder in (loaded, getattr(loaded, "config", None)):
        name = getattr(holder, "name_or_path", None)
        if holder is not None and isinstance(name, str) and name.startswith(str(staged)):
            holder.name_or_path = str(source) + name[len(str(staged)) :]
    init_kwargs = getattr(loaded, "init_kwargs", None)
    if isinstance(init_kwargs, dict) and str(init_kwargs.get("name_or_path", "")).startswith(str(staged)):
        init_kwargs["name_or_path"] = str(source)
    return loaded


def read_json_file(path: str | os.PathLike, *, what: str = "JSON file", limit: int = MAX_JSON_BYTES) -> Any:
    """The parsed JSON of a regular file of at most ``limit`` bytes; anything else is one ``CheckpointError``.

    A FIFO or device is refused without blocking (:func:`zoo.sdk.yaml_io.read_text_file`); JSON nested past
    Python's recursion limit is refused, not a ``RecursionError``.
    """
    from zoo.sdk.yaml_io import read_text_file

    try:
        text = read_text_file(path, what=what, limit=limit)
    except ZooError as error:
        raise CheckpointError(str(error)) from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise CheckpointError(f"{what} {str(path)!r} is not valid JSON: {str(error)[:200]}") from None
    except RecursionError:
        raise CheckpointError(f"{what} {str(path)!r} is nested too deeply to read") from None


def check_confined_file(directory: str | os.PathLike, name: str, *, what: str) -> bool:
    """Whether ``directory/name`` is a regular file inside ``directory`` (False: absent); a link out is refused.

    For libraries that are handed one file of a directory (timm and open_clip weight files).
    """
    try:
        root = open_root(Path(directory).expanduser())
    except (FileNotFoundError, CheckpointError):
        return False
    try:
        fd = open_member(root, name, "file", what)
    except FileNotFoundError:
        return False
    except CheckpointError as error:
        raise _refusal(error, name) from None
    finally:
        os.close(root)
    os.close(fd)
    return True


def _stage(root: int, prefix: str, staging: Path, fds: list[int], names: dict[str, str], what: str, depth: int) -> None:
    """Pin every file below ``prefix`` (``""``: the root) and link it into ``staging``."""
    listing = root if not prefix else open_member(root, prefix.rstrip("/"), "file", what, directories=True)
    try:
        for entry in sorted(os.listdir(listing)):
            _stage_entry(root, listing, prefix, entry, staging, fds, names, what, depth)
    finally:
        if listing != root:
            os.close(listing)


def _stage_entry(
    root: int, listing: int, prefix: str, entry: str, staging: Path, fds: list[int], names: dict[str, str],
    what: str, depth: int,
) -> None:  # fmt: skip
    name = prefix + entry
    try:
        member_name(name, "file", what)
    except CheckpointError:
        return  # a name no library could be asked for (a backslash, NUL): not staged
    pinned = _pinned_link(listing, entry)
    if pinned is not None:  # a file zoo already holds open and checked (a checkpoint's tokenizer): link to it
        os.symlink(pinned, staging / name)
        names[str(staging / name)] = name
        return
    try:
        fd = open_member(root, name, "file", what, directories=True)
    except FileNotFoundError:
        return  # removed while listing
    except CheckpointError as error:
        raise _refusal(error, name) from None
    except OSError as error:
        if error.errno in (errno.EMFILE, errno.ENFILE):
            raise CheckpointError(f"{what}: too many files open to pin {name!r}; raise 'ulimit -n'") from None
        raise CheckpointError(f"{what}: cannot open {name!r}: {error.strerror or error}") from None
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        os.close(fd)
        if not entry.startswith(".") and depth < MAX_DEPTH:
            (staging / name).mkdir()
            _stage(root, name + "/", staging, fds, names, what, depth + 1)
        return
    fds.append(fd)
    if len(fds) > MAX_FILES:
        raise CheckpointError(f"{what} holds more than {MAX_FILES} files; zoo reads directories of at most that many")
    link = fd_path(fd)
    os.symlink(link, staging / name)
    names[str(staging / name)] = names[link] = name


def _pinned_link(listing: int, entry: str) -> str | None:
    """The target of ``entry`` if it is a link to a file made :func:`zoo.sdk.safe_paths.linkable`, else None."""
    try:
        target = os.readlink(entry, dir_fd=listing)
    except OSError:  # not a link, or gone
        return None
    return target if is_linkable(target) else None


def _check_indexes(staging: Path, names: dict[str, str], what: str) -> None:
    """A weight index (``*.index.json``) may name only files inside the directory.

    transformers joins its ``weight_map`` values to the directory unchecked, so ``../../x`` would be read.
    """
    for staged, name in names.items():
        if not name.endswith(".index.json") or not staged.startswith(str(staging)):
            continue
        with open(staged, "rb") as handle:
            data = handle.read(_MAX_INDEX_BYTES + 1)
        if len(data) > _MAX_INDEX_BYTES:
            raise CheckpointError(f"{what}: {name!r} is larger than {_MAX_INDEX_BYTES} bytes; not a weight index")
        try:
            weight_map = json.loads(data).get("weight_map") or {}
            files = set(weight_map.values())
        except (ValueError, RecursionError, AttributeError, TypeError) as error:
            raise CheckpointError(f"{what}: {name!r} is not a weight index: {str(error)[:120]}") from None
        folder = name.rpartition("/")[0]
        for file in sorted(map(str, files)):
            try:
                member_name(f"{folder}/{file}" if folder else file, "weight_map", what)
            except CheckpointError:
                raise CheckpointError(
                    f"{what}: {name!r} names the weight file {brief(file)}, which is not inside the directory"
                ) from None


def _refusal(error: CheckpointError, name: str) -> CheckpointError:
    """:func:`zoo.sdk.safe_paths.open_member`'s refusal, worded for a directory zoo imports."""
    text = str(error).replace(f"file = {name!r}: ", "", 1)
    if text.endswith(_CHECKPOINT_TAIL):
        text = text[: -len(_CHECKPOINT_TAIL)]
    return CheckpointError(text + (_HINT if "symlink" in text else ""))


def _unstage(error: BaseException, names: dict[str, str]) -> None:
    """Rewrite staging and descriptor paths in ``error``'s message to the names the user knows."""

    def fix(text: str) -> str:
        for staged in sorted(names, key=len, reverse=True):  # a file's path before its directory's
            if staged in text:
                text = text.replace(staged, names[staged])
        return text

    error.args = tuple(fix(arg) if isinstance(arg, str) else arg for arg in error.args)
    if isinstance(error, OSError) and isinstance(error.filename, str):
        error.filename = fix(error.filename)
