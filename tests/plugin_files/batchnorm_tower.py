"""A local plugin file for tests: a tiny convolutional tower with BatchNorm and dropout (``tiny-bn-tower``).

Such a tower changes in train mode even when nothing trains it (BatchNorm running statistics, dropout),
which is what ``train: frozen`` must prevent. ``tiny-bn-drifter`` also rewrites a buffer in eval mode: a
component that breaks the promise whatever zoo does, which the conformance kit must catch.
"""

import numpy as np
import torch
from torch import nn

import zoo


class BatchNormTower(zoo.VisionTower):
    def __init__(self, config: zoo.VisionTowerConfig) -> None:
        size = config.image_size or 32
        super().__init__(hidden_size=16, num_prefix_tokens=0, patch_size=8, image_size=size, num_layers=2,
                         select_layer=config.select_layer, select=config.select)  # fmt: skip
        self.embed = nn.Conv2d(3, 16, kernel_size=8, stride=8)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(16), nn.GELU(), nn.Dropout(0.5), nn.Conv2d(16, 16, 1)) for _ in range(2)
        )

    @property
    def preprocessor(self) -> zoo.ImagePreprocessor:
        size = self.image_size

        def transform(image):
            pixels = np.asarray(image.resize((size, size)), dtype=np.float32) / 255
            return torch.from_numpy(pixels).permute(2, 0, 1) - 0.5  # [3, H, W]

        return zoo.ImagePreprocessor(transform, image_size=size, mean=(0.5,) * 3, std=(1.0,) * 3)

    def hidden_states_upto(self, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
        features = self.embed(pixel_values)  # [B, 16, H/8, W/8]
        for block in self.blocks[:layer]:
            features = features + block(features)  # [B, 16, H/8, W/8]
        return features.flatten(2).transpose(1, 2)  # [B, N, 16]


class DriftingTower(BatchNormTower):
    def __init__(self, config: zoo.VisionTowerConfig) -> None:
        super().__init__(config)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.calls += 1  # state that changes on every forward, frozen or not
        return super().forward(pixel_values)


@zoo.hookimpl
def zoo_register_vision_towers(register):
    register(zoo.VisionTowerSpec(name="tiny-bn-tower", factory=BatchNormTower, description="test: BatchNorm + dropout"))
    register(
        zoo.VisionTowerSpec(name="tiny-bn-drifter", factory=DriftingTower, description="test: changes when frozen")
    )
