"""A ConvNeXt vision tower (transformers ``ConvNextModel``) whose stages differ in width and stride."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import ConvNextConfig, ConvNextModel

from zoo.sdk import ImagePreprocessor, VisionTower, VisionTowerConfig, make_hf_config


class ConvNextTower(VisionTower):
    """``select_layer`` indexes [stem, stage 1, ..., stage S]: the selected one sets ``hidden_size``
    (its width) and ``patch_size`` (its stride); every position of its feature map is a token."""

    source = "transformers"

    def __init__(self, model: ConvNextModel, *, image_size: int, select_layer: int, select: str) -> None:
        config = model.config
        # validates select_layer against the stages, then the selected stage's width and stride are the contract
        super().__init__(hidden_size=0, num_prefix_tokens=0, patch_size=1, image_size=image_size,
                         num_layers=config.num_stages, select_layer=select_layer, select=select)  # fmt: skip
        widths = [config.hidden_sizes[0], *config.hidden_sizes]  # the stem already has stage 1's width
        strides = [config.patch_size * 2 ** max(stage - 1, 0) for stage in range(config.num_stages + 1)]
        self.hidden_size, self.patch_size = widths[self.layer_index], strides[self.layer_index]
        self.model = model

    @classmethod
    def build(cls, config: VisionTowerConfig) -> ConvNextTower:
        hf_config = make_hf_config(ConvNextConfig, config.arch, "model.vision.arch")  # a typo is named
        model = ConvNextModel(hf_config).eval()  # on the device zoo builds on: meta allocates nothing
        return cls(model, image_size=config.image_size or hf_config.image_size,
                   select_layer=config.select_layer, select=config.select)  # fmt: skip

    @property
    def preprocessor(self) -> ImagePreprocessor:
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet, like ConvNeXt's checkpoints
        size = self.image_size

        def transform(image: Image.Image) -> torch.Tensor:
            pixels = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255
            tensor = torch.from_numpy(pixels).permute(2, 0, 1)  # [3, H, W]
            return (tensor - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]

        return ImagePreprocessor(transform, image_size=size, mean=mean, std=std)

    @property
    def fsdp_wrap_classes(self) -> tuple[type[torch.nn.Module], ...]:
        return (type(self.model.encoder.stages[0]),)

    def hidden_states_upto(self, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
        features = self.model.embeddings(pixel_values)  # [B, C_0, H/4, W/4]
        for stage in self.model.encoder.stages[:layer]:
            features = stage(features)  # [B, C_i, H/s_i, W/s_i]
        return features.flatten(2).transpose(1, 2)  # [B, N, C]
