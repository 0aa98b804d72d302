"""open_clip vision towers: the image tower of any open_clip architecture, by name ``open_clip:<model_name>``.

Only the vision tower is built (open_clip's own ``_build_vision_tower`` from the model config); the
tower returns token states, not the pooled, projected embedding. Two kinds of open_clip towers work:
its ``VisionTransformer`` (``ViT-L-14-336``...; one class token) and ``TimmModel`` whose ``.trunk`` is
a timm ViT or Eva (``EVA02-L-14``, ``ViT-SO400M-14-SigLIP-384``...); ResNet and ConvNeXt towers are
refused with a ConfigError. Preprocessing is open_clip's ``image_transform`` with the model's preprocess
config (open_clip's defaults, the model config's ``preprocess_cfg``, and the mean/std/resize of its
pretrained tags where they all agree, e.g. 0.5/0.5 for SigLIP).

``checkpoint`` is a local open_clip weight file (a whole CLIP or the ``visual`` part; ``.safetensors``,
or a legacy ``.bin`` / ``.pt`` read with ``weights_only=True``) or a directory holding
``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``; position embeddings are resized as
open_clip resizes them. OpenAI-trained weights need the ``-quickgelu`` architecture name
(``open_clip:ViT-L-14-336-quickgelu``) or ``arch: {quick_gelu: true}``. Nothing is downloaded.

The model code lives in ``_open_clip_tower`` (it imports torch and open_clip): the factories import it
on first call and the names re-exported here (``OpenClipVisionTower``...) resolve on first access, so
registering and listing these towers imports no model library.

Example (YAML)::

    vision: {name: "open_clip:ViT-L-14-336-quickgelu", checkpoint: weights/open_clip_model.safetensors}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zoo
from zoo.sdk import VisionTowerConfig, VisionTowerSpec

from ._lazy import lazy_attribute

if TYPE_CHECKING:  # annotations, and the names _LAZY resolves at run time (for type checkers)
    from ._open_clip_tower import OpenClipVisionTower, load_open_clip_checkpoint, open_clip_model_config

__all__ = [
    "TINY_OPEN_CLIP_CONFIG",
    "OpenClipVisionTower",
    "load_open_clip_checkpoint",
    "open_clip_model_config",
    "zoo_register_vision_towers",
]

# the tower and its helpers import torch / open_clip: resolved on first access (open_clip_towers.OpenClipVisionTower)
_LAZY = {
    "OpenClipVisionTower": "._open_clip_tower",
    "load_open_clip_checkpoint": "._open_clip_tower",
    "open_clip_model_config": "._open_clip_tower",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, name, _LAZY)


TINY_OPEN_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def build_open_clip_tower(config: VisionTowerConfig) -> OpenClipVisionTower:
    """Factory of ``open_clip:<model_name>``: the vision tower of a registered open_clip architecture."""
    from ._open_clip_tower import create_open_clip_tower, open_clip_model_config

    name = config.model_name  # never empty: the pattern's group matches at least one character
    return create_open_clip_tower(config, open_clip_model_config(name), name)


def build_tiny_open_clip(config: VisionTowerConfig) -> OpenClipVisionTower:
    """Factory of ``tiny-open-clip``: a random open_clip ViT (width 64, 2 blocks, 32 px, patch 8)."""
    from ._open_clip_tower import create_open_clip_tower

    return create_open_clip_tower(config, TINY_OPEN_CLIP_CONFIG, None)


@zoo.hookimpl
def zoo_register_vision_towers(register: Callable[[VisionTowerSpec], None]) -> None:
    """Register ``open_clip:<model_name>`` and ``tiny-open-clip``."""
    register(
        VisionTowerSpec(
            name="open_clip:<model_name>",
            factory=build_open_clip_tower,
            pattern=r"open_clip:(?P<model_name>.+)",
            description="vision tower of any open_clip ViT architecture (or timm ViT/Eva trunk); tokens, not pooled",
            source="open_clip",
        )
    )
    register(
        VisionTowerSpec(
            name="tiny-open-clip",
            factory=build_tiny_open_clip,
            description="tiny random open_clip ViT (width 64, 2 blocks, 32 px, patch 8, class token)",
            source="open_clip",
        )
    )
