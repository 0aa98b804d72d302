"""Registry entries: cheap, frozen metadata for each component, and the typed configs they build from.

A spec names a component, says which library it comes from, and holds a ``factory`` that builds the
module from a validated config dataclass. Nothing here imports a model library: listing is instant.
Heavy imports happen inside factories.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

__all__ = [
    "KINDS",
    "ComponentSpec",
    "LanguageModelConfig",
    "LanguageModelSpec",
    "ProjectorConfig",
    "ProjectorSpec",
    "VisionTowerConfig",
    "VisionTowerSpec",
]

KINDS = ("vision", "projector", "lm")


@dataclass(frozen=True)
class VisionTowerConfig:
    """Options every vision tower accepts; a family may subclass it to add its own.

    Attributes:
        checkpoint: local path of the weights in the backend's own format (``None``: random init).
        select_layer: hidden state to take, Python-indexed over ``[embeddings, layer 1, ..., layer L]``
            (LLaVA uses -2, the penultimate layer).
        select: ``patch`` drops the prefix tokens (CLS, registers) the tower declares; ``all`` keeps them.
        image_size: input resolution override (position embeddings are interpolated).
        dtype: parameter dtype of this tower; ``None`` follows the model's ``dtype``.
        offline: never reach a model hub (the default; ``HF_HUB_OFFLINE=1`` forces it too).
        arch: architecture hyper-parameters of the family (preset values; keys may be overridden).
        model_name: library model name for pass-through towers (``timm:<name>``, ``open_clip:<name>``).
    """

    checkpoint: str | None = None
    select_layer: int = -2
    select: str = "patch"
    image_size: int | None = None
    dtype: str | None = None
    offline: bool = True
    arch: dict[str, Any] = field(default_factory=dict)
    model_name: str | None = None

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"select": ("patch", "all")}


@dataclass(frozen=True)
class ProjectorConfig:
    """Options every projector accepts. ``in_dim`` / ``out_dim`` are inferred from the neighbours.

    Attributes:
        in_dim: feature size of the tower (inferred; if given it must agree).
        out_dim: hidden size of the LM (inferred; if given it must agree).
        depth: number of linear layers (MLP), blocks (Perceiver) or 1.
        num_queries: learned queries of a resampler / latents of a Perceiver.
        num_heads: attention heads (``None``: ``dim // 128``, at least 1).
        factor: pixel-shuffle reduction factor per side.
        dtype: parameter dtype; ``None`` follows the model's ``dtype``.
    """

    in_dim: int | None = None
    out_dim: int | None = None
    depth: int = 2
    num_queries: int = 64
    num_heads: int | None = None
    factor: int = 2
    dtype: str | None = None


@dataclass(frozen=True)
class LanguageModelConfig:
    """Options every language model accepts.

    Attributes:
        checkpoint: local directory in transformers' layout (``save_pretrained``); ``None``: random init.
        tokenizer: tokenizer directory (default: the checkpoint's, or the shipped tiny tokenizer).
        tiny_tokenizer: give a ``tiny-*`` preset without checkpoint or tokenizer the shipped tiny
            tokenizer; ``false`` builds it without one (an import of a weights-only directory).
        dtype: parameter dtype; ``None`` follows the model's ``dtype``.
        trust_remote_code: run modeling code shipped inside the checkpoint (off unless set here).
        offline: never reach a model hub (the default).
        arch: architecture hyper-parameters (a transformers config's fields; preset values).
        lora_targets: module names LoRA adapts (default: the family's).
        attn_implementation: ``eager`` or ``sdpa`` (default: transformers' choice).
    """

    checkpoint: str | None = None
    tokenizer: str | None = None
    tiny_tokenizer: bool = True
    dtype: str | None = None
    trust_remote_code: bool = False
    offline: bool = True
    arch: dict[str, Any] = field(default_factory=dict)
    lora_targets: list[str] | None = None
    attn_implementation: str | None = None

    choices: ClassVar[dict[str, tuple[str, ...]]] = {"attn_implementation": ("eager", "sdpa")}


@dataclass(frozen=True)
class ComponentSpec:
    """One registered component: a name, where it comes from, and how to build it.

    Attributes:
        name: registry name (``clip-vit-l-14-336``); for a pattern spec the display form
            (``timm:<model_name>``).
        factory: ``factory(config) -> module``; builds on the current default device (``meta`` too).
        config_cls: dataclass of accepted options; YAML overrides are checked against its fields.
        defaults: preset values for ``config_cls`` fields.
        description: one line for ``zoo list``.
        source: library the component comes from (``transformers``, ``timm``, ``open_clip``, ``zoo``).
        pattern: optional regex; a name that fully matches builds this spec, with the named groups
            as config values (``r"timm:(?P<model_name>.+)"``).
        plugin: the plugin that registered it (filled in by the registry).
    """

    kind: ClassVar[str] = ""

    name: str
    factory: Callable[[Any], Any]
    config_cls: type = object
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    source: str = "zoo"
    pattern: str | None = None
    plugin: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    def match(self, name: str) -> dict[str, str] | None:
        """Config values from the named groups if ``name`` fits this spec's pattern, else ``None``."""
        if self.pattern is None:
            return None
        found = re.fullmatch(self.pattern, name)
        return None if found is None else {k: v for k, v in found.groupdict().items() if v is not None}


@dataclass(frozen=True)
class VisionTowerSpec(ComponentSpec):
    """A vision tower entry; ``config_cls`` defaults to :class:`VisionTowerConfig`."""

    kind: ClassVar[str] = "vision"
    config_cls: type = VisionTowerConfig


@dataclass(frozen=True)
class ProjectorSpec(ComponentSpec):
    """A projector entry; ``config_cls`` defaults to :class:`ProjectorConfig`."""

    kind: ClassVar[str] = "projector"
    config_cls: type = ProjectorConfig


@dataclass(frozen=True)
class LanguageModelSpec(ComponentSpec):
    """A language model entry; ``config_cls`` defaults to :class:`LanguageModelConfig`."""

    kind: ClassVar[str] = "lm"
    config_cls: type = LanguageModelConfig
