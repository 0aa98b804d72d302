"""The checkpoint wing: zoo's own checkpoint format, read and written.

``loading`` (``zoo.load``), ``saving`` (``zoo.save``), ``snapshot`` (one consistent view of a directory
being read), ``manifest``, ``state_dict`` (canonical names), ``kinds`` (what a directory is: zoo, Llava,
VLM-learning), ``atomic`` (whole-or-nothing writes) and ``claim`` (output directories zoo owns). It imports
``zoo.sdk`` and ``zoo.core``.

The names the flat ``zoo.checkpoint`` module exported until 0.1.0 still resolve here, with a
``DeprecationWarning`` naming where each lives now, until 0.2.0 (``zoo.load`` / ``zoo.save`` for the two most
used).
"""

from __future__ import annotations

from typing import Any

from zoo.sdk.deprecation import Renamed, deprecated_attribute

__all__: list[str] = []

# the public names of the flat zoo.checkpoint module of 0.1.0 -> the module that holds each now
_HOMES = {
    "zoo.checkpoint.loading": ("RECORDED", "load", "load_weights", "read_manifest"),
    "zoo.checkpoint.manifest": ("ADAPTER_DIR", "FORMAT", "FORMAT_VERSION", "MANIFEST", "TOKENIZER_DIR"),
    "zoo.checkpoint.saving": ("PATH_OPTIONS", "save"),
    "zoo.checkpoint.snapshot": ("Snapshot", "check_snapshot", "verify"),
    "zoo.checkpoint.state_dict": ("canonical_name", "canonical_state", "is_lora_key", "load_state_into"),
    "zoo.core.prompt": ("end_token_from_record", "system_prompt_from_record"),
    "zoo.sdk.specs": ("SLOTS",),
}  # fmt: skip
_DEPRECATED: dict[str, Renamed] = {name: (home, name, "0.1.0") for home, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    return deprecated_attribute(__name__, name, _DEPRECATED)
