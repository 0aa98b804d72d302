"""YAML -> validated config -> components -> ``MultiModal``, with the contract checked on ``meta`` first.

The builder resolves each slot's registered spec, merges preset defaults, name-implied values and the
user's overrides into the spec's typed config, builds every component on the ``meta`` device (no
allocation, no weight file read), infers the projector's dimensions from its neighbours, checks the
contract, verifies it by running the tower and projector once on ``meta`` (``verify_contract``), and
only then builds for real. Numbers that would make a real build explode are refused here too: an
``image_size`` past what the tower and the LM's context can use, a LoRA rank past the LM's width,
and a composition whose random-initialised weights (no ``checkpoint``) would exceed
``MAX_RANDOM_INIT_BYTES`` (``zoo build --meta`` inspects it without allocating).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from zoo.core.anyres import AnyResConfig, AnyResLayout
from zoo.core.config import ModelConfig, component_config, load_model_config
from zoo.core.contract import (
    Contract,
    check_contract,
    check_declared_dims,
    check_lora_targets,
    verify_anyres,
    verify_contract,
)
from zoo.core.registry import Registry, get_registry
from zoo.core.train_policy import linear_module_names
from zoo.errors import ConfigError, PluginError, ZooError
from zoo.sdk.components import provide_component_builder
from zoo.sdk.limits import MAX_IMAGE_SIDE, MAX_RANDOM_INIT_BYTES, InputLimitError, brief, format_bytes
from zoo.sdk.specs import SLOTS, ComponentSpec

if TYPE_CHECKING:
    from zoo.core.multimodal import MultiModal
    from zoo.sdk.interfaces import LanguageModel, Projector, VisionTower

__all__ = ["BuildPlan", "build", "build_component", "call_factory", "component_config", "plan"]


def call_factory(
    spec: ComponentSpec,
    config: Any,
    *,
    key: str,
    source: str,
    meta: bool = False,
    empty: bool = False,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Run ``spec.factory(config)`` on ``meta``, with empty parameters, or on ``device``, in ``config.dtype``.

    Any failure becomes a one-line ``ZooError`` that names ``source``, the YAML ``key`` and the component.
    """
    if meta:
        context: Any = torch.device("meta")
    elif empty:
        context = _empty_parameters()
    else:
        context = torch.device(device) if device is not None else contextlib.nullcontext()
    try:
        with context:
            module = spec.factory(config)
    except ZooError as error:
        message = str(error)
        if message.startswith(source):
            raise
        where = f"{source}: " if message.startswith("model.") else f"{source}: {key} ({spec.name!r}): "
        raise type(error)(where + message) from error
    except (Exception, SystemExit) as error:  # plugin code: even sys.exit() must not end the process
        raise ConfigError(
            f"{source}: {key} ({spec.name!r}, plugin {spec.plugin!r}) could not be built: "
            f"{type(error).__name__}: {str(error)[:300]}"
        ) from error
    expected = _interface(spec.kind)
    if not isinstance(module, expected):
        raise PluginError(
            f"{source}: {key} ({spec.name!r}): the factory of plugin {spec.plugin!r} returned "
            f"{brief(module)} instead of a zoo.{expected.__name__}; this is a bug in that plugin"
        )
    built = cast("nn.Module", module)
    dtype = getattr(config, "dtype", None)
    return built.to(getattr(torch, dtype)) if dtype else built


def _interface(kind: str) -> type[nn.Module]:
    from zoo.sdk.interfaces import LanguageModel, Projector, VisionTower

    return {"vision": VisionTower, "projector": Projector, "lm": LanguageModel}.get(kind, nn.Module)


@contextlib.contextmanager
def _empty_parameters() -> Iterator[None]:
    """Parameters go to ``meta`` as they are registered, buffers stay real: for weights that the caller
    assigns right after. A parameter already on ``meta`` is kept as it is, so ties (an output layer given
    the input embedding's parameter) survive."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = type(param)(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def build_component(
    kind: str,
    name: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    dtype: str = "float32",
    meta: bool = False,
    in_dim: int | None = None,
    out_dim: int | None = None,
    registry: Registry | None = None,
    source: str | None = None,
) -> nn.Module:
    """Build one registered component by name (tests, the conformance kit, benchmarks, ``zoo show``).

    ``source`` starts every error message (default: the name asked for, as the user wrote it).

    Example:
        >>> tower = build_component("vision", "tiny-clip", {"select": "all"})
    """
    registry = registry or get_registry()
    key = f"model.{kind}"
    spec, implied = registry.resolve(kind, name, key=f"{key}.name")
    extra = {k: v for k, v in {"in_dim": in_dim, "out_dim": out_dim}.items() if v is not None}
    config = component_config(spec, overrides or {}, implied=implied, dtype=dtype, key=key, extra=extra)
    return call_factory(spec, config, key=key, source=source or repr(name), meta=meta)


@dataclass
class BuildPlan:
    """A checked composition: specs, typed configs, contract and the meta-built components."""

    config: ModelConfig
    specs: dict[str, ComponentSpec]
    configs: dict[str, Any]
    contract: Contract
    meta_modules: dict[str, nn.Module] = field(repr=False)
    plan_seconds: float = 0.0
    anyres: AnyResLayout | None = None

    @property
    def names(self) -> dict[str, str]:
        """The name each slot asked for (``timm:vit_base...`` rather than the pattern spec)."""
        return {kind: self.config.slot(kind).name for kind in SLOTS}


def plan(target: str | Path | Mapping[str, Any] | ModelConfig, *, plugins: Sequence[str] = ()) -> BuildPlan:
    """Validate a composition and check its contract on the ``meta`` device; read no weight.

    Example:
        >>> plan("tiny-clip-mlp-qwen2").contract.image_tokens
        16
    """
    start = time.perf_counter()
    config = target if isinstance(target, ModelConfig) else load_model_config(target)
    registry = get_registry((*config.plugins, *plugins))
    src = config.source
    specs, implied = {}, {}
    for kind in SLOTS:
        choice = config.slot(kind)
        specs[kind], implied[kind] = registry.resolve(kind, choice.name, key=f"{src}: model.{kind}.name")
    configs, modules = {}, {}
    for kind in ("vision", "lm"):
        configs[kind] = component_config(
            specs[kind], config.slot(kind).options, implied=implied[kind], dtype=config.dtype,
            key=f"model.{kind}", source=src,
        )  # fmt: skip
        if kind == "vision" and getattr(configs[kind], "image_size", None) is not None:
            _check_image_side(configs[kind].image_size, src)
        modules[kind] = call_factory(specs[kind], configs[kind], key=f"model.{kind}", source=src, meta=True)
    vision, lm = cast("VisionTower", modules["vision"]), cast("LanguageModel", modules["lm"])
    _check_lm_limits(config, vision, lm, src)
    declared = {k: config.projector.options.get(k) for k in ("in_dim", "out_dim")}
    check_declared_dims(declared, config.vision.name, vision.hidden_size, config.lm.name, lm.hidden_size, src)
    configs["projector"] = component_config(
        specs["projector"], config.projector.options, implied=implied["projector"], dtype=config.dtype,
        key="model.projector", source=src, extra={"in_dim": vision.hidden_size, "out_dim": lm.hidden_size},
    )  # fmt: skip
    modules["projector"] = call_factory(
        specs["projector"], configs["projector"], key="model.projector", source=src, meta=True
    )
    names = {kind: config.slot(kind).name for kind in SLOTS}
    contract = check_contract(vision, modules["projector"], lm, names, src)
    layout = None
    if config.vision.anyres is not None:
        layout, modules["projector"], contract = _plan_anyres(config, vision, modules["projector"], contract, names)
    context = _context_length(lm)
    most = layout.max_tokens if layout is not None else contract.image_tokens
    if context is not None and most > context:
        raise InputLimitError(
            f"{src}: one image becomes {most} tokens but language model {config.lm.name!r} has a "
            f"context of {context}; lower model.vision.image_size"
            + (", use smaller model.vision.anyres.grid_pinpoints" if layout is not None else "")
            + " or choose a projector with fewer tokens"
        )
    owners = {kind: specs[kind].plugin for kind in specs}
    verify_contract(vision, modules["projector"], contract, names, owners, src)
    if layout is not None:
        verify_anyres(layout, contract.lm_hidden_size, src)
    if config.lm.train == "lora":  # a target typo fails here, before any weight is read
        check_lora_targets(config, lm.lora_targets, linear_module_names(lm.model))
    return BuildPlan(config, specs, configs, contract, modules, time.perf_counter() - start, layout)


def _plan_anyres(
    config: ModelConfig, vision: Any, projector: nn.Module, contract: Contract, names: dict[str, str]
) -> tuple[AnyResLayout, nn.Module, Contract]:
    """Resolve ``model.vision.anyres`` against the meta-built tower and projector; wrap the projector."""
    from zoo.core.anyres_projector import AnyResProjector

    anyres = cast("AnyResConfig", config.vision.anyres)
    layout = AnyResLayout.resolve(
        anyres,
        tile_size=vision.image_size,
        tile_tokens=contract.image_tokens,
        names=names,
        source=config.source,
        keeps_patch_layout=getattr(projector, "keeps_patch_layout", True),
    )
    wrapped = AnyResProjector(cast("Projector", projector), newline=layout.newline)
    return layout, wrapped, dataclasses.replace(contract, anyres=layout.to_dict())


def build(
    target: str | Path | Mapping[str, Any] | ModelConfig | BuildPlan,
    *,
    meta: bool = False,
    device: str | torch.device | None = None,
    plugins: Sequence[str] = (),
    prebuilt: Mapping[str, nn.Module] | None = None,
    empty_weights: Collection[str] = (),
    allow_random_init: bool = False,
) -> MultiModal:
    """Build a ``MultiModal`` from a YAML path, a registered composition name, a mapping or a plan.

    Args:
        target: what to build.
        meta: return the model on the ``meta`` device (shapes and counts only, nothing allocated).
        device: where to put the real model (default CPU).
        plugins: extra plugin modules or ``.py`` files to load first.
        prebuilt: already-built components by slot (the bench reuses them across a grid).
        empty_weights: slots to build with parameters on ``meta`` (no random init): the caller assigns
            every parameter afterwards (``zoo.load`` does, from a checkpoint that saved them all).
        allow_random_init: build even when the components without a ``checkpoint`` would allocate
            more than ``MAX_RANDOM_INIT_BYTES`` of random weights (refused by default: a full-size
            preset with no weights is almost always a missing ``checkpoint:``).

    Example:
        >>> model = build("tiny-clip-mlp-qwen2")
        >>> model.tokens_per_image  # tiny-clip: 32 px images, 8 px patches, a 4 x 4 grid
        16
    """
    from zoo.core.multimodal import MultiModal
    from zoo.core.train_policy import apply_training_policy

    checked = target if isinstance(target, BuildPlan) else plan(target, plugins=plugins)
    src = checked.config.source
    if not meta and not allow_random_init:
        _check_random_init(checked, skip={*(prebuilt or {}), *empty_weights})
    if meta:
        modules = dict(checked.meta_modules)
    else:
        modules = dict(prebuilt or {})
        for kind in ("vision", "lm", "projector"):
            if kind not in modules:
                modules[kind] = call_factory(
                    checked.specs[kind], checked.configs[kind], key=f"model.{kind}", source=src,
                    empty=kind in empty_weights,
                )  # fmt: skip
    if checked.anyres is not None and not meta:
        modules["projector"] = _with_newline(modules["projector"], checked.anyres, empty="projector" in empty_weights)
    model = MultiModal(
        cast("VisionTower", modules["vision"]),
        cast("Projector", modules["projector"]),
        cast("LanguageModel", modules["lm"]),
        composition=checked.config,
        contract=checked.contract,
        component_configs=checked.configs,
        anyres=checked.anyres,
    )
    with torch.device("meta") if meta else contextlib.nullcontext():  # LoRA weights too: nothing allocated
        apply_training_policy(model, checked.config)
    if device is not None and not meta:
        model.to(device)
    return model


def _with_newline(projector: nn.Module, layout: AnyResLayout, *, empty: bool) -> nn.Module:
    """The projector wrapped for any-resolution tiling (a prebuilt one may already be)."""
    from zoo.core.anyres_projector import AnyResProjector

    if isinstance(projector, AnyResProjector):
        return projector
    with _empty_parameters() if empty else contextlib.nullcontext():
        return AnyResProjector(cast("Projector", projector), newline=layout.newline)


def _check_image_side(side: Any, source: str) -> None:
    if isinstance(side, int) and not isinstance(side, bool) and not 1 <= side <= MAX_IMAGE_SIDE:
        raise InputLimitError(
            f"{source}: model.vision.image_size = {brief(side)} is out of range; expected 1..{MAX_IMAGE_SIDE} pixels"
        )


def _context_length(lm: Any) -> int | None:
    value = getattr(getattr(getattr(lm, "model", None), "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def _check_lm_limits(config: ModelConfig, vision: Any, lm: Any, source: str) -> None:
    """What the meta-built tower and LM bound: patch size, LoRA rank, and the image placeholder."""
    if vision.image_size < vision.patch_size:
        raise InputLimitError(
            f"{source}: model.vision.image_size = {vision.image_size} is smaller than one patch of "
            f"{config.vision.name!r} ({vision.patch_size} pixels)"
        )
    if config.lm.train == "lora" and config.lm.lora.r > lm.hidden_size:
        raise InputLimitError(
            f"{source}: model.lm.lora.r = {brief(config.lm.lora.r)} is larger than the width of {config.lm.name!r} "
            f"({lm.hidden_size}); a LoRA rank is at most the layer width (typically 8..64)"
        )
    if getattr(lm, "has_tokenizer", False):
        tokenizer = lm.tokenizer
        token = config.image_token
        if token in tokenizer.get_vocab() and token not in tokenizer.get_added_vocab():
            raise ConfigError(
                f"{source}: model.image_token = {brief(token)} is an ordinary token of {config.lm.name!r}'s "
                "tokenizer: every occurrence in a text would become an image position; choose a placeholder "
                "that is not in the vocabulary, such as '<image>'"
            )


def _check_random_init(checked: BuildPlan, *, skip: Collection[str]) -> None:
    """Refuse to allocate more than ``MAX_RANDOM_INIT_BYTES`` of random weights (no ``checkpoint``)."""
    random = {}
    for kind, module in checked.meta_modules.items():
        if kind in skip or getattr(checked.configs[kind], "checkpoint", None):
            continue
        random[kind] = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    total = sum(random.values())
    if total <= MAX_RANDOM_INIT_BYTES:
        return
    names = ", ".join(
        f"model.{kind} ({checked.config.slot(kind).name!r}, {format_bytes(n)})" for kind, n in random.items() if n
    )
    raise InputLimitError(
        f"{checked.config.source}: building this composition would allocate about {format_bytes(total)} of random "
        f"weights: {names} have no checkpoint; set model.<slot>.checkpoint to local weights, inspect it with "
        "'zoo build --meta' (allocates nothing), or pass allow_random_init=True to zoo.build"
    )


def _build_inner_component(kind: str, name: str, options: Mapping[str, Any], *, key: str, dtype: str) -> nn.Module:
    """``zoo.sdk.build_component``: a registered component built inside another's factory (``fused``'s towers),
    in the caller's device context; errors name ``key``."""
    spec, implied = get_registry().resolve(kind, name, key=f"{key}.name")
    config = component_config(spec, options, implied=implied, dtype=dtype, key=key)
    return call_factory(spec, config, key=key, source=f"model.{kind}")


provide_component_builder(_build_inner_component)
