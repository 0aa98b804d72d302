"""A disk cache of frozen vision-tower features, shared by every run that uses the same tower.

A tower held frozen in eval mode (``model.vision.train: frozen``, the LLaVA stage-1 default) computes a
pure function of four things: its weights, its options, its image preprocessing and the image's bytes.
:func:`tower_fingerprint` hashes the first three (every tensor of the tower's state dict, the tower's
class, config and contract, the preprocessor's repr and its output on a fixed probe image, the
any-res layout, plus the torch version, the device type and the autocast dtype the features are
computed under); an entry's key is that fingerprint plus the sha256 of the image file. A changed
checkpoint, option, preprocessing or image is therefore a miss, never a stale hit.

Layout under the cache folder (``train.feature_cache_dir``, default :func:`default_cache_dir`)::

    <fingerprint>/tower.json                  what the fingerprint stands for (zoo cache info shows it)
    <fingerprint>/<ab>/<image sha256>.safetensors   one image: "features" [tokens, D] (any-res: [tiles, tokens, D])

Each entry is written with :func:`zoo.checkpoint.atomic.atomic_write_bytes` (temporary sibling, fsync, rename),
so a reader never sees a torn entry and two processes filling one cache at once each rename complete
files; every read checks the entry's metadata (format, fingerprint, image hash) and shape, and an entry
that does not check out is a miss. The policy (when the cache is used) and the fill live in
:mod:`zoo.train.feature_fill`; ``zoo cache info | clear`` in :mod:`zoo.cli.cache`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.checkpoint.atomic import atomic_write_bytes
from zoo.errors import ZooError

if TYPE_CHECKING:
    import torch

    from zoo.core.multimodal import MultiModal

__all__ = [
    "ENTRY_SUFFIX",
    "FORMAT",
    "TOWER_FILE",
    "CachedImage",
    "FeatureCache",
    "cache_info",
    "clear_cache",
    "default_cache_dir",
    "hash_file",
    "hash_files",
    "tower_fingerprint",
    "used_bytes",
]

FORMAT = "zoo.features/1"
TOWER_FILE = "tower.json"
ENTRY_SUFFIX = ".safetensors"
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$ZOO_CACHE_DIR/features``, else ``$XDG_CACHE_HOME/zoo/features``, else ``~/.cache/zoo/features``."""
    if os.environ.get("ZOO_CACHE_DIR"):
        return Path(os.environ["ZOO_CACHE_DIR"]) / "features"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zoo" / "features"


def hash_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(paths: Iterable[str], *, threads: int = 4) -> dict[str, str]:
    """``{path: sha256}`` for distinct paths (hashlib releases the GIL, so a few threads overlap the reads)."""
    from concurrent.futures import ThreadPoolExecutor

    unique = sorted(set(paths))
    if len(unique) < 64:
        return {p: hash_file(p) for p in unique}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return dict(zip(unique, pool.map(hash_file, unique)))


def _probe_image() -> Any:
    """A fixed, non-square RGB gradient: preprocessing it exposes a changed resize, crop or normalisation."""
    import numpy as np
    from PIL import Image

    rows, cols = np.mgrid[0:37, 0:53].astype(np.uint16)  # [37, 53] each
    pixels = np.stack([(rows * 7 + cols * 3) % 256, (rows * 11) % 256, (cols * 5 + 40) % 256], axis=-1)  # [37, 53, 3]
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def _update_tensor(digest: Any, name: str, tensor: torch.Tensor) -> None:
    import torch

    tensor = tensor.detach().to("cpu").contiguous()
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    if tensor.numel():
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def tower_fingerprint(
    model: MultiModal, *, device_type: str, autocast: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The cache key of ``model``'s tower: ``(sha256 hex, the description that went into it)``.

    Hashes every tensor of the tower's state dict (weights and buffers), the tower's class, typed config
    and contract, its preprocessor (repr, mean, std, size, and its output on a probe image, so that a
    changed resize or crop counts even where the repr does not show it), the any-res layout, the torch
    version, the device type and the autocast dtype (features computed under bf16 autocast differ).
    """
    import torch

    tower = model.vision
    pre = tower.preprocessor
    anyres = model.composition.vision.anyres
    describe: dict[str, Any] = {
        "format": FORMAT,
        "name": model.composition.vision.name,
        "class": f"{type(tower).__module__}.{type(tower).__qualname__}",
        "config": repr(model.component_configs.get("vision")),
        "contract": tower.contract(),
        "preprocessor": {"repr": repr(pre), "image_size": pre.image_size, "mean": list(pre.mean), "std": list(pre.std)},
        "anyres": anyres.to_dict() if anyres is not None else None,
        "torch": torch.__version__,
        "device": device_type,
        "autocast": autocast,
    }
    digest = hashlib.sha256(json.dumps(describe, sort_keys=True, default=str).encode())
    probe = [_probe_image()]
    pixels = model.anyres.preprocess(probe, pre)[0] if model.anyres is not None else pre(probe)
    _update_tensor(digest, "probe", pixels)
    for name, tensor in sorted(tower.state_dict().items()):
        _update_tensor(digest, name, tensor)
    return digest.hexdigest(), describe


@dataclass(frozen=True)
class CachedImage:
    """One entry: the tower's features of an image and that image's size (any-res needs it)."""

    features: torch.Tensor  # [tokens, D]; any-res: [tiles, tokens, D]
    height: int
    width: int


class FeatureCache:
    """The entries of one tower fingerprint under ``root``.

    Args:
        root: the cache folder (shared by every tower).
        fingerprint: :func:`tower_fingerprint` of the tower.
        feature_shape: ``(tokens, hidden)`` of one image (any-res: of one tile), checked on every read.
        store_dtype: store features in this dtype (``None``: as the tower computes them).
        tiles_for: any-res only: tiles of an image of ``(height, width)``, checked on every read.
        describe: what the fingerprint stands for (written to ``tower.json``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        fingerprint: str,
        *,
        feature_shape: tuple[int, int],
        store_dtype: torch.dtype | None = None,
        tiles_for: Any = None,
        describe: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.directory = self.root / fingerprint
        self.feature_shape = tuple(feature_shape)
        self.store_dtype = store_dtype
        self.tiles_for = tiles_for
        self.describe = dict(describe or {})
        self.hits = 0
        self.misses = 0

    def create(self) -> None:
        """Make the folder and its ``tower.json`` (atomically; a concurrent creator writes the same)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        info = self.directory / TOWER_FILE
        if not info.is_file():
            text = json.dumps({**self.describe, "fingerprint": self.fingerprint, "created": time.time()}, indent=1)
            atomic_write_bytes(info, text.encode())

    def entry_path(self, image_digest: str) -> Path:
        """Where the entry of an image (by its sha256) lives."""
        return self.directory / image_digest[:2] / f"{image_digest}{ENTRY_SUFFIX}"

    def has(self, image_digest: str) -> bool:
        """Whether a usable entry exists: its header is read and checked (not its tensor data)."""
        from safetensors import safe_open

        try:
            with safe_open(str(self.entry_path(image_digest)), framework="pt") as file:
                meta = file.metadata() or {}
                shape = tuple(file.get_slice("features").get_shape())
        except Exception:  # noqa: BLE001 - missing, truncated or not safetensors: not usable
            return False
        return self._checks_out(meta, image_digest, shape)

    def load(self, image_digest: str) -> CachedImage | None:
        """The entry of an image, or ``None`` when it is missing or does not check out (a miss)."""
        from safetensors import safe_open

        path = self.entry_path(image_digest)
        try:
            with safe_open(str(path), framework="pt") as file:
                meta = file.metadata() or {}
                features = file.get_tensor("features")
        except Exception:  # noqa: BLE001 - an unreadable entry (missing, truncated, not safetensors) is a miss
            self.misses += 1
            return None
        if not self._checks_out(meta, image_digest, tuple(features.shape)):
            self.misses += 1
            return None
        self.hits += 1
        return CachedImage(features, int(meta["height"]), int(meta["width"]))

    def _checks_out(self, meta: Mapping[str, str], image_digest: str, shape: tuple[int, ...]) -> bool:
        if meta.get("format") != FORMAT or meta.get("fingerprint") != self.fingerprint:
            return False
        if (
            meta.get("image") != image_digest
            or not meta.get("height", "").isdigit()
            or not meta.get("width", "").isdigit()
        ):
            return False
        if self.tiles_for is None:
            return shape == self.feature_shape
        return shape == (self.tiles_for(int(meta["height"]), int(meta["width"])), *self.feature_shape)

    def store(self, image_digest: str, features: torch.Tensor, *, height: int, width: int) -> int:
        """Write an entry atomically; returns its size in bytes."""
        from safetensors.torch import save

        if self.store_dtype is not None:
            features = features.to(self.store_dtype)
        meta = {"format": FORMAT, "fingerprint": self.fingerprint, "image": image_digest,
                "height": str(int(height)), "width": str(int(width))}  # fmt: skip
        payload = save({"features": features.detach().to("cpu").contiguous()}, metadata=meta)
        path = self.entry_path(image_digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, payload)
        return len(payload)

    def entry_bytes(self, dtype: torch.dtype, tiles: int = 1) -> int:
        """Bytes of one entry on disk (the tensor plus a generous header), for the size checks."""
        import torch

        itemsize = torch.empty((), dtype=self.store_dtype or dtype).element_size()
        tokens, hidden = self.feature_shape
        return tiles * tokens * hidden * itemsize + 512


def _tree_size(path: Path) -> tuple[int, int, int]:
    """``(entries, bytes, leftover temporaries)`` under ``path``."""
    entries = size = partial = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                size += os.stat(os.path.join(folder, name)).st_size
            if name.endswith(ENTRY_SUFFIX) and not name.startswith("."):
                entries += 1
            elif ".part-" in name:
                partial += 1
    return entries, size, partial


def _towers(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The fingerprint folders zoo wrote under ``root`` (a ``tower.json`` of this format), with it."""
    found: list[tuple[Path, dict[str, Any]]] = []
    if not root.is_dir():
        return found
    for child in sorted(root.iterdir()):
        info = child / TOWER_FILE
        if child.is_symlink() or not child.is_dir() or not info.is_file():
            continue
        try:
            data = json.loads(info.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("format") == FORMAT and data.get("fingerprint") == child.name:
            found.append((child, data))
    return found


def cache_info(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """What the cache holds: per tower fingerprint its name, entries and bytes; the total."""
    root = Path(root) if root is not None else default_cache_dir()
    towers = []
    for folder, data in _towers(root):
        entries, size, partial = _tree_size(folder)
        towers.append({"fingerprint": folder.name, "name": data.get("name"), "select_layer":
                       (data.get("contract") or {}).get("select_layer"), "device": data.get("device"),
                       "entries": entries, "bytes": size, "partial_files": partial,
                       "created": data.get("created")})  # fmt: skip
    return {"directory": str(root), "towers": towers, "entries": sum(t["entries"] for t in towers),
            "bytes": sum(t["bytes"] for t in towers)}  # fmt: skip


def clear_cache(root: str | os.PathLike | None = None, fingerprints: Iterable[str] = ()) -> dict[str, Any]:
    """Remove the tower folders zoo wrote under ``root`` (all, or those whose fingerprint starts with one
    of ``fingerprints``); anything else in the folder is left alone. Returns what was removed."""
    root = Path(root) if root is not None else default_cache_dir()
    wanted = [f for f in fingerprints if f]
    towers = _towers(root)
    if wanted:
        unknown = [f for f in wanted if not any(folder.name.startswith(f) for folder, _ in towers)]
        if unknown:
            known = ", ".join(folder.name[:12] for folder, _ in towers) or "none"
            raise ZooError(f"zoo cache clear: no cached tower with fingerprint {unknown[0]!r} in {str(root)!r} "
                           f"(cached: {known}; see 'zoo cache info')")  # fmt: skip
        towers = [(folder, data) for folder, data in towers if any(folder.name.startswith(f) for f in wanted)]
    removed_bytes = removed_entries = 0
    for folder, _ in towers:
        entries, size, _ = _tree_size(folder)
        shutil.rmtree(folder)
        removed_bytes += size
        removed_entries += entries
    return {"directory": str(root), "towers": len(towers), "entries": removed_entries, "bytes": removed_bytes}


def used_bytes(root: str | os.PathLike) -> int:
    """Bytes the cache folder holds now (every tower)."""
    return sum(_tree_size(folder)[1] for folder, _ in _towers(Path(root)))
