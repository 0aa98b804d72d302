"""Weight-file helpers shared by plugins: safe loading, path checks, meta-build detection.

Weights are read from safetensors; a legacy ``.bin`` / ``.pt`` / ``.pth`` file is read only with
``torch.load(..., weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from zoo.errors import CheckpointError

__all__ = [
    "building_on_meta",
    "describe_load_error",
    "hub_offline",
    "load_state_dict_file",
    "os_error_of",
    "parse_device",
    "require_path",
    "torch_dtype_of",
    "weights_assigned_later",
]

SAFE_SUFFIXES = (".safetensors",)
LEGACY_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


_ASSIGNED_LATER: contextvars.ContextVar[bool] = contextvars.ContextVar("zoo_weights_assigned_later", default=False)
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def os_error_of(error: BaseException, path: str | os.PathLike | None = None) -> OSError | None:
    """The ``OSError`` a Rust library (safetensors, tokenizers) reported inside its own exception type.

    ``SafetensorError: Error while serializing: I/O error: No space left on device (os error 28)`` is a
    full disk, not a bug: as an ``OSError`` it is reported like any other file-system error (one line).

    Example:
        >>> os_error_of(RuntimeError("I/O error: File too large (os error 27)")).strerror
        'File too large'
    """
    if isinstance(error, OSError):
        return error
    found = _OS_ERROR.search(str(error))
    if found is None:
        return None
    number = int(found.group(1))
    return OSError(number, os.strerror(number), None if path is None else str(path))


def describe_load_error(error: BaseException) -> str:
    """One short line for an exception a library raised while reading weights or a config of others.

    A pickle that ``weights_only=True`` refused says so in zoo's words (torch's message suggests loading
    it unsafely); anything else is ``Type: message`` with the message cut to 300 characters.

    Example:
        >>> describe_load_error(ValueError("bad header"))
        'ValueError: bad header'
    """
    text = " ".join(str(error).split())
    if type(error).__name__ == "UnpicklingError":
        found = re.search(r"unsupported GLOBAL [\w.]+|Unsupported global: [^ ]+|[\w.]+ was not an allowed global", text)
        what = f" ({found.group(0)})" if found else ""
        return (
            f"it holds pickled objects other than tensors{what}; zoo reads .bin / .pt files only with "
            "torch.load(weights_only=True) and never unpickles code: convert it to safetensors where you trust it"
        )
    return f"{type(error).__name__}: {text if len(text) <= 300 else text[:297] + '...'}"


def building_on_meta() -> bool:
    """True while the builder constructs on the ``meta`` device, or with weights the caller assigns right
    after (:func:`weights_assigned_later`): factories must read no weight file, only configs."""
    return _ASSIGNED_LATER.get() or torch.get_default_device().type == "meta"


@contextlib.contextmanager
def weights_assigned_later() -> Iterator[None]:
    """Build components whose every weight the caller assigns afterwards (a self-contained checkpoint holds
    them): :func:`building_on_meta` is true inside, so a factory reads its checkpoint's configs, never its
    weight files (the checkpoint directory may hold no weights at all)."""
    token = _ASSIGNED_LATER.set(True)
    try:
        yield
    finally:
        _ASSIGNED_LATER.reset(token)


def hub_offline(offline: bool) -> bool:
    """True when no model hub may be reached (config ``offline`` or ``HF_HUB_OFFLINE=1``)."""
    return offline or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def require_path(path: str | os.PathLike, key: str, *, kind: str = "file or directory") -> Path:
    """``Path(path)`` if it exists, else a CheckpointError naming the path and the YAML key."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise CheckpointError(f"{key} = {str(path)!r}: no such {kind}")
    return resolved


def load_state_dict_file(path: str | os.PathLike, key: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors, or from a legacy torch file with ``weights_only=True``.

    Any failure to read the file (missing, truncated, corrupt, unknown format) is a CheckpointError naming
    ``key`` and the path.
    """
    file = require_path(path, key, kind="file")
    if file.suffix in SAFE_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(file))
        except Exception as error:  # SafetensorError (a plain Exception), OSError...
            raise CheckpointError(
                f"{key} = {str(path)!r}: cannot read it as safetensors: {describe_load_error(error)}"
            ) from error
    if file.suffix in LEGACY_SUFFIXES:
        try:
            data = torch.load(str(file), map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointError(
                f"{key} = {str(path)!r}: cannot read it as plain tensors: {describe_load_error(error)}"
            ) from error
        for wrapper in ("state_dict", "model"):
            if isinstance(data, Mapping) and wrapper in data and isinstance(data[wrapper], Mapping):
                data = data[wrapper]
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{key} = {str(path)!r}: expected a mapping of tensors")
        return dict(data)
    raise CheckpointError(
        f"{key} = {str(path)!r}: unknown weight format {file.suffix!r}; expected .safetensors "
        f"or a legacy {', '.join(LEGACY_SUFFIXES)} file"
    )


def parse_device(value: str | torch.device | None, key: str = "device") -> torch.device:
    """``value`` as a ``torch.device`` that exists on this machine (``None``: cuda if available, else cpu).

    Raises:
        ConfigError: naming ``key`` for a string torch cannot parse, or a GPU this machine does not have.

    Example:
        >>> parse_device("cpu")
        device(type='cpu')
    """
    from zoo.errors import ConfigError
    from zoo.sdk.limits import brief

    if value is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"{key} = {brief(value)} is not a device; expected cpu, cuda, cuda:N or mps (torch device names)"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index is not None and device.index >= count):
            raise ConfigError(f"{key} = {brief(value)}: this machine has {count} CUDA device(s); use cpu")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key} = {brief(value)}: MPS is not available on this machine; use cpu")
    elif device.type == "meta":
        raise ConfigError(f"{key} = 'meta' holds no values; use --meta where a command offers it")
    return device


def torch_dtype_of(name: str | None, default: torch.dtype = torch.float32) -> torch.dtype:
    """``torch.dtype`` for a canonical dtype name (``None`` gives ``default``)."""
    return default if name is None else getattr(torch, name)
