"""Building blocks for transformers-backed components: the same ones zoo's built-in plugins use.

A plugin author registers a transformers causal LM or vision tower with the helpers here instead of
re-implementing them (see README, "Write a plugin"):

- :func:`make_hf_config` / :func:`check_arch_fields`: a transformers config from ``arch`` overrides,
  every unknown key named with a did-you-mean (transformers itself would store a typo as an attribute
  and ignore it) and every value the library rejects turned into a ``ConfigError`` naming the YAML key.
- :class:`Family` + :func:`lm_spec`: a causal-LM preset (random init from ``arch``, or a local
  ``checkpoint`` directory; ``meta``-aware; LoRA targets and decoder-layer class) built by
  :func:`build_language_model` (:mod:`zoo.sdk.hf_lm`), the factory of every built-in LM.
- :func:`hf_tower_factory`: a spec factory for a :class:`zoo.sdk.hf_vision.HFVisionTower` subclass (the
  base of the built-in CLIP, SigLIP and DINOv2 towers), imported on first build.
- :func:`tiny_tokenizer_path` and ``TINY_*``: the tokenizer shipped for ``tiny-*`` LMs; an LM preset
  whose name starts with ``tiny-`` gets it when it has neither checkpoint nor tokenizer.
- :func:`loading_problems`: missing / mis-shaped weights of a ``from_pretrained`` call.
- :func:`checkpoint_directory`: a ``checkpoint:`` value checked as a local ``save_pretrained`` directory.

This module imports neither torch nor transformers (registering a plugin stays instant, so ``zoo list``
stays fast); the builders are imported on first use.

Example (an LM plugin module; nothing heavy is imported until a model is built)::

    import zoo
    from zoo.sdk import LLAMA_LORA_TARGETS, Family, lm_spec

    GEMMA = Family("GemmaConfig", ("gemma",), LLAMA_LORA_TARGETS, "GemmaDecoderLayer")

    @zoo.hookimpl
    def zoo_register_language_models(register):
        register(lm_spec("gemma-2b", GEMMA, {"hidden_size": 2048, ...}, "Gemma-2B"))
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from zoo.sdk.hf_config import (
    GENERIC,
    LLAMA_LORA_TARGETS,
    TINY_EOS_ID,
    TINY_PAD_ID,
    TINY_VOCAB_SIZE,
    Family,
    check_arch_fields,
    checkpoint_directory,
    describe_rejection,
    known_fields,
    lm_directories,
    loading_problems,
    make_hf_config,
    tiny_tokenizer_path,
)
from zoo.sdk.specs import LanguageModelConfig, LanguageModelSpec

if TYPE_CHECKING:  # resolved on first access (module ``__getattr__``); they import torch
    from zoo.sdk.hf_lm import build_language_model, infer_lora_targets
    from zoo.sdk.hf_vision import HFVisionTower, build_tower
    from zoo.sdk.interfaces import LanguageModel, VisionTower

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
    "lm_directories",
    "lm_spec",
    "loading_problems",
    "make_hf_config",
    "tiny_tokenizer_path",
]

_LAZY = {
    "build_language_model": "zoo.sdk.hf_lm",
    "infer_lora_targets": "zoo.sdk.hf_lm",
    "HFVisionTower": "zoo.sdk.hf_vision",
    "build_tower": "zoo.sdk.hf_vision",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    from zoo.sdk.hf_lm import build_language_model

    return build_language_model(config, name=name, family=family, requires_checkpoint=requires_checkpoint)


# -- vision towers --------------------------------------------------------------------------------------
def hf_tower_factory(tower: str, arch: Mapping[str, Any]) -> Callable[[Any], VisionTower]:
    """A spec factory for a transformers tower preset; the tower's module is imported on first build.

    Args:
        tower: ``"package.module:ClassName"`` of a :class:`zoo.sdk.hf_vision.HFVisionTower` subclass.
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
    from zoo.sdk.hf_vision import build_tower

    return build_tower(getattr(importlib.import_module(module), cls), arch, config)
