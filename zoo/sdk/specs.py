"""Registry entries: cheap, frozen metadata for each component, and the typed configs they build from.

A spec names a component, says which library it comes from, and holds a ``factory`` that builds the
module from a validated config dataclass. Nothing here imports a model library: listing is instant.
Heavy imports happen inside factories.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from zoo.sdk.deprecation import Renamed, deprecated_attribute

__all__ = [
    "SLOTS",
    "ComponentSpec",
    "LanguageModelConfig",
    "LanguageModelSpec",
    "ProjectorConfig",
    "ProjectorSpec",
    "VisionTowerConfig",
    "VisionTowerSpec",
    "spec_problem",
]

MAX_NAME_LENGTH = 200
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:<>+/-]*")

SLOTS = ("vision", "projector", "lm")  # the slots of a composition, in build order; a spec's kind is one


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
        defaults = dict(self.defaults) if isinstance(self.defaults, Mapping) else self.defaults
        object.__setattr__(self, "defaults", MappingProxyType(defaults) if isinstance(defaults, dict) else defaults)

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


def spec_problem(spec: ComponentSpec) -> str | None:
    """Why ``spec`` cannot be registered, or ``None``: checked once, when a plugin registers it.

    A bad spec is the plugin's bug, so it must fail at registration (blaming the plugin) rather than
    later in an unrelated lookup, in ``zoo list`` or in a user's build.
    """
    name = spec.name
    if not isinstance(name, str) or not name:
        return f"its name is {type(name).__name__} {name!r:.60}; expected a non-empty string"
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        return (
            f"name {name!r:.80} is not valid; use letters, digits and . _ : < > + / - "
            f"(at most {MAX_NAME_LENGTH} characters, no spaces)"
        )
    if not callable(spec.factory):
        return f"factory {spec.factory!r:.60} is not callable"
    cls = spec.config_cls
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return f"config_cls {cls!r:.60} is not a dataclass"
    fields = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(spec.defaults, Mapping):
        return f"defaults is a {type(spec.defaults).__name__}; expected a mapping of {cls.__name__} fields"
    unknown = sorted(str(k) for k in spec.defaults if k not in fields)
    if unknown:
        return f"defaults set {', '.join(repr(k) for k in unknown)}, which {cls.__name__} has no field for"
    for attribute in ("description", "source"):
        if not isinstance(getattr(spec, attribute), str):
            return f"{attribute} is a {type(getattr(spec, attribute)).__name__}; expected a string"
    if spec.pattern is not None:
        if not isinstance(spec.pattern, str) or len(spec.pattern) > 1000:
            return f"pattern {spec.pattern!r:.60} is not a regular expression string"
        try:
            compiled = re.compile(spec.pattern)
        except re.error as error:
            return f"pattern {spec.pattern!r:.80} is not a valid regular expression: {error}"
        extra = sorted(set(compiled.groupindex) - fields)
        if extra:
            return f"pattern group {extra[0]!r} is not a field of {cls.__name__}"
    return None


_DEPRECATED: dict[str, Renamed] = {"KINDS": ("zoo.sdk.specs", "SLOTS", "0.1.0")}  # one definition of the slots


def __getattr__(name: str) -> Any:
    return deprecated_attribute(__name__, name, _DEPRECATED)
