"""The built-in projector catalogue: identity, linear, ``mlp{N}x-gelu``, resampler, perceiver, pixel-shuffle.

Registered through ``zoo_register_projectors`` like any third-party plugin. Each factory receives a
validated config whose ``in_dim`` / ``out_dim`` the builder filled from the neighbouring tower and LM,
builds on the current default device (``meta`` included) and returns the module in ``config.dtype``.
The modules themselves live in ``_proj_mlp`` (token-wise) and ``_proj_attention`` (fixed token budget);
they import torch, so the factories import them on first call and the module classes re-exported here
resolve on first access: registering and listing projectors imports no model library.

Example (YAML)::

    projector: {name: mlp2x-gelu}                    # LLaVA-1.5
    projector: {name: resampler, num_queries: 64}    # MiniCPM-V style
    projector: {name: pixel-shuffle, factor: 2}      # InternVL / Idefics3 style, 576 -> 144 tokens
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zoo
from zoo.errors import ConfigError
from zoo.sdk import ProjectorConfig, ProjectorSpec

from ._lazy import lazy_attribute

if TYPE_CHECKING:  # annotations, and the names _LAZY resolves at run time (for type checkers)
    from zoo.sdk import Projector

    from ._proj_attention import CrossAttentionResampler, PerceiverResampler, sincos_2d
    from ._proj_mlp import IdentityProjector, MlpProjector, PixelShuffleProjector, space_to_depth

__all__ = [
    "CrossAttentionResampler",
    "IdentityProjector",
    "MlpProjector",
    "PerceiverConfig",
    "PerceiverResampler",
    "PixelShuffleProjector",
    "default_num_heads",
    "sincos_2d",
    "space_to_depth",
    "zoo_register_projectors",
]

# the module classes import torch: resolved on first access (zoo_plugins.projectors.MlpProjector)
_LAZY = {
    "CrossAttentionResampler": "._proj_attention",
    "PerceiverResampler": "._proj_attention",
    "sincos_2d": "._proj_attention",
    "IdentityProjector": "._proj_mlp",
    "MlpProjector": "._proj_mlp",
    "PixelShuffleProjector": "._proj_mlp",
    "space_to_depth": "._proj_mlp",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, name, _LAZY)


KEY = "model.projector"
MLP_PATTERN = r"mlp(?P<depth>\d+)x-gelu"


@dataclass(frozen=True)
class PerceiverConfig(ProjectorConfig):
    """:class:`ProjectorConfig` plus the Perceiver feed-forward width multiplier (Flamingo: 4)."""

    ff_mult: int = 4


def default_num_heads(dim: int) -> int:
    """``dim // 128`` (at least 1), lowered to the nearest divisor of ``dim`` so that heads split it evenly."""
    heads = max(1, dim // 128)
    while dim % heads:
        heads -= 1
    return heads


def _dims(config: ProjectorConfig, name: str) -> tuple[int, int]:
    dims = []
    for field in ("in_dim", "out_dim"):
        value = getattr(config, field)
        if value is None or value < 1:
            raise ConfigError(
                f"{KEY}.{field} = {value!r}: projector {name!r} needs a positive {field}; it is normally inferred "
                "from the neighbouring vision tower (in_dim) and language model (out_dim)"
            )
        dims.append(int(value))
    return dims[0], dims[1]


def _positive(config: ProjectorConfig, field: str, name: str) -> int:
    value = getattr(config, field)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)  # a group captured by a name pattern (``mlp3x-gelu`` -> "3")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{KEY}.{field} = {value!r} is not valid for projector {name!r}; expected an integer >= 1")
    return value


def _heads(config: ProjectorConfig, dim: int, dim_name: str, name: str) -> int:
    if config.num_heads is None:
        return default_num_heads(dim)
    heads = _positive(config, "num_heads", name)
    if dim % heads:
        valid = [h for h in range(1, min(dim, 64) + 1) if dim % h == 0]
        raise ConfigError(
            f"{KEY}.num_heads = {heads} does not divide {dim_name}={dim} of projector {name!r}; "
            f"valid head counts include {valid[-8:]} (default: {default_num_heads(dim)})"
        )
    return heads


def _finish(module: Projector, config: ProjectorConfig) -> Projector:
    from zoo.sdk import torch_dtype_of

    return module.to(torch_dtype_of(config.dtype))


def build_identity(config: ProjectorConfig) -> Projector:
    """``identity``: features unchanged; a ContractError when ``in_dim != out_dim``."""
    from ._proj_mlp import IdentityProjector

    return _finish(IdentityProjector(*_dims(config, "identity")), config)


def build_linear(config: ProjectorConfig) -> Projector:
    """``linear``: one ``Linear(in_dim, out_dim)`` (LLaVA-1.0), init N(0, 0.01), zero bias."""
    from ._proj_mlp import MlpProjector

    if _positive(config, "depth", "linear") != 1:
        raise ConfigError(
            f"{KEY}.depth = {config.depth!r}: projector 'linear' has exactly one layer; "
            f"use name 'mlp{config.depth}x-gelu' for a deeper MLP"
        )
    return _finish(MlpProjector(*_dims(config, "linear"), depth=1), config)


def _mlp_factory(fixed_depth: int | None) -> Callable[[ProjectorConfig], Projector]:
    def build_mlp(config: ProjectorConfig) -> Projector:
        from ._proj_mlp import MlpProjector

        depth = _positive(config, "depth", f"mlp{config.depth}x-gelu")
        name = f"mlp{depth}x-gelu"
        if fixed_depth is not None and depth != fixed_depth:
            raise ConfigError(
                f"{KEY}.depth = {depth} contradicts the name 'mlp{fixed_depth}x-gelu' ({fixed_depth} linears); "
                f"use name {name!r} instead"
            )
        return _finish(MlpProjector(*_dims(config, name), depth=depth), config)

    build_mlp.__doc__ = "``mlp{N}x-gelu``: LLaVA's GELU MLP with ``depth`` linears, init N(0, 0.01), zero bias."
    return build_mlp


def build_resampler(config: ProjectorConfig) -> Projector:
    """``resampler``: Qwen-VL / MiniCPM-V cross-attention resampler (``num_queries`` tokens out)."""
    from ._proj_attention import CrossAttentionResampler

    in_dim, out_dim = _dims(config, "resampler")
    queries = _positive(config, "num_queries", "resampler")
    heads = _heads(config, out_dim, "out_dim", "resampler")
    return _finish(CrossAttentionResampler(in_dim, out_dim, queries, heads), config)


def build_perceiver(config: PerceiverConfig) -> Projector:
    """``perceiver``: Flamingo Perceiver resampler (``num_queries`` latents, ``depth`` blocks)."""
    from ._proj_attention import PerceiverResampler

    in_dim, out_dim = _dims(config, "perceiver")
    queries = _positive(config, "num_queries", "perceiver")
    depth = _positive(config, "depth", "perceiver")
    heads = _heads(config, in_dim, "in_dim", "perceiver")
    ff_mult = _positive(config, "ff_mult", "perceiver")
    return _finish(PerceiverResampler(in_dim, out_dim, queries, depth, heads, ff_mult), config)


def build_pixel_shuffle(config: ProjectorConfig) -> Projector:
    """``pixel-shuffle``: space-to-depth by ``factor`` per side, then LayerNorm + Linear + GELU + Linear."""
    from ._proj_mlp import PixelShuffleProjector

    factor = _positive(config, "factor", "pixel-shuffle")
    return _finish(PixelShuffleProjector(*_dims(config, "pixel-shuffle"), factor=factor), config)


@zoo.hookimpl
def zoo_register_projectors(register: Callable[[ProjectorSpec], None]) -> None:
    """Register the built-in projectors."""
    register(
        ProjectorSpec(name="identity", factory=build_identity, description="no-op; tower width must equal LM width")
    )
    register(
        ProjectorSpec(
            name="linear",
            factory=build_linear,
            defaults={"depth": 1},
            description="one Linear(in_dim, out_dim) (LLaVA-1.0)",
        )
    )
    register(
        ProjectorSpec(
            name="mlp2x-gelu",
            factory=_mlp_factory(2),
            defaults={"depth": 2},
            description="Linear-GELU-Linear (LLaVA-1.5; transformers LlavaMultiModalProjector layout)",
        )
    )
    register(
        ProjectorSpec(
            name="mlp<N>x-gelu",
            factory=_mlp_factory(None),
            pattern=MLP_PATTERN,
            description="LLaVA GELU MLP with N linears, e.g. mlp3x-gelu",
        )
    )
    register(
        ProjectorSpec(
            name="resampler",
            factory=build_resampler,
            defaults={"num_queries": 64},
            description="Qwen-VL / MiniCPM-V cross-attention resampler, learned queries, 2D sin-cos keys",
        )
    )
    register(
        ProjectorSpec(
            name="perceiver",
            factory=build_perceiver,
            config_cls=PerceiverConfig,
            defaults={"depth": 6, "num_queries": 64},
            description="Flamingo Perceiver resampler (latents attend to concat(image, latents))",
        )
    )
    register(
        ProjectorSpec(
            name="pixel-shuffle",
            factory=build_pixel_shuffle,
            defaults={"factor": 2},
            description="InternVL / Idefics3 pixel shuffle (factor^2 fewer tokens) + MLP",
        )
    )
