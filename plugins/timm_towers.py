"""timm vision towers: any timm ViT-style model as a zoo tower, by pass-through name ``timm:<model_name>``.

``timm:vit_so400m_patch14_siglip_384`` builds ``timm.create_model(name, pretrained=False, num_classes=0)``
and returns its token states (not the pooled embedding). Supported are timm's ``VisionTransformer``
family (ViT, DeiT, SigLIP, DINOv2, CLIP ViTs...) and ``Eva`` (EVA-02, rotary position embeddings): the
models with ``patch_embed``, ``_pos_embed``, ``norm_pre`` and ``blocks``. Prefix tokens (class, registers,
distillation) come from timm's own ``num_prefix_tokens``; preprocessing from timm's data config.

``checkpoint`` is a local weight file (``.safetensors``, or a legacy ``.pth`` / ``.bin`` read with
``weights_only=True``) or a directory holding ``model.safetensors`` / ``pytorch_model.bin`` (timm's hub
layout). It goes through timm's own checkpoint filter of the model family, so OpenAI-CLIP, open_clip
and DINOv2 layouts and other resolutions are converted as timm converts them. Nothing is downloaded
unless ``offline: false`` (then timm fetches its pretrained weights); on ``meta`` no weight file is read.

The model code lives in ``_timm_tower`` (it imports torch and timm): the factories import it on first
call and the names re-exported here (``TimmVisionTower``, the weight-file helpers) resolve on first
access, so registering and listing these towers imports no model library.

Example (YAML)::

    vision: {name: "timm:vit_so400m_patch14_siglip_384", checkpoint: weights/siglip.safetensors}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zoo
from zoo.sdk import VisionTowerConfig, VisionTowerSpec

from ._lazy import lazy_attribute

if TYPE_CHECKING:  # annotations only; the re-exported names resolve through _LAZY at run time
    from ._timm_tower import TimmVisionTower

# the tower and its helpers import torch: resolved on first access (zoo_plugins.timm_towers.TimmVisionTower)
_REEXPORTS = (
    "TimmVisionTower",
    "find_weight_file",
    "load_strict",
    "load_timm_checkpoint",
    "prepare_timm_state",
    "timm_hidden_states",
    "vit_family",
)
_LAZY = dict.fromkeys(_REEXPORTS, "._timm_tower")
__all__ = ["TINY_TIMM_VIT", *_REEXPORTS, "zoo_register_vision_towers"]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, name, _LAZY)


TINY_TIMM_VIT: dict[str, Any] = {
    "model_name": "test_vit",
    "arch": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0,
             "reg_tokens": 2, "pre_norm": True},
}  # fmt: skip


def build_timm_tower(config: VisionTowerConfig) -> TimmVisionTower:
    """Factory of ``timm:<model_name>``: the timm model named by ``config.model_name``; imports timm on first call."""
    from ._timm_tower import create_timm_tower

    return create_timm_tower(config, tiny=False)


def build_tiny_timm_vit(config: VisionTowerConfig) -> TimmVisionTower:
    """Factory of ``tiny-timm-vit``: a random 2-block pre-norm ViT (width 32, 32 px, patch 8, CLS + 2 registers)."""
    from ._timm_tower import create_timm_tower

    return create_timm_tower(config, tiny=True)


@zoo.hookimpl
def zoo_register_vision_towers(register: Callable[[VisionTowerSpec], None]) -> None:
    """Register ``timm:<model_name>`` (any timm ViT / Eva) and ``tiny-timm-vit``."""
    register(
        VisionTowerSpec(
            name="timm:<model_name>",
            factory=build_timm_tower,
            pattern=r"timm:(?P<model_name>.+)",
            description="any timm ViT-style model (VisionTransformer, Eva) by name; tokens before the final norm",
            source="timm",
        )
    )
    register(
        VisionTowerSpec(
            name="tiny-timm-vit",
            factory=build_tiny_timm_vit,
            defaults=TINY_TIMM_VIT,
            description="tiny random timm ViT (width 32, 2 blocks, 32 px, patch 8, CLS + 2 registers, pre-norm like CLIP)",
            source="timm",
        )
    )
