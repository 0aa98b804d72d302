"""Token-wise projectors: identity, the LLaVA GELU MLP (``linear`` is its one-layer case), pixel shuffle.

Private module of ``zoo_plugins.projectors`` (which registers them); imports only zoo's public interfaces.

Parameter names of :class:`MlpProjector` follow transformers' ``LlavaMultiModalProjector`` so that an
``mlp2x-gelu`` state dict copies into ``multi_modal_projector.*`` of a ``LlavaForConditionalGeneration``
without renaming::

    zoo (mlpNx-gelu)            LLaVA repo (mm_projector, nn.Sequential)   transformers Llava
    linear_1.{weight,bias}      mm_projector.0.{weight,bias}              multi_modal_projector.linear_1
    linear_2.{weight,bias}      mm_projector.2.{weight,bias}              multi_modal_projector.linear_2
    linear_k.{weight,bias}      mm_projector.{2k-2}.{weight,bias}         (no layout for k > 2)

A deeper MLP (``mlp3x-gelu`` ...) continues the same scheme, ``linear_k`` <-> Sequential index
``2(k-1)``; transformers' Llava has no layout for more than two linears.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.errors import ContractError
from zoo.sdk import Projector

__all__ = ["IdentityProjector", "MlpProjector", "PixelShuffleProjector", "pixel_shuffle_problem", "space_to_depth"]


class IdentityProjector(Projector):
    """Passes tower features through unchanged; only valid when the tower width equals the LM width.

    Raises:
        ContractError: ``in_dim != out_dim`` (naming both numbers).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        if in_dim != out_dim:
            raise ContractError(
                f"projector 'identity' cannot map in_dim={in_dim} (vision tower hidden size) to out_dim={out_dim} "
                "(language model hidden size): identity needs them equal; choose a projector that changes the "
                "width, e.g. 'linear' or 'mlp2x-gelu'"
            )
        super().__init__(in_dim, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, N, D] -> [B, N, D]``."""
        return features


class MlpProjector(Projector):
    """LLaVA's ``mlp{depth}x_gelu``: ``Linear(in, out)`` then ``depth - 1`` times ``GELU, Linear(out, out)``.

    Weights are initialised from N(0, 0.01) and biases to zero (the reference design). ``depth=1`` is
    LLaVA's ``linear`` projector.

    Args:
        in_dim: tower feature size.
        out_dim: LM hidden size.
        depth: number of linear layers (>= 1).
        init_std: std of the normal weight init.
    """

    def __init__(self, in_dim: int, out_dim: int, depth: int = 2, *, init_std: float = 0.01) -> None:
        super().__init__(in_dim, out_dim)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.linear_1 = nn.Linear(in_dim, out_dim)
        if depth > 1:
            self.act = nn.GELU()
        for index in range(2, depth + 1):
            self.add_module(f"linear_{index}", nn.Linear(out_dim, out_dim))
        for layer in self.linears:
            nn.init.normal_(layer.weight, mean=0.0, std=init_std)
            nn.init.zeros_(layer.bias)

    @property
    def linears(self) -> list[nn.Linear]:
        """The linear layers in order (``linear_1`` ... ``linear_{depth}``)."""
        return [getattr(self, f"linear_{index}") for index in range(1, self.depth + 1)]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, N, in_dim] -> [B, N, out_dim]``."""
        linears = self.linears
        hidden = linears[0](features)  # [B, N, out_dim]
        for layer in linears[1:]:
            hidden = layer(self.act(hidden))
        return hidden

    def contract(self) -> dict[str, Any]:
        """The declared contract plus the depth."""
        return {**super().contract(), "depth": self.depth}


def pixel_shuffle_problem(num_input_tokens: int, factor: int) -> str | None:
    """Why ``num_input_tokens`` cannot be pixel-shuffled by ``factor`` per side, or ``None`` if it can."""
    side = round(num_input_tokens**0.5)
    if num_input_tokens < 1 or side * side != num_input_tokens:
        return (
            f"pixel shuffle needs a square grid of tokens, and n_in={num_input_tokens} is not a square "
            f"(grid side {num_input_tokens**0.5:.2f}; nearest square {side}x{side}={side * side}); "
            f"factor={factor}; use select: patch on the tower so that prefix (CLS) tokens are dropped"
        )
    if side % factor:
        return (
            f"pixel shuffle needs the grid side divisible by the factor: n_in={num_input_tokens} tokens form a "
            f"{side}x{side} grid, and side {side} is not divisible by factor={factor}; choose a factor that "
            f"divides {side} or another image size"
        )
    return None


def space_to_depth(features: torch.Tensor, factor: int) -> torch.Tensor:
    """Fold each ``factor x factor`` block of the square token grid into the channels.

    ``[B, N, D] -> [B, N / factor^2, factor^2 * D]``; output tokens are in row-major order of the
    reduced grid and channels are ordered ``(row offset, column offset, D)``.
    """
    batch, tokens, dim = features.shape
    problem = pixel_shuffle_problem(tokens, factor)
    if problem:
        raise ContractError(f"projector 'pixel-shuffle' got {tokens} tokens: {problem}")
    side = round(tokens**0.5)
    small = side // factor
    grid = features.reshape(batch, small, factor, small, factor, dim)  # [B, h, f, w, f, D]
    grid = grid.permute(0, 1, 3, 2, 4, 5)  # [B, h, w, f, f, D]
    return grid.reshape(batch, small * small, factor * factor * dim)  # [B, N/f^2, f^2*D]


class PixelShuffleProjector(Projector):
    """InternVL / Idefics3 token reduction: space-to-depth by ``factor`` per side, then an MLP.

    The MLP is InternVL's ``mlp1``: ``LayerNorm(f^2 * in_dim), Linear(f^2 * in_dim, out_dim), GELU,
    Linear(out_dim, out_dim)``, kept as ``nn.Sequential`` named ``mlp`` so its keys (``mlp.0``,
    ``mlp.1``, ``mlp.3``) map one to one onto InternVL's ``mlp1.{0,1,3}``.

    Args:
        in_dim: tower feature size.
        out_dim: LM hidden size.
        factor: reduction per side (``576`` tokens with ``factor=2`` -> ``144``).
    """

    requires_square_grid = True

    def __init__(self, in_dim: int, out_dim: int, factor: int = 2) -> None:
        super().__init__(in_dim, out_dim)
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = factor
        wide = in_dim * factor * factor
        self.mlp = nn.Sequential(nn.LayerNorm(wide), nn.Linear(wide, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def check_input_tokens(self, num_input_tokens: int) -> str | None:
        """A message naming ``n_in``, the grid side and the factor when the tokens cannot be shuffled."""
        return pixel_shuffle_problem(num_input_tokens, self.factor)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        """``n_in / factor^2``; a ContractError if ``n_in`` is not a square grid divisible by the factor."""
        problem = self.check_input_tokens(num_input_tokens)
        if problem:
            raise ContractError(f"projector 'pixel-shuffle': {problem}")
        return num_input_tokens // (self.factor * self.factor)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, N, in_dim] -> [B, N / factor^2, out_dim]``."""
        folded = space_to_depth(features, self.factor)  # [B, N/f^2, f^2*in_dim]
        return self.mlp(folded)  # [B, N/f^2, out_dim]

    def contract(self) -> dict[str, Any]:
        """The declared contract plus the factor."""
        return {**super().contract(), "factor": self.factor}
