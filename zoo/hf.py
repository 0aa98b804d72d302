"""Building blocks for transformers-backed components: the same ones zoo's built-in plugins use.

A plugin author registers a transformers causal LM or vision tower with the helpers here instead of
re-implementing them (see README, "Write a plugin"):

- :func:`make_hf_config` / :func:`check_arch_fields`: a transformers config from ``arch`` overrides,
  every unknown key named with a did-you-mean (transformers itself would store a typo as an attribute
  and ignore it) and every value the library rejects turned into a ``ConfigError`` naming the YAML key.
- :class:`Family` + :func:`lm_spec`: a causal-LM preset (random init from ``arch``, or a local
  ``checkpoint`` directory; ``meta``-aware; LoRA targets and decoder-layer class) built by
  :func:`build_language_model` (:mod:`zoo.hf_lm`), the factory of every built-in LM.
- :func:`hf_tower_factory`: a spec factory for a :class:`zoo.hf_vision.HFVisionTower` subclass (the
  base of the built-in CLIP, SigLIP and DINOv2 towers), imported on first build.
- :func:`tiny_tokenizer_path` and ``TINY_*``: the tokenizer shipped for ``tiny-*`` LMs; an LM preset
  whose name starts with ``tiny-`` gets it when it has neither checkpoint nor tokenizer.
- :func:`loading_problems`: missing / mis-shaped weights of a ``from_pretrained`` call.
- :func:`checkpoint_directory`: a ``checkpoint:`` value checked as a local ``save_pretrained`` directory.

This module imports neither torch nor transformers (registering a plugin stays instant, so ``zoo list``
stays fast); the builders are imported on first use.

Example (an LM plugin module; nothing heavy is imported until a model is built)::

    import zoo
    from zoo.hf import LLAMA_LORA_TARGETS, Family, lm_spec

    GEMMA = Family("GemmaConfig", ("gemma",), LLAMA_LORA_TARGETS, "GemmaDecoderLayer")

    @zoo.hookimpl
    def zoo_register_language_models(register):
        register(lm_spec("gemma-2b", GEMMA, {"hidden_size": 2048, ...}, "Gemma-2B"))
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import CheckpointError, ConfigError, suggest
from zoo.limits import check_arch_sizes
from zoo.specs import LanguageModelConfig, LanguageModelSpec

if TYPE_CHECKING:  # resolved on first access (module ``__getattr__``); they import torch
    from zoo.hf_lm import build_language_model, infer_lora_targets
    from zoo.hf_vision import HFVisionTower, build_tower
    from zoo.interfaces import LanguageModel, VisionTower

__all__ = [
    "GENERIC",
    "LLAMA_LORA_TARGETS",
    "TINY_EOS_ID",
    "TINY_PAD_ID",
    "TINY_VOCAB_SIZE",
    "Family",
    "HFVisionTower",
    "build_language_model",
    "build_tower",
    "check_arch_fields",
    "checkpoint_directory",
    "describe_rejection",
    "hf_tower_factory",
    "infer_lora_targets",
    "known_fields",
    "lm_spec",
    "loading_problems",
    "make_hf_config",
    "tiny_tokenizer_path",
]

_LAZY = {
    "build_language_model": "zoo.hf_lm",
    "infer_lora_targets": "zoo.hf_lm",
    "HFVisionTower": "zoo.hf_vision",
    "build_tower": "zoo.hf_vision",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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

    Sizes are bounded (:func:`zoo.limits.check_arch_sizes`) before the config is constructed (a million
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
    parts = [f"{what} {_few(keys, limit)}" for what, keys in
             (("weights missing for", missing), ("weights of the wrong shape for", mismatched)) if keys]  # fmt: skip
    return "; ".join(parts) or None


def _few(keys: Iterable[str], limit: int) -> str:
    keys = list(keys)
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


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
    """An LM's ``checkpoint`` and ``tokenizer`` directories, each read confined (:func:`zoo.foreign.confined_directory`:
    nothing outside them, no link out): staging paths valid until ``stack`` closes; ``None`` where not set."""
    from zoo.foreign import confined_directory

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


def lm_spec(
    name: str, family: Family, arch: dict[str, Any] | None, description: str, *, requires_checkpoint: bool = False
) -> LanguageModelSpec:
    """A ``LanguageModelSpec`` whose factory is :func:`build_language_model` for this preset.

    Args:
        name: the registered name; ``tiny-*`` names get the shipped tiny tokenizer when they have no other.
        family: the family (config class, checkpoint model types, LoRA targets, decoder layer).
        arch: the preset's config fields; a user's ``model.lm.arch`` overrides them key by key, and every
            key (preset or user) is checked against ``family.config_class`` with a did-you-mean.
        description: one line for ``zoo list``.
        requires_checkpoint: refuse to build without ``model.lm.checkpoint``.

    Example:
        >>> lm_spec("tiny-gemma", GEMMA, {"hidden_size": 64, "head_dim": 32}, "tiny random Gemma")
    """
    factory = functools.partial(_build_lm, name=name, family=family, requires_checkpoint=requires_checkpoint)
    defaults = {"arch": dict(arch)} if arch else {}
    return LanguageModelSpec(
        name=name, factory=factory, defaults=defaults, description=description, source="transformers"
    )


def _build_lm(
    config: LanguageModelConfig, *, name: str, family: Family, requires_checkpoint: bool = False
) -> LanguageModel:
    from zoo.hf_lm import build_language_model

    return build_language_model(config, name=name, family=family, requires_checkpoint=requires_checkpoint)


# -- vision towers --------------------------------------------------------------------------------------
def hf_tower_factory(tower: str, arch: Mapping[str, Any]) -> Callable[[Any], VisionTower]:
    """A spec factory for a transformers tower preset; the tower's module is imported on first build.

    Args:
        tower: ``"package.module:ClassName"`` of a :class:`zoo.hf_vision.HFVisionTower` subclass.
        arch: the preset's architecture (a transformers vision config as a dict, plus ``model_type``);
            the user's ``model.vision.arch`` keys override it, checked with a did-you-mean.

    Example:
        >>> VisionTowerSpec(name="tiny-clip", factory=hf_tower_factory("zoo_plugins._clip_tower:CLIPTower", arch))
    """
    module, _, cls = tower.partition(":")
    if not module or not cls:
        raise ValueError(f"tower = {tower!r}: expected 'package.module:ClassName'")
    return functools.partial(_build_hf_tower, module, cls, dict(arch))


def _build_hf_tower(module: str, cls: str, arch: dict[str, Any], config: Any) -> VisionTower:
    from zoo.hf_vision import build_tower

    return build_tower(getattr(importlib.import_module(module), cls), arch, config)
