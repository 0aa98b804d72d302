"""A local plugin file for tests: registers a projector named ``test-double``."""

from torch import nn

import zoo


class Double(zoo.Projector):
    def __init__(self, config):
        super().__init__(config.in_dim, config.out_dim)
        self.proj = nn.Linear(config.in_dim, config.out_dim)

    def forward(self, x):
        return self.proj(x) * 2  # [B, N, out]


@zoo.hookimpl
def zoo_register_projectors(register):
    register(zoo.ProjectorSpec(name="test-double", factory=Double, description="test plugin"))
