"""Shared metadata of the transformers causal-LM families (Qwen2/2.5/3, MiniCPM3, Llama, any local dir).

A family module declares a :class:`Family` (class names as strings) and registers its presets with
:func:`lm_spec`. Nothing here imports torch or transformers, so registering and listing LMs stays instant:
every spec's factory imports :mod:`._hf_lm_build` (which builds the model) on its first call.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.specs import LanguageModelConfig, LanguageModelSpec

from ._lazy import lazy_attribute

if TYPE_CHECKING:  # annotations, and the names _LAZY resolves at run time (for type checkers)
    from zoo.interfaces import LanguageModel

    from ._hf_lm_build import build_language_model, infer_lora_targets

__all__ = [
    "GENERIC",
    "LLAMA_LORA_TARGETS",
    "Family",
    "build_language_model",
    "infer_lora_targets",
    "lm_spec",
    "tiny_tokenizer_path",
]

# the builder imports torch: resolved on first access (zoo_plugins._hf_lm.build_language_model)
_LAZY = {"build_language_model": "._hf_lm_build", "infer_lora_targets": "._hf_lm_build"}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, name, _LAZY)


LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    """What a family declares; class names are strings so that listing imports no model library.

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
    """A ``LanguageModelSpec`` whose factory builds this preset (see :mod:`._hf_lm_build`)."""
    factory = functools.partial(_build, name=name, family=family, requires_checkpoint=requires_checkpoint)
    defaults = {"arch": dict(arch)} if arch else {}
    return LanguageModelSpec(
        name=name, factory=factory, defaults=defaults, description=description, source="transformers"
    )


def _build(
    config: LanguageModelConfig, *, name: str, family: Family, requires_checkpoint: bool = False
) -> LanguageModel:
    """The factory of every preset; torch and transformers are imported here, on the first build."""
    from ._hf_lm_build import build_language_model

    return build_language_model(config, name=name, family=family, requires_checkpoint=requires_checkpoint)


def tiny_tokenizer_path() -> Path:
    """Directory of the tokenizer shipped for the ``tiny-*`` LMs."""
    return Path(str(files("zoo.assets").joinpath("tiny_tokenizer")))
