"""The ground floor of zoo's transformers helpers: torch-free pieces that ``zoo.sdk.hf`` (the face plugins
use) and the builders behind it (``zoo.sdk.hf_lm``, ``zoo.sdk.hf_vision``) share, so the builders never import
the face they are lazily imported by.

Configs from ``arch`` overrides (:func:`make_hf_config`, :func:`check_arch_fields`), the ``Family`` of a
causal LM, local checkpoint directories (:func:`checkpoint_directory`, :func:`lm_directories`), the tiny
tokenizer and :func:`loading_problems`. Re-exported by :mod:`zoo.sdk.hf` and :mod:`zoo.sdk`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError, ConfigError, few, suggest
from zoo.sdk.limits import check_arch_sizes
from zoo.sdk.specs import LanguageModelConfig

__all__ = [
    "GENERIC",
    "LLAMA_LORA_TARGETS",
    "TINY_EOS_ID",
    "TINY_PAD_ID",
    "TINY_VOCAB_SIZE",
    "Family",
    "check_arch_fields",
    "checkpoint_directory",
    "describe_rejection",
    "known_fields",
    "lm_directories",
    "loading_problems",
    "make_hf_config",
    "tiny_tokenizer_path",
]


# the tokenizer shipped for tiny-* LMs: 1024 tokens, <|endoftext|> (padding) 1021, <|im_end|> (end) 1023
TINY_VOCAB_SIZE = 1024
TINY_PAD_ID = 1021
TINY_EOS_ID = 1023
LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

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
    """``config_cls(**arch)`` after :func:`check_arch_fields`; a value the library rejects is a ConfigError.

    Sizes are bounded (:func:`zoo.sdk.limits.check_arch_sizes`) before the config is constructed (a million
    layers takes transformers seconds to configure, minutes to build) and again on the result, whose
    library defaults fill what ``arch`` leaves out; heads that do not divide the width are refused here.
    """
    from huggingface_hub.errors import StrictDataclassError

    check_arch_fields(config_cls, arch, key)
    check_arch_sizes(dict(arch), key)
    try:
        config = config_cls(**arch)
    except (StrictDataclassError, TypeError, ValueError) as error:
        raise ConfigError(f"{describe_rejection(error, arch, key)} (rejected by {config_cls.__name__})") from error
    check_arch_sizes(config, key)
    return config


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
    parts = [f"{what} {few(keys, limit)}" for what, keys in
             (("weights missing for", missing), ("weights of the wrong shape for", mismatched)) if keys]  # fmt: skip
    return "; ".join(parts) or None


def checkpoint_directory(path: str, key: str, *, example: str = "<repo>", layout: str = "a save_pretrained") -> Path:
    """``path`` as a local checkpoint directory holding ``config.json``, or a ``CheckpointError`` naming ``key``.

    zoo never downloads weights: a missing directory's error says how to fetch one (``example``: the hub
    repository to name); ``layout`` names what the directory should be (``"a Qwen-1"``).
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise CheckpointError(
            f"{key} = {path!r}: no such directory; zoo never downloads weights: fetch them yourself "
            f"(e.g. 'huggingface-cli download {example} --local-dir DIR') and set {key} to that directory"
        )
    if not os.path.lexists(directory / "config.json"):  # not followed: the directory is read confined
        raise CheckpointError(f"{key} = {path!r}: no config.json there (expected {layout} directory)")
    return directory


def lm_directories(
    config: LanguageModelConfig,
    stack: contextlib.ExitStack,
    *,
    key: str = "model.lm",
    example: str = "<repo>",
    layout: str = "a save_pretrained",
) -> tuple[Path | None, Path | None]:
    """An LM's ``checkpoint`` and ``tokenizer`` directories, each read confined (:func:`zoo.sdk.foreign.confined_directory`:
    nothing outside them, no link out): staging paths valid until ``stack`` closes; ``None`` where not set."""
    from zoo.sdk.foreign import confined_directory

    checkpoint = tokenizer = None
    if config.checkpoint is not None:
        found = checkpoint_directory(config.checkpoint, f"{key}.checkpoint", example=example, layout=layout)
        checkpoint = stack.enter_context(confined_directory(found, what=f"{key}.checkpoint = {config.checkpoint!r}"))
    if config.tokenizer is not None:
        source = Path(config.tokenizer).expanduser()
        if not source.is_dir():
            raise CheckpointError(f"{key}.tokenizer = {config.tokenizer!r}: no such directory")
        tokenizer = stack.enter_context(confined_directory(source, what=f"{key}.tokenizer = {config.tokenizer!r}"))
    return checkpoint, tokenizer


def tiny_tokenizer_path() -> Path:
    """Directory of the tokenizer shipped for the ``tiny-*`` LMs (``AutoTokenizer.from_pretrained`` reads it)."""
    return Path(str(files("zoo.assets").joinpath("tiny_tokenizer")))


# -- language models ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """What a causal-LM family declares; class names are strings so that registering imports no model library.

    Attributes:
        config_class: transformers config class for random init (``"Qwen2Config"``); ``""``: checkpoint only.
        model_types: ``model_type`` values a checkpoint of this family may have (empty: any).
        lora_targets: default LoRA module names (``None``: every ``nn.Linear`` inside a decoder layer).
        decoder_layer: decoder block class name (``None``: the model's ``_no_split_modules``).
    """

    config_class: str = ""
    model_types: tuple[str, ...] = ()
    lora_targets: tuple[str, ...] | None = None
    decoder_layer: str | None = None


GENERIC = Family()
