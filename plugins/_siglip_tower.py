"""The SigLIP tower class behind ``zoo_plugins.siglip`` (imported by its factory, on the first build).

Private module: it imports torch, so the registration module ``siglip`` imports it only inside its factory.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from zoo.sdk import HFVisionTower

__all__ = ["SiglipTower"]


class SiglipTower(HFVisionTower):
    """``SiglipVisionModel``: patches only, no prefix tokens."""

    family = "SigLIP"
    model_types: ClassVar[dict[str, tuple[str, str]]] = {
        "siglip_vision_model": ("SiglipVisionConfig", "SiglipVisionModel"),
        "siglip": ("SiglipVisionConfig", "SiglipVisionModel"),  # a full SiglipModel directory (SigLIP / SigLIP2 FixRes)
    }
    default_model_type = "siglip_vision_model"
    processor_class = "SiglipImageProcessor"
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)

    @classmethod
    def prefix_tokens(cls, config: Any) -> int:
        return 0

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.embeddings(pixel_values, interpolate_pos_encoding=self.interpolate)  # [B, N, D]

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layers

    def processor_kwargs(self, image_size: int) -> dict[str, Any]:
        # SigLIP: resize straight to S x S (bicubic), no crop, mean = std = 0.5
        return {"size": {"height": image_size, "width": image_size}}
