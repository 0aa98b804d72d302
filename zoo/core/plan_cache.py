"""A small on-disk cache of what planning on ``meta`` found, so that checking again needs no model library.

``zoo validate`` and ``zoo show`` build components on the ``meta`` device to check and report their
contract; that costs the import of torch and of the transformers model code (seconds of CPU) even
for a tiny composition. The outcome (a few numbers, or the error) depends only on the configuration,
zoo's own code and the installed libraries, so it is stored under a key made of all three:

- the configuration as data (``ModelConfig.to_dict()`` and its source, or the component's name and
  dimensions), the working directory, and a listing of every local file or folder it names
  (checkpoints, tokenizers: each file's size, mtime and, up to 256 KiB, sha256);
- the same listing of every file of the ``zoo`` and ``zoo_plugins`` packages (tiny tokenizers
  included), the Python version and the versions of torch, transformers, tokenizers, timm,
  open_clip, peft, safetensors and pluggy.

Only outcomes that involve built-in components alone are stored: a third-party plugin's code is not
fingerprinted, so its components are planned (and verified on ``meta``) every time. Errors are
stored as their zoo error type, message and key path, and raised again on a hit.

The cache lives in ``$ZOO_CACHE_DIR`` (default ``$XDG_CACHE_HOME/zoo`` or ``~/.cache/zoo``), under
``plans/``, one small JSON file per entry, written atomically; ``ZOO_NO_CACHE=1`` turns it off. A
file that cannot be read or written is ignored (the plan runs as if there were no cache).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import CheckpointError, ConfigError, ContractError, UnknownNameError, ZooError

if TYPE_CHECKING:
    from zoo.core.config import ModelConfig

__all__ = ["CACHE_FORMAT", "cache_dir", "cached", "cached_composition", "code_listing", "fingerprint", "is_builtin"]

CACHE_FORMAT = 1
MAX_ENTRY_BYTES = 1 << 20
HASHED_FILE_BYTES = 256 * 1024  # code, configs and small tokenizer files are hashed; weights are not
_LIBRARIES = ("torch", "transformers", "tokenizers", "timm", "open_clip_torch", "peft", "safetensors", "pluggy")


def _error_types() -> dict[str, type[ZooError]]:
    from zoo.sdk.limits import InputLimitError

    types: list[type[ZooError]] = [ConfigError, ContractError, UnknownNameError, CheckpointError, InputLimitError]
    return {t.__name__: t for t in types}


def cache_dir() -> Path | None:
    """Where entries live, or ``None`` when ``ZOO_NO_CACHE`` is set."""
    if os.environ.get("ZOO_NO_CACHE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return None
    root = os.environ.get("ZOO_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "zoo"
    )
    return Path(root) / "plans"


def is_builtin(plugin: str) -> bool:
    """Whether a spec's plugin is one of zoo's built-ins (whose code :func:`fingerprint` covers)."""
    from zoo.core.plugin_manager import BUILTIN_PLUGINS

    return plugin in BUILTIN_PLUGINS


@functools.lru_cache(maxsize=1)
def fingerprint() -> str:
    """A digest of zoo's own files (and built-in plugins'), the Python version and the model libraries' versions."""
    import importlib.metadata

    roots = [Path(__file__).resolve().parent.parent]  # the whole zoo package
    plugins = sys.modules.get("zoo_plugins")
    roots += [Path(p).resolve() for p in getattr(plugins, "__path__", ())]
    files = code_listing(roots)
    versions: dict[str, str | None] = {}
    for library in _LIBRARIES:
        try:
            versions[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            versions[library] = None
    data = {"format": CACHE_FORMAT, "python": sys.version, "files": files, "libraries": versions}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def code_listing(roots: list[Path]) -> list[list[Any]]:
    """Every file under ``roots`` (``__pycache__`` left out), each as :func:`_stat` lists it, in a fixed order."""
    files = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            files += [_stat(Path(dirpath) / name) for name in sorted(filenames)]
    return files


def _stat(path: Path) -> list[Any]:
    """``[path, size, mtime, digest]``: small files by content too (a same-size edit within a coarse mtime
    tick must still count), large ones (weights) by size and mtime only."""
    try:
        info = path.stat()
        digest = None
        if path.is_file() and info.st_size <= HASHED_FILE_BYTES:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except (OSError, ValueError):
        return [str(path), None]
    return [str(path), info.st_size, info.st_mtime_ns, digest]


def _paths_in(value: Any, found: list[Any], depth: int = 0) -> None:
    """Size/mtime listings of every existing local path named in ``value`` (a folder: its entries too)."""
    if depth > 8:
        return
    if isinstance(value, Mapping):
        for item in value.values():
            _paths_in(item, found, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _paths_in(item, found, depth + 1)
    elif isinstance(value, str) and 0 < len(value) < 4096 and ("/" in value or os.sep in value or "." in value):
        path = Path(value).expanduser()
        try:
            if not path.exists():
                return
            found.append(_stat(path))
            if path.is_dir():
                found += [_stat(child) for child in sorted(path.iterdir())[:1000]]
        except (OSError, ValueError):
            return


def _key(kind: str, payload: Mapping[str, Any]) -> str:
    paths: list[Any] = []
    _paths_in(payload, paths)
    data = {"kind": kind, "payload": payload, "paths": paths, "code": fingerprint(), "cwd": os.getcwd()}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode()).hexdigest()


def cached(
    kind: str, payload: Mapping[str, Any], compute: Callable[[], dict[str, Any]], *, store: bool
) -> dict[str, Any]:
    """``compute()``, or what it returned (or raised) before for the same ``payload``, code and libraries.

    Args:
        kind: the family of entries (``plan``, ``component``).
        payload: everything besides zoo's code that ``compute`` depends on (plain data).
        compute: returns JSON-able data, or raises a ``ZooError``; what it returns comes back as JSON
            reads it (tuples as lists), hit or miss.
        store: whether this outcome may be cached at all (``False`` for third-party components).
    """
    folder = cache_dir()
    if not store or folder is None:
        return _plain(compute())
    key = _key(kind, payload)
    entry = _read(folder / f"{key}.json")
    if entry is not None:
        if "error" in entry:
            error = entry["error"]
            raise _error_types()[error["type"]](error["message"], key=error["key"])
        return entry["value"]
    try:
        value = _plain(compute())
    except ZooError as error:
        if type(error).__name__ in _error_types() and type(error) is _error_types()[type(error).__name__]:
            _write(folder, key, {"error": {"type": type(error).__name__, "message": str(error), "key": error.key}})
        raise
    _write(folder, key, {"value": value})
    return value


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as JSON gives it back (tuples become lists), so a hit and a miss print the same."""
    return json.loads(json.dumps(value, default=str))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_ENTRY_BYTES + 1)
        entry = json.loads(data) if len(data) <= MAX_ENTRY_BYTES else None
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
        return None
    error = entry.get("error")
    if isinstance(error, dict):
        ok = error.get("type") in _error_types() and isinstance(error.get("message"), str)
        ok = ok and (error.get("key") is None or isinstance(error.get("key"), str))
        return entry if ok else None
    return entry if isinstance(entry.get("value"), dict) else None


def _write(folder: Path, key: str, entry: dict[str, Any]) -> None:
    try:
        text = json.dumps({"format": CACHE_FORMAT, **entry}, default=str)
    except (TypeError, ValueError):
        return
    if len(text) > MAX_ENTRY_BYTES:
        return
    temporary = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, prefix=f".{key}.", suffix=".tmp", delete=False) as handle:
            temporary = handle.name
            handle.write(text)
        os.replace(temporary, folder / f"{key}.json")
    except OSError:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def cached_composition(
    kind: str, config: ModelConfig, plugins: Sequence[str], compute: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """:func:`cached` for a result about ``config`` (with ``plugins`` besides its own): stored only when every
    component comes from a built-in plugin, whose code :func:`fingerprint` covers."""
    from zoo.core.registry import get_registry
    from zoo.sdk.specs import SLOTS

    registry = get_registry((*config.plugins, *plugins))
    builtin = all(is_builtin(registry.resolve(slot, config.slot(slot).name)[0].plugin) for slot in SLOTS)
    payload = {"config": config.to_dict(), "source": config.source, "plugins": sorted(plugins)}
    return cached(kind, payload, compute, store=builtin)
