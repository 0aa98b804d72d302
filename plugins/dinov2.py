"""DINOv2 vision towers through transformers' ``Dinov2Model`` and ``Dinov2WithRegistersModel``.

DINOv2 puts a CLS token (and, for the ``-reg`` variants, 4 register tokens) before the patches; hidden
state 0 is the embeddings output. The released checkpoints carry a 37x37 position table (518 px), and
the model always interpolates it to the input grid, so the presets run at DINOv2's own evaluation
resolution of 224 px (256 patches), like its preprocessor (resize 256, centre-crop 224).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zoo
from zoo.sdk import VisionTowerSpec, hf_tower_factory

from ._lazy import lazy_attribute

if TYPE_CHECKING:  # annotations, and the names _LAZY resolves at run time (for type checkers)
    from ._dinov2_tower import Dinov2Tower

__all__ = ["PRESETS", "Dinov2Tower", "zoo_register_vision_towers"]

# the tower class imports torch: resolved on first access (zoo_plugins.dinov2.Dinov2Tower)
_LAZY = {"Dinov2Tower": "._dinov2_tower"}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, name, _LAZY)


def _vit(hidden: int, layers: int, heads: int, patch: int, image: int, registers: int = 0) -> dict[str, Any]:
    arch: dict[str, Any] = {
        "model_type": "dinov2_with_registers" if registers else "dinov2",
        "hidden_size": hidden,
        "mlp_ratio": 4,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "patch_size": patch,
        "image_size": image,
        "layerscale_value": 1.0,
        "layer_norm_eps": 1e-6,
    }
    if registers:
        arch["num_register_tokens"] = registers
    return arch


# name -> (defaults, description); arch values are the config.json of the named hub checkpoint
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    "dinov2-large-14": (
        {"arch": _vit(1024, 24, 16, 14, 518), "image_size": 224},
        "DINOv2 ViT-L/14, run at 224 px: CLS + 256 patches (facebook/dinov2-large)",
    ),
    "dinov2-large-14-reg": (
        {"arch": _vit(1024, 24, 16, 14, 518, registers=4), "image_size": 224},
        "DINOv2 ViT-L/14 with 4 registers, run at 224 px: CLS + 4 registers + 256 patches "
        "(facebook/dinov2-with-registers-large)",
    ),
    "tiny-dinov2": (
        {"arch": {**_vit(32, 2, 4, 7, 56), "mlp_ratio": 2}, "image_size": 28},
        "tiny random DINOv2 tower for tests: hidden 32, 2 layers, patch 7, 56 px positions run at 28 px",
    ),
    "tiny-dinov2-reg": (
        {"arch": {**_vit(32, 2, 4, 7, 56, registers=4), "mlp_ratio": 2}, "image_size": 28},
        "tiny random DINOv2 tower with 4 registers for tests: hidden 32, 2 layers, patch 7, 28 px",
    ),
}


@zoo.hookimpl
def zoo_register_vision_towers(register: Callable[[VisionTowerSpec], None]) -> None:
    """Register the DINOv2 presets."""
    for name, (defaults, description) in PRESETS.items():
        register(
            VisionTowerSpec(
                name=name,
                factory=hf_tower_factory("zoo_plugins._dinov2_tower:Dinov2Tower", defaults["arch"]),
                defaults=defaults,
                description=description,
                source="transformers",
            )
        )
