"""Attention-based projectors with a fixed token budget: the Qwen-VL / MiniCPM-V resampler and Flamingo's
Perceiver resampler.

Private module of ``zoo_plugins.projectors`` (which registers them); imports only zoo's public interfaces.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ContractError
from zoo.sdk import Projector

__all__ = ["CrossAttentionResampler", "PerceiverResampler", "sincos_2d"]


def sincos_2d(dim: int, side: int, *, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2D sin-cos position embeddings of a ``side x side`` grid, ``[side * side, dim]`` (float32).

    The first half of the channels encodes the row, the second half the column, each as
    ``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000^(-k / (dim / 4))`` (MAE / Qwen-VL). When
    ``dim`` is not a multiple of 4 the last ``dim % 4`` channels are zero.
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32, device=device) / max(quarter, 1))  # [q]
    coords = torch.arange(side, dtype=torch.float32, device=device)  # [S]
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # [S, S] each
    rows = rows.reshape(-1, 1) * omega  # [S*S, q]
    cols = cols.reshape(-1, 1) * omega  # [S*S, q]
    embed = torch.cat([rows.sin(), rows.cos(), cols.sin(), cols.cos()], dim=1)  # [S*S, 4q]
    return F.pad(embed, (0, dim - 4 * quarter))  # [S*S, dim]


def _square_side(num_tokens: int, name: str) -> int:
    side = round(num_tokens**0.5)
    if side * side != num_tokens:
        raise ContractError(
            f"projector {name!r} got {num_tokens} tokens: it needs a square grid of tokens for its 2D positions, "
            f"and {num_tokens} is not a square; use select: patch on the tower so that prefix tokens are dropped"
        )
    return side


class CrossAttentionResampler(Projector):
    """Qwen-VL / MiniCPM-V resampler: ``num_queries`` learned queries cross-attend to the image tokens.

    One ``nn.MultiheadAttention`` (width ``out_dim``); keys are the tower tokens projected by ``kv_proj``
    (bias-free ``Linear(in_dim, out_dim)``, identity when the widths agree), layer-normed, plus fixed 2D
    sin-cos positions of the square token grid (MiniCPM-V: queries carry no position, so any number of
    queries works); values are the same tokens without positions. Then ``ln_post`` and ``x @ proj``.
    Module names follow Qwen-VL's ``Resampler`` (``query``, ``kv_proj``, ``attn``, ``ln_q``, ``ln_kv``)
    and its vision tower's ``ln_post`` / ``proj``.

    Args:
        in_dim: tower feature size.
        out_dim: LM hidden size.
        num_queries: learned queries = tokens out per image.
        num_heads: attention heads; must divide ``out_dim``.
    """

    requires_square_grid = True
    keeps_patch_layout = False  # learned queries: no place in the image

    def __init__(self, in_dim: int, out_dim: int, num_queries: int, num_heads: int) -> None:
        super().__init__(in_dim, out_dim)
        if out_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide out_dim={out_dim}")
        self.num_queries = num_queries
        self.num_heads = num_heads
        self.query = nn.Parameter(torch.empty(num_queries, out_dim))
        self.kv_proj = nn.Linear(in_dim, out_dim, bias=False) if in_dim != out_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(out_dim, num_heads, batch_first=True)
        self.ln_q = nn.LayerNorm(out_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(out_dim, eps=1e-6)
        self.ln_post = nn.LayerNorm(out_dim, eps=1e-6)
        self.proj = nn.Parameter(torch.empty(out_dim, out_dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        if isinstance(self.kv_proj, nn.Linear):
            nn.init.trunc_normal_(self.kv_proj.weight, std=0.02)
        nn.init.normal_(self.proj, std=out_dim**-0.5)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        """Always ``num_queries``."""
        return self.num_queries

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, N, in_dim] -> [B, num_queries, out_dim]`` (``N`` a square)."""
        side = _square_side(features.shape[1], "resampler")
        keys = self.ln_kv(self.kv_proj(features))  # [B, N, out_dim]
        positions = sincos_2d(self.out_dim, side, device=features.device).to(keys.dtype)  # [N, out_dim]
        queries = self.ln_q(self.query).expand(features.shape[0], -1, -1)  # [B, Q, out_dim]
        out, _ = self.attn(queries, keys + positions, keys, need_weights=False)  # [B, Q, out_dim]
        return self.ln_post(out) @ self.proj  # [B, Q, out_dim]

    def contract(self) -> dict[str, Any]:
        """The declared contract plus queries and heads."""
        return {**super().contract(), "num_queries": self.num_queries, "num_heads": self.num_heads}


class PerceiverAttention(nn.Module):
    """Flamingo's attention: latents attend to ``concat(media, latents)`` (pre-norm, bias-free projections)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        return x.reshape(batch, tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)  # [B, h, T, d]

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """``media [B, N, D]``, ``latents [B, Q, D]`` -> ``[B, Q, D]``."""
        media = self.norm_media(media)
        latents = self.norm_latents(latents)
        context = torch.cat([media, latents], dim=1)  # [B, N+Q, D]
        keys, values = self.to_kv(context).chunk(2, dim=-1)  # [B, N+Q, D] each
        out = F.scaled_dot_product_attention(
            self._heads(self.to_q(latents)), self._heads(keys), self._heads(values)
        )  # [B, h, Q, d]
        out = out.transpose(1, 2).flatten(2)  # [B, Q, D]
        return self.to_out(out)


class PerceiverBlock(nn.Module):
    """One Perceiver layer: attention then a GELU feed-forward, both residual on the latents."""

    def __init__(self, dim: int, num_heads: int, ff_mult: int) -> None:
        super().__init__()
        self.attn = PerceiverAttention(dim, num_heads)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, dim * ff_mult, bias=False),
            nn.GELU(),
            nn.Linear(dim * ff_mult, dim, bias=False),
        )

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """``[B, Q, D]`` latents updated from ``media [B, N, D]``."""
        latents = latents + self.attn(media, latents)
        return latents + self.ff(latents)


class PerceiverResampler(Projector):
    """Flamingo's Perceiver resampler at the tower width, then ``norm`` and ``proj`` to ``out_dim``.

    ``depth`` blocks of (PerceiverAttention over ``concat(x, latents)`` + FFW), ``num_queries`` learned
    latents (N(0, 1) like Flamingo's reference code). Flamingo's per-frame time embedding is omitted: one
    image is one frame. Any number of input tokens works; none are assumed to be a grid.

    Args:
        in_dim: tower feature size (the width the latents live at).
        out_dim: LM hidden size.
        num_queries: latents = tokens out per image.
        depth: number of blocks.
        num_heads: attention heads; must divide ``in_dim``.
        ff_mult: width multiplier of the feed-forward.
    """

    keeps_patch_layout = False  # learned latents: no place in the image

    def __init__(self, in_dim: int, out_dim: int, num_queries: int, depth: int, num_heads: int, ff_mult: int = 4):
        super().__init__(in_dim, out_dim)
        if in_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide in_dim={in_dim}")
        self.num_queries = num_queries
        self.num_heads = num_heads
        self.depth = depth
        self.latents = nn.Parameter(torch.empty(num_queries, in_dim))
        self.layers = nn.ModuleList(PerceiverBlock(in_dim, num_heads, ff_mult) for _ in range(depth))
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim)
        nn.init.normal_(self.latents)
        nn.init.normal_(self.proj.weight, std=1 / math.sqrt(in_dim))
        nn.init.zeros_(self.proj.bias)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        """Always ``num_queries``."""
        return self.num_queries

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, N, in_dim] -> [B, num_queries, out_dim]``."""
        latents = self.latents.expand(features.shape[0], -1, -1)  # [B, Q, in_dim]
        for layer in self.layers:
            latents = layer(features, latents)
        return self.proj(self.norm(latents))  # [B, Q, out_dim]

    def contract(self) -> dict[str, Any]:
        """The declared contract plus latents, depth and heads."""
        return {
            **super().contract(),
            "num_queries": self.num_queries,
            "depth": self.depth,
            "num_heads": self.num_heads,
        }
