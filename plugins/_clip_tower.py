"""The CLIP tower class behind ``zoo_plugins.clip`` (imported by its factory, on the first build).

Private module: it imports torch, so the registration module ``clip`` imports it only inside its factory.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from zoo.sdk import HFVisionTower

__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "CLIPTower"]

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
