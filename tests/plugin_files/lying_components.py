"""Throwaway components whose declared contract is false (the builder must catch them on meta)."""

import torch
from torch import nn

import zoo


class LyingTower(zoo.VisionTower):
    """Declares width 32 but outputs 48 features per patch (16 patches of 8x8 on a 32x32 image)."""

    def __init__(self, config):
        super().__init__(hidden_size=32, num_prefix_tokens=0, patch_size=8, image_size=32, num_layers=1,
                         select_layer=-1)  # fmt: skip
        self.proj = nn.Linear(3 * 8 * 8, 48)

    @property
    def preprocessor(self):
        return zoo.ImagePreprocessor(lambda image: torch.zeros(3, 32, 32), image_size=32, mean=(0, 0, 0),
                                     std=(1, 1, 1))  # fmt: skip

    def hidden_states_upto(self, pixel_values, layer):
        patches = pixel_values.unfold(2, 8, 8).unfold(3, 8, 8)  # [B, 3, 4, 4, 8, 8]
        patches = patches.permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)  # [B, 16, 192]
        return self.proj(patches)  # [B, 16, 48]


class LyingProjector(zoo.Projector):
    """Declares 4 output tokens but keeps all of its input tokens."""

    def __init__(self, config):
        super().__init__(config.in_dim, config.out_dim)
        self.proj = nn.Linear(config.in_dim, config.out_dim)

    def num_output_tokens(self, num_input_tokens):
        return 4

    def forward(self, features):
        return self.proj(features)  # [B, N, out_dim]: N tokens, not 4


@zoo.hookimpl
def zoo_register_vision_towers(register):
    register(zoo.VisionTowerSpec(name="lying-tower", factory=LyingTower, description="declares 32, outputs 48"))


@zoo.hookimpl
def zoo_register_projectors(register):
    register(zoo.ProjectorSpec(name="lying-projector", factory=LyingProjector, description="declares 4 tokens"))
