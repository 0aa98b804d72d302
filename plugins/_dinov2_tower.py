"""The DINOv2 tower class behind ``zoo_plugins.dinov2`` (imported by its factory, on the first build).

Private module: it imports torch, so the registration module ``dinov2`` imports it only inside its factory.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from zoo.sdk import HFVisionTower

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Dinov2Tower"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Dinov2Tower(HFVisionTower):
    """``Dinov2Model`` / ``Dinov2WithRegistersModel``: CLS (+ registers) + patches."""

    family = "DINOv2"
    model_types: ClassVar[dict[str, tuple[str, str]]] = {
        "dinov2": ("Dinov2Config", "Dinov2Model"),
        "dinov2_with_registers": ("Dinov2WithRegistersConfig", "Dinov2WithRegistersModel"),
    }
    default_model_type = "dinov2"
    processor_class = "BitImageProcessor"
    image_mean = IMAGENET_MEAN
    image_std = IMAGENET_STD

    @classmethod
    def prefix_tokens(cls, config: Any) -> int:
        return 1 + int(getattr(config, "num_register_tokens", 0))

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.embeddings(pixel_values)  # [B, 1+R+N, D] (positions always interpolated)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def processor_kwargs(self, image_size: int) -> dict[str, Any]:
        # DINOv2: resize the shortest edge to S * 256/224 (bicubic), centre-crop S x S, ImageNet mean/std
        return {
            "size": {"shortest_edge": round(image_size * 256 / 224)},
            "crop_size": {"height": image_size, "width": image_size},
            "image_mean": list(IMAGENET_MEAN),
            "image_std": list(IMAGENET_STD),
        }
