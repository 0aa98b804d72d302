"""The ``fused`` vision tower (several towers, features concatenated per patch) and its presets.

``fused`` takes ``towers: [...]`` (each a tower name or a mapping with its own options); the presets
are fixed lists, like prismatic-vlms' ``dinosiglip-vit-so-384px``. The implementation is
``zoo_plugins._fused_tower``, imported on first build (registering imports no model library); it builds
each tower by name through ``zoo.sdk.build_component``, like any plugin could.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zoo
from zoo.sdk import VisionTowerSpec

from ._lazy import lazy_attribute

if TYPE_CHECKING:  # annotations, and the names _LAZY resolves at run time (for type checkers)
    from ._fused_tower import FusedPreprocessor, FusedTower, build_fused_tower

__all__ = [
    "PRESETS",
    "FusedPreprocessor",
    "FusedTower",
    "FusedTowerConfig",
    "build_fused_tower",
    "zoo_register_vision_towers",
]

# the tower classes import torch: resolved on first access (zoo_plugins.fused.FusedTower)
_LAZY = {name: "._fused_tower" for name in ("FusedPreprocessor", "FusedTower", "build_fused_tower")}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, name, _LAZY)


@dataclass(frozen=True)
class FusedTowerConfig:
    """Options of a fused tower.

    Attributes:
        towers: the towers, each a registered tower name or ``{name: ..., <that tower's options>}``.
        dtype: parameter dtype of every tower; ``None`` follows the model's ``dtype``.
    """

    towers: list[Any] = field(default_factory=list)
    dtype: str | None = None


def _build(config: FusedTowerConfig) -> FusedTower:
    from ._fused_tower import build_fused_tower

    return build_fused_tower(config)


# name -> (towers, description)
PRESETS: dict[str, tuple[list[Any], str]] = {
    "dinosiglip-384": (
        [{"name": "dinov2-large-14-reg", "image_size": 384}, {"name": "siglip-so400m-14-384"}],
        "DINOv2-L/14-reg + SigLIP So400m/14 at 384 px, 729 patches, 2176 wide (prismatic-vlms' dinosiglip)",
    ),
    "dinosiglip-224": (
        [{"name": "dinov2-large-14-reg"}, {"name": "siglip-so400m-14-384", "image_size": 224}],
        "DINOv2-L/14-reg + SigLIP So400m/14 at 224 px, 256 patches, 2176 wide",
    ),
    "tiny-dinosiglip": (
        [{"name": "tiny-dinov2"}, {"name": "tiny-siglip"}],
        "tiny random DINOv2 (28 px) + SigLIP (32 px) fused: 16 patches, 64 wide",
    ),
}


@zoo.hookimpl
def zoo_register_vision_towers(register: Any) -> None:
    """Register ``fused`` and the fused presets."""
    register(
        VisionTowerSpec(
            name="fused",
            factory=_build,
            config_cls=FusedTowerConfig,
            description="towers side by side, features concatenated per patch (set model.vision.towers)",
        )
    )
    for name, (towers, description) in PRESETS.items():
        register(
            VisionTowerSpec(
                name=name,
                factory=_build,
                config_cls=FusedTowerConfig,
                defaults={"towers": towers},
                description=description,
            )
        )
