"""The projector of an any-resolution composition: any projector plus LLaVA-NeXT's ``image_newline``.

``image_newline`` is a learned vector in the LM's space that ends every row of an image's stitched
token map (:mod:`zoo.core.anyres`). It lives with the projector because it is trained, saved and loaded
exactly like it: the projector's ``train`` policy, learning rate and checkpoint file cover it.
The wrapped projector computes as before (``inner``); the stitching itself is ``MultiModal``'s.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from zoo.sdk.interfaces import Projector

__all__ = ["AnyResProjector"]


class AnyResProjector(Projector):
    """``inner`` (any projector) and, when ``newline``, an ``image_newline`` parameter ``[out_dim]``.

    Args:
        inner: the composition's projector (``mlp2x-gelu``, ``pixel-shuffle``...).
        newline: hold a learned newline vector (initialised like LLaVA-NeXT: ``N(0, 1 / out_dim)``).
    """

    def __init__(self, inner: Projector, *, newline: bool = True) -> None:
        super().__init__(inner.in_dim, inner.out_dim)
        self.inner = inner
        self.requires_square_grid = inner.requires_square_grid
        self.keeps_patch_layout = inner.keeps_patch_layout
        self.image_newline: nn.Parameter | None = None
        if newline:
            dtype = next((p.dtype for p in inner.parameters()), torch.float32)
            device = next((p.device for p in inner.parameters()), None)
            std = 1 / math.sqrt(inner.out_dim)
            self.image_newline = nn.Parameter(torch.randn(inner.out_dim, dtype=dtype, device=device) * std)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        """Tokens per tile: the inner projector's."""
        return self.inner.num_output_tokens(num_input_tokens)

    def check_input_tokens(self, num_input_tokens: int) -> str | None:
        """The inner projector's requirement."""
        return self.inner.check_input_tokens(num_input_tokens)

    def contract(self) -> dict[str, Any]:
        """The inner projector's contract and whether a newline vector is held."""
        return {**self.inner.contract(), "image_newline": self.image_newline is not None}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[tiles, N, in_dim] -> [tiles, M, out_dim]`` (the inner projector)."""
        return self.inner(features)
