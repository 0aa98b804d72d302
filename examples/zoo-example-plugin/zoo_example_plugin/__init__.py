"""An example zoo plugin: a two-layer ReLU projector, registered through the ``zoo`` entry point."""

from __future__ import annotations

from torch import nn

from zoo.sdk import Projector, ProjectorConfig, ProjectorSpec, hookimpl


class ReluProjector(Projector):
    """Linear -> ReLU -> Linear; keeps the number of tokens."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__(config.in_dim, config.out_dim)
        self.net = nn.Sequential(
            nn.Linear(config.in_dim, config.out_dim), nn.ReLU(), nn.Linear(config.out_dim, config.out_dim)
        )

    def forward(self, features):
        return self.net(features)  # [B, N, in_dim] -> [B, N, out_dim]


@hookimpl
def zoo_register_projectors(register):
    register(
        ProjectorSpec(name="example-mlp-relu", factory=ReluProjector, description="example plugin: 2-layer ReLU MLP")
    )
