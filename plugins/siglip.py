"""SigLIP and fixed-resolution SigLIP2 vision towers through transformers' ``SiglipVisionModel``.

SigLIP has no CLS token: every token is a patch, so ``select: patch`` keeps all of them (729 for
So400m/14 at 384 px; the reference design's ``[:, 1:]`` wrongly dropped one). Hidden state 0 is the
embeddings output. The fixed-resolution SigLIP2 checkpoints (``google/siglip2-so400m-patch16-384``
and the other non-``naflex`` ones) ship a ``config.json`` with ``model_type: siglip`` and load with
``SiglipModel`` / ``SiglipVisionModel`` (Conv2d patch embedding, learned 2D-grid positions), so they
are served by this class; only the NaFlex variants (``model_type: siglip2``, ``Siglip2VisionModel``,
variable aspect ratio) need the other class, and they are not supported here.
A ``checkpoint`` directory may hold a ``SiglipVisionModel`` or a full ``SiglipModel``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zoo
from zoo.sdk import VisionTowerSpec, hf_tower_factory

from ._lazy import lazy_attribute

if TYPE_CHECKING:  # annotations, and the names _LAZY resolves at run time (for type checkers)
    from ._siglip_tower import SiglipTower

__all__ = ["PRESETS", "SiglipTower", "zoo_register_vision_towers"]

# the tower class imports torch: resolved on first access (zoo_plugins.siglip.SiglipTower)
_LAZY = {"SiglipTower": "._siglip_tower"}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, name, _LAZY)


def _vit(hidden: int, mlp: int, layers: int, heads: int, patch: int, image: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "intermediate_size": mlp,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "patch_size": patch,
        "image_size": image,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    }


# name -> (arch, description); arch values are the vision_config of the named hub checkpoint
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    "siglip-base-16-224": (
        _vit(768, 3072, 12, 12, 16, 224),
        "SigLIP ViT-B/16, 224 px, 196 patches, no CLS (google/siglip-base-patch16-224)",
    ),
    "siglip-so400m-14-384": (
        _vit(1152, 4304, 27, 16, 14, 384),
        "SigLIP So400m/14, 384 px, 729 patches, no CLS (google/siglip-so400m-patch14-384)",
    ),
    "siglip2-so400m-16-384": (
        _vit(1152, 4304, 27, 16, 16, 384),
        "SigLIP2 So400m/16 fixed-res, 384 px, 576 patches, SiglipVisionModel (google/siglip2-so400m-patch16-384)",
    ),
    "tiny-siglip": (
        _vit(32, 64, 2, 4, 8, 32),
        "tiny random SigLIP vision tower for tests: hidden 32, 2 layers, 32 px, patch 8",
    ),
    "tiny-siglip2": (
        _vit(48, 96, 2, 4, 4, 32),
        "tiny random SigLIP2 (fixed-res) vision tower for tests: hidden 48, 2 layers, 32 px, patch 4",
    ),
}


@zoo.hookimpl
def zoo_register_vision_towers(register: Callable[[VisionTowerSpec], None]) -> None:
    """Register the SigLIP and SigLIP2 (fixed-resolution) presets."""
    for name, (arch, description) in PRESETS.items():
        register(
            VisionTowerSpec(
                name=name,
                factory=hf_tower_factory("zoo_plugins._siglip_tower:SiglipTower", arch),
                defaults={"arch": arch},
                description=description,
                source="transformers",
            )
        )
