"""DINOv2 vision towers through transformers' ``Dinov2Model`` and ``Dinov2WithRegistersModel``.

DINOv2 puts a CLS token (and, for the ``-reg`` variants, 4 register tokens) before the patches; hidden
state 0 is the embeddings output. The released checkpoints carry a 37x37 position table (518 px), and
the model always interpolates it to the input grid, so the presets run at DINOv2's own evaluation
resolution of 224 px (256 patches), like its preprocessor (resize 256, centre-crop 224).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

import zoo
from zoo.specs import VisionTowerSpec

from ._hf_vision import HFVisionTower, tower_factory

__all__ = ["PRESETS", "Dinov2Tower", "zoo_register_vision_towers"]

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
                factory=tower_factory(Dinov2Tower, defaults["arch"]),
                defaults=defaults,
                description=description,
                source="transformers",
            )
        )
