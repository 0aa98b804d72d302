"""One consistent generation of a checkpoint, pinned by file descriptors before anything is read.

A trainer re-saves a checkpoint while an evaluator loads it: a load that opened each file by path at
its own moment could mix two saves. :meth:`Snapshot.open` takes one directory handle, reads and
validates the manifest through it, and opens every file the manifest lists (confined to the directory,
see :mod:`zoo.sdk.safe_paths`) before reading any of them. From then on the load no longer depends on the
path: a save that swaps a new directory in and deletes the old one cannot change what this load sees
(open files outlive their names). If the directory is swapped while the files are being opened, the
snapshot starts over on the new one. Each safetensors file carries the generation id of its manifest
in its metadata, and the two are compared when it is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from zoo.checkpoint.manifest import MANIFEST, MAX_MANIFEST_BYTES, parse_manifest
from zoo.errors import CheckpointError
from zoo.sdk.safe_paths import fd_path, linkable, open_member, open_root

if TYPE_CHECKING:
    import torch

__all__ = ["GENERATION_KEY", "Snapshot", "check_snapshot", "verify"]

GENERATION_KEY = "zoo.generation"
_ATTEMPTS = 50


class Snapshot:
    """The manifest and open file descriptors of every file of one checkpoint generation.

    Example:
        >>> with Snapshot.open("runs/ckpt") as snap:
        ...     tensors = snap.tensors("projector.safetensors", "projector weights")
    """

    def __init__(self, path: Path, manifest: dict[str, Any], fds: dict[str, int]) -> None:
        self.path = path
        self.manifest = manifest
        self.where = f"checkpoint {str(path)!r}"
        self._fds = fds

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike) -> Snapshot:
        """Pin one complete generation of ``directory``; retry if a save swaps it meanwhile."""
        path = Path(directory)
        for attempt in range(_ATTEMPTS):
            try:
                root = open_root(path)
            except FileNotFoundError:
                if _recovered(path):
                    continue
                raise _no_directory(path) from None
            try:
                return cls._pin(path, root)
            except _Swapped:
                time.sleep(min(0.002 * (attempt + 1), 0.05))
            finally:
                os.close(root)
        raise CheckpointError(
            f"checkpoint {str(path)!r} was replaced {_ATTEMPTS} times while zoo was opening it; load it again "
            "when saves are less frequent"
        )

    @classmethod
    def _pin(cls, path: Path, root: int) -> Snapshot:
        where = f"checkpoint {str(path)!r}"
        fds: dict[str, int] = {}
        try:
            try:
                manifest_fd = open_member(root, MANIFEST, MANIFEST, where)
            except FileNotFoundError:
                if _swapped(path, root):
                    raise _Swapped from None
                raise _no_manifest(path, root) from None
            try:
                data = _read_all(manifest_fd, MAX_MANIFEST_BYTES + 1, f"{where}: {MANIFEST}")
            finally:
                os.close(manifest_fd)
            manifest = parse_manifest(data, f"{path / MANIFEST}")
            files = manifest["files"]
            missing = []
            for name in files:
                try:
                    fds[name] = open_member(root, name, "files", where)
                except FileNotFoundError:
                    missing.append(name)
            if missing and _swapped(path, root):
                raise _Swapped
            problems = [f"{name} is missing" for name in missing]
            for name, fd in fds.items():
                entry = files[name]
                size = entry if isinstance(entry, int) else entry["size"]
                actual = os.fstat(fd).st_size
                if actual != size:
                    problems.append(f"{name} has {actual} bytes, the manifest says {size}")
            if problems:
                raise CheckpointError(f"{where} is incomplete: {'; '.join(problems[:5])}")
            return cls(path, manifest, fds)
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise

    def close(self) -> None:
        """Close every pinned file."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------------------
    def _fd(self, name: str) -> int:
        if name not in self._fds:
            raise CheckpointError(f"{self.where}: {name!r} is not listed in the manifest's files")
        return self._fds[name]

    def has(self, name: str) -> bool:
        """Whether the manifest lists ``name`` (and it was pinned)."""
        return name in self._fds

    def read_json(self, name: str, label: str) -> dict[str, Any]:
        """A small JSON object file of the checkpoint."""
        import json

        data = _read_all(self._fd(name), MAX_MANIFEST_BYTES, f"{label}: {name}")
        try:
            value = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise CheckpointError(f"{label}: {name} is not valid JSON: {str(error)[:200]}") from error
        if not isinstance(value, dict):
            raise CheckpointError(f"{label}: {name} is not a JSON object")
        return value

    def tensors(self, name: str, label: str) -> dict[str, torch.Tensor]:
        """The tensors of a safetensors file, checked to belong to this manifest's generation."""
        from safetensors import safe_open

        try:
            with safe_open(fd_path(self._fd(name)), framework="pt") as reader:
                metadata = reader.metadata() or {}
                tensors = {key: reader.get_tensor(key) for key in reader.keys()}
        except CheckpointError:
            raise
        except Exception as error:  # SafetensorError is a plain Exception
            raise CheckpointError(
                f"{label}: {name} cannot be read as safetensors: {type(error).__name__}: {str(error)[:200]}"
            ) from error
        generation = self.manifest.get("generation")
        stamped = metadata.get(GENERATION_KEY)
        if generation and stamped is not None and stamped != generation:
            raise CheckpointError(
                f"{label}: {name} was written by save {stamped[:12]} but the manifest is save {generation[:12]}: "
                "the directory mixes two checkpoints; save it again"
            )
        return tensors

    def copy_tree(self, prefix: str, destination: Path) -> Path:
        """Copy the pinned files under ``prefix/`` into ``destination`` (for libraries that want a directory)."""
        for name, fd in self._fds.items():
            if name.startswith(prefix + "/"):
                out = destination / name[len(prefix) + 1 :]
                out.parent.mkdir(parents=True, exist_ok=True)
                with open(out, "wb") as handle:
                    for chunk in _chunks(fd):
                        handle.write(chunk)
        return destination

    @contextlib.contextmanager
    def linked_tree(self, prefix: str, destination: Path) -> Iterator[Path]:
        """``destination`` holding, for the block, links to this process's descriptors of the pinned files under
        ``prefix/`` (for a library that wants a directory): no byte is copied, what it reads is the pinned
        generation even if a save replaces the checkpoint meanwhile, and a confined read
        (:func:`zoo.sdk.foreign.confined_directory`, which refuses any other link out) follows them."""
        members = {name: fd for name, fd in self._fds.items() if name.startswith(prefix + "/")}
        with linkable(members.values()) as targets:
            for name, target in zip(members, targets):
                link = destination / name[len(prefix) + 1 :]
                link.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, link)
            yield destination

    def verify(self) -> list[str]:
        """Problems found by hashing every listed file against its recorded sha256 (empty: all match)."""
        problems = []
        for name, entry in self.manifest["files"].items():
            expected = entry.get("sha256") if isinstance(entry, Mapping) else None
            if expected is None:
                problems.append(f"{name}: no sha256 recorded (format_version {self.manifest['format_version']})")
                continue
            digest = hashlib.sha256()
            for chunk in _chunks(self._fd(name)):
                digest.update(chunk)
            if digest.hexdigest() != expected:
                problems.append(
                    f"{name}: sha256 {digest.hexdigest()[:16]}... differs from the manifest's {expected[:16]}..."
                )
        return problems


def check_snapshot(snapshot: Snapshot) -> None:
    """Raise a ``CheckpointError`` naming (up to five of) the files whose sha256 differs from the manifest."""
    problems = snapshot.verify()
    if problems:
        raise CheckpointError(f"{snapshot.where} failed verification: {'; '.join(problems[:5])}")


def verify(directory: str | os.PathLike) -> dict[str, Any]:
    """Check every file of a checkpoint against the sha256 its manifest records.

    Only hashes bytes: no model library and no plugin is imported (``zoo verify`` runs this).

    Returns:
        ``{"directory", "files", "bytes", "generation"}`` when every file matches.

    Raises:
        CheckpointError: naming each file whose bytes differ, or that the manifest lists without a hash.

    Example:
        >>> zoo.checkpoint.snapshot.verify("runs/ckpt")["files"]
        9
    """
    with Snapshot.open(directory) as snapshot:
        check_snapshot(snapshot)
        files = snapshot.manifest["files"]
        return {
            "directory": str(directory),
            "files": len(files),
            "bytes": sum(e["size"] if isinstance(e, Mapping) else e for e in files.values()),
            "generation": snapshot.manifest.get("generation"),
        }


class _Swapped(Exception):
    """The directory was replaced while it was being pinned: start over."""


def _swapped(path: Path, root: int) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return True
    held = os.fstat(root)
    return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)


def _recovered(path: Path) -> bool:
    from zoo.checkpoint.atomic import recover_interrupted_swap

    return recover_interrupted_swap(path)


def _chunks(fd: int, size: int = 1 << 20):
    offset = 0
    while True:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def _read_all(fd: int, limit: int, label: str) -> bytes:
    parts, total = [], 0
    for chunk in _chunks(fd):
        total += len(chunk)
        if total > limit:
            raise CheckpointError(f"{label} is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _no_directory(path: Path) -> CheckpointError:
    if os.path.lexists(path) and not path.is_dir():
        return CheckpointError(f"checkpoint {str(path)!r} is a file; a zoo checkpoint is a directory with {MANIFEST}")
    leftover = next((p for p in _asides(path)), None)
    hint = (
        f"; an interrupted save left the previous checkpoint at {str(leftover)!r}: rename it back to {path.name!r}"
        if leftover
        else ""
    )
    return CheckpointError(f"checkpoint {str(path)!r}: no such directory{hint}")


def _asides(path: Path) -> list[Path]:
    parent = path.absolute().parent
    if not parent.is_dir():
        return []
    prefix = f".{path.name}.old-"
    return sorted(p for p in parent.iterdir() if p.name.startswith(prefix))


def _no_manifest(path: Path, root: int) -> CheckpointError:
    from zoo.checkpoint.kinds import is_vlm_learning_dir, not_a_zoo_checkpoint_hint

    if is_vlm_learning_dir(path):
        return CheckpointError(not_a_zoo_checkpoint_hint(path))
    hint = ""
    try:
        os.stat("config.json", dir_fd=root, follow_symlinks=False)
        hint = (
            " (it has a config.json: if it is a transformers LlavaForConditionalGeneration directory, import it "
            "with zoo.from_hf_llava(DIR) or 'zoo convert --from-hf-llava DIR OUT')"
        )
    except OSError:
        pass
    return CheckpointError(
        f"checkpoint {str(path)!r} has no {MANIFEST}: it is not a zoo checkpoint (save one with zoo.save(model, DIR) "
        f"or 'zoo build ... --save DIR'){hint}"
    )
