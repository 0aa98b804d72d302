"""An example zoo plugin: a two-layer ReLU projector, registered through the ``zoo`` entry point."""

from __future__ import annotations

from torch import nn

import zoo


class ReluProjector(zoo.Projector):
    """Linear -> ReLU -> Linear; keeps the number of tokens."""

    def __init__(self, config: zoo.ProjectorConfig) -> None:
        super().__init__(config.in_dim, config.out_dim)
        self.net = nn.Sequential(
            nn.Linear(config.in_dim, config.out_dim), nn.ReLU(), nn.Linear(config.out_dim, config.out_dim)
        )

    def forward(self, features):
        return self.net(features)  # [B, N, in_dim] -> [B, N, out_dim]


@zoo.hookimpl
def zoo_register_projectors(register):
    register(
        zoo.ProjectorSpec(
            name="example-mlp-relu", factory=ReluProjector, description="example plugin: 2-layer ReLU MLP"
        )
    )
