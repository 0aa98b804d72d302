"""CLIP vision towers through transformers' ``CLIPVisionModel`` (OpenAI CLIP ViT-B/16, ViT-L/14, ViT-L/14-336).

CLIP puts one CLS token before the patches and a ``pre_layrnorm`` after the embeddings; hidden state 0
is the output of that norm, as in ``CLIPVisionModel(..., output_hidden_states=True).hidden_states``.
A ``checkpoint`` directory may hold a ``CLIPVisionModel`` or a full ``CLIPModel`` (the vision part is used).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

import zoo
from zoo.specs import VisionTowerSpec

from ._hf_vision import HFVisionTower, tower_factory

__all__ = ["PRESETS", "CLIPTower", "zoo_register_vision_towers"]

# OpenAI CLIP normalisation (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPTower(HFVisionTower):
    """``CLIPVisionModel``: CLS + patches, ``pre_layrnorm`` before the first block."""

    family = "CLIP"
    model_types: ClassVar[dict[str, tuple[str, str]]] = {
        "clip_vision_model": ("CLIPVisionConfig", "CLIPVisionModel"),
        "clip": ("CLIPVisionConfig", "CLIPVisionModel"),  # a full CLIPModel directory: its vision part
    }
    default_model_type = "clip_vision_model"
    processor_class = "CLIPImageProcessor"
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD

    @classmethod
    def prefix_tokens(cls, config: Any) -> int:
        return 1

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.model.embeddings(pixel_values, interpolate_pos_encoding=self.interpolate)  # [B, 1+N, D]
        return self.model.pre_layrnorm(hidden)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layers

    def processor_kwargs(self, image_size: int) -> dict[str, Any]:
        # CLIP: resize the shortest edge to S (bicubic), centre-crop S x S
        return {"size": {"shortest_edge": image_size}, "crop_size": {"height": image_size, "width": image_size}}


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
                factory=tower_factory(CLIPTower, arch),
                defaults={"arch": arch},
                description=description,
                source="transformers",
            )
        )
