"""The checkpoint wing: zoo's own checkpoint format, read and written.

``loading`` (``zoo.load``), ``saving`` (``zoo.save``), ``snapshot`` (one consistent view of a directory
being read), ``manifest``, ``state_dict`` (canonical names), ``kinds`` (what a directory is: zoo, Llava,
VLM-learning), ``atomic`` (whole-or-nothing writes) and ``claim`` (output directories zoo owns). It imports
``zoo.sdk`` and ``zoo.core``.

The names the flat ``zoo.checkpoint`` module exported until 0.1.0 still resolve here, with a
``DeprecationWarning``, until 0.2.0: use ``zoo.load`` / ``zoo.save`` or ``zoo.checkpoint.loading``.
"""

from __future__ import annotations

from typing import Any

from zoo.sdk.deprecation import Renamed, deprecated_attribute

__all__: list[str] = []

_OLD_NAMES = (
    "ADAPTER_DIR", "FORMAT", "FORMAT_VERSION", "MANIFEST", "TOKENIZER_DIR", "canonical_name", "canonical_state",
    "is_lora_key", "load", "load_state_into", "save",
)  # fmt: skip
_DEPRECATED: dict[str, Renamed] = {name: ("zoo.checkpoint.loading", name, "0.1.0") for name in _OLD_NAMES}


def __getattr__(name: str) -> Any:
    return deprecated_attribute(__name__, name, _DEPRECATED)
