"""CLIP vision towers through transformers' ``CLIPVisionModel`` (OpenAI CLIP ViT-B/16, ViT-L/14, ViT-L/14-336).

CLIP puts one CLS token before the patches and a ``pre_layrnorm`` after the embeddings; hidden state 0
is the output of that norm, as in ``CLIPVisionModel(..., output_hidden_states=True).hidden_states``.
A ``checkpoint`` directory may hold a ``CLIPVisionModel`` or a full ``CLIPModel`` (the vision part is used).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zoo
from zoo.sdk import VisionTowerSpec, hf_tower_factory

from ._lazy import lazy_attribute

if TYPE_CHECKING:  # annotations, and the names _LAZY resolves at run time (for type checkers)
    from ._clip_tower import CLIPTower

__all__ = ["PRESETS", "CLIPTower", "zoo_register_vision_towers"]

# the tower class imports torch: resolved on first access (zoo_plugins.clip.CLIPTower)
_LAZY = {"CLIPTower": "._clip_tower"}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, name, _LAZY)


def _vit(hidden: int, layers: int, heads: int, patch: int, image: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "patch_size": patch,
        "image_size": image,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    }


# name -> (arch, description); arch values are the vision_config of the named hub checkpoint
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    "clip-vit-l-14": (
        _vit(1024, 24, 16, 14, 224),
        "OpenAI CLIP ViT-L/14, 224 px, 256 patches (openai/clip-vit-large-patch14)",
    ),
    "clip-vit-l-14-336": (
        _vit(1024, 24, 16, 14, 336),
        "OpenAI CLIP ViT-L/14, 336 px, 576 patches, LLaVA-1.5's tower (openai/clip-vit-large-patch14-336)",
    ),
    "clip-vit-b-16": (
        _vit(768, 12, 12, 16, 224),
        "OpenAI CLIP ViT-B/16, 224 px, 196 patches (openai/clip-vit-base-patch16)",
    ),
    "tiny-clip": (
        {**_vit(32, 2, 4, 8, 32), "intermediate_size": 64},
        "tiny random CLIP vision tower for tests: hidden 32, 2 layers, 32 px, patch 8",
    ),
}


@zoo.hookimpl
def zoo_register_vision_towers(register: Callable[[VisionTowerSpec], None]) -> None:
    """Register the CLIP presets."""
    for name, (arch, description) in PRESETS.items():
        register(
            VisionTowerSpec(
                name=name,
                factory=hf_tower_factory("zoo_plugins._clip_tower:CLIPTower", arch),
                defaults={"arch": arch},
                description=description,
                source="transformers",
            )
        )
