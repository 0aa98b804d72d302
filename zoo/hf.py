"""transformers helpers shared by the vision towers and the LMs: configs from ``arch``, loading reports.

transformers config classes accept any keyword (an unknown one silently becomes an attribute) and validate
values with huggingface_hub strict dataclasses, whose errors derive from ``Exception`` only:
:func:`make_hf_config` turns both into a ConfigError that names the YAML key, the bad value and the
library's reason. ``from_pretrained`` only logs missing or mis-shaped weights (and initialises them at
random): :func:`loading_problems` words its ``output_loading_info`` for a CheckpointError.

Private module: imports neither torch nor transformers (the caller passes the config class).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from zoo.errors import ConfigError, suggest

__all__ = ["check_arch_fields", "describe_rejection", "known_fields", "loading_problems", "make_hf_config"]

# accepted by every config that has ``rope_parameters`` and moved into it (RotaryEmbeddingConfigMixin)
_LEGACY_ROPE_KEYS = ("rope_theta", "rope_scaling", "partial_rotary_factor")
_FIELD = re.compile(r"field '(\w+)'")


def known_fields(config_cls: type) -> set[str]:
    """Keywords ``config_cls`` understands: its fields, its ``attribute_map`` aliases, legacy RoPE keys."""
    known = set(config_cls().to_dict()) | set(getattr(config_cls, "attribute_map", None) or {})
    if "rope_parameters" in known:
        known.update(_LEGACY_ROPE_KEYS)
    return known


def check_arch_fields(config_cls: type, arch: Mapping[str, Any], key: str) -> None:
    """A ConfigError with a ``did you mean`` for the first key of ``arch`` that ``config_cls`` does not know."""
    known = known_fields(config_cls)
    for field in arch:
        if field not in known:
            raise ConfigError(f"{key}.{field} is not a field of {config_cls.__name__}; {suggest(field, known)}")


def make_hf_config(config_cls: type, arch: Mapping[str, Any], key: str) -> Any:
    """``config_cls(**arch)`` after :func:`check_arch_fields`; a value the library rejects is a ConfigError."""
    from huggingface_hub.errors import StrictDataclassError

    check_arch_fields(config_cls, arch, key)
    try:
        return config_cls(**arch)
    except (StrictDataclassError, TypeError, ValueError) as error:
        raise ConfigError(f"{describe_rejection(error, arch, key)} (rejected by {config_cls.__name__})") from error


def describe_rejection(error: Exception, arch: Mapping[str, Any], key: str) -> str:
    """``<key>.<field> = <value>: <reason>`` when the error names a field of ``arch``, else ``<key>: <reason>``."""
    cause = error.__cause__ or error
    reason = f"{type(cause).__name__}: {cause}"
    match = _FIELD.search(str(error))
    if match and match.group(1) in arch:
        return f"{key}.{match.group(1)} = {arch[match.group(1)]!r}: {reason}"
    return f"{key}: {reason}"


def loading_problems(info: Mapping[str, Any], limit: int = 4) -> str | None:
    """Missing and mis-shaped weights of ``from_pretrained(..., output_loading_info=True)``; ``None``: none.

    Needs ``ignore_mismatched_sizes=True`` for mis-shaped ones to be reported rather than raised. Tied
    weights (an LM head tied to the embeddings) are not missing in transformers' report.
    """
    missing = sorted(str(k) for k in info.get("missing_keys") or ())
    mismatched = sorted(
        f"{k} (checkpoint {list(saved)}, model {list(wanted)})"
        for k, saved, wanted in info.get("mismatched_keys") or ()
    )
    parts = [f"{what} {_few(keys, limit)}" for what, keys in
             (("weights missing for", missing), ("weights of the wrong shape for", mismatched)) if keys]  # fmt: skip
    return "; ".join(parts) or None


def _few(keys: Iterable[str], limit: int) -> str:
    keys = list(keys)
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
