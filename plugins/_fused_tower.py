"""The fused tower behind ``zoo_plugins.fused`` (imported by its factory, on the first build).

Fused vision towers (prismatic-vlms' DINOv2 + SigLIP): several towers, features concatenated per patch.

Each tower keeps its own preprocessing (size, mean, std) and its own ``select_layer`` / ``select``. The
fused preprocessor stacks the towers' inputs along channels, each in the top-left corner of a canvas
as large as the largest input (``[N, 3 * k, S, S]``), so that a batch stays one tensor; the fused tower
crops each tower's input back out exactly. The towers must give the same number of tokens (the patches
are then the same image regions when the grids are equal); ``hidden_size`` is the sum of their widths.

A composition names it like any tower::

    vision: {name: fused, towers: [{name: dinov2-large-14-reg, image_size: 384}, {name: siglip-so400m-14-384}]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from zoo.sdk import ConfigError, ContractError, ImagePreprocessor, VisionTower, build_component

__all__ = ["FusedPreprocessor", "FusedTower", "build_fused_tower"]


class FusedPreprocessor(ImagePreprocessor):
    """Runs each tower's own preprocessing and stacks the results along channels, zero-padded."""

    def __init__(self, parts: Sequence[ImagePreprocessor]) -> None:
        super().__init__(
            self._unused,
            image_size=max(p.image_size for p in parts),
            mean=[m for p in parts for m in p.mean],
            std=[s for p in parts for s in p.std],
        )
        self.parts = list(parts)

    @staticmethod
    def _unused(image: Any) -> torch.Tensor:
        raise TypeError("a fused preprocessor works on lists of images; call it with [image]")

    def __call__(self, images: Sequence[Any]) -> torch.Tensor:
        """``k`` towers' inputs for a list of PIL images, ``[N, 3 * k, S, S]``."""
        side = self.image_size
        canvas = torch.zeros(len(images), 3 * len(self.parts), side, side)  # [N, 3k, S, S]
        if not images:
            return canvas
        for i, part in enumerate(self.parts):
            pixels = part(images)  # [N, 3, s_i, s_i]
            canvas[:, 3 * i : 3 * i + 3, : pixels.shape[-2], : pixels.shape[-1]] = pixels
        return canvas

    def __repr__(self) -> str:
        return f"FusedPreprocessor({self.parts})"


class FusedTower(VisionTower):
    """Towers run side by side on the same image; features concatenated, ``[B, N, sum(D_i)]``.

    Args:
        towers: the towers, each built from its own config.
        names: their registry names (for messages and the contract).
    """

    source = "zoo"

    def __init__(self, towers: Sequence[VisionTower], names: Sequence[str]) -> None:
        tokens = [t.num_tokens for t in towers]
        if len(set(tokens)) != 1:
            raise ContractError(_unequal_tokens_message(towers, names))
        first = towers[0]
        super().__init__(
            hidden_size=sum(t.hidden_size for t in towers),
            num_prefix_tokens=0,  # each tower applies its own ``select``
            patch_size=first.patch_size,
            image_size=max(t.image_size for t in towers),
            num_layers=0,
            select_layer=0,
            select="patch",
        )
        self.towers = nn.ModuleList(towers)
        self.names = list(names)
        self._num_tokens = tokens[0]
        self._preprocessor = FusedPreprocessor([t.preprocessor for t in towers])

    @property
    def parts(self) -> list[VisionTower]:
        """The towers, in order."""
        return cast("list[VisionTower]", list(self.towers))

    # -- contract -------------------------------------------------------------------------------
    def grid_size(self, image_size: int | None = None) -> tuple[int, int]:
        """The patch grid the towers share (the first tower's)."""
        return self.parts[0].grid_size()

    @property
    def num_tokens(self) -> int:
        """Tokens per image, equal for every tower."""
        return self._num_tokens

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        """``(3 * k, S, S)``: every tower's input stacked along channels."""
        return (3 * len(self.towers), self.image_size, self.image_size)

    @property
    def fsdp_wrap_classes(self) -> tuple[type[nn.Module], ...]:
        """Block classes of every tower."""
        classes: list[type[nn.Module]] = []
        for tower in self.parts:
            classes += [c for c in tower.fsdp_wrap_classes if c not in classes]
        return tuple(classes)

    @property
    def preprocessor(self) -> ImagePreprocessor:
        """Each tower's own preprocessing, stacked."""
        return self._preprocessor

    def contract(self) -> dict[str, Any]:
        """The fused contract plus each tower's own."""
        return {
            **super().contract(),
            "tokens": self.num_tokens,
            "towers": [{"name": n, **t.contract()} for n, t in zip(self.names, self.parts)],
        }

    # -- compute --------------------------------------------------------------------------------
    def hidden_states_upto(self, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
        """The fused features: each tower stops at its own ``select_layer`` (``layer`` is always 0)."""
        return self.forward(pixel_values)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3 * k, S, S] -> [B, N, sum(D_i)]``."""
        features = []
        for i, tower in enumerate(self.parts):
            side = tower.image_size
            features.append(tower(pixel_values[:, 3 * i : 3 * i + 3, :side, :side]))  # [B, N, D_i]
        return torch.cat(features, dim=-1)  # [B, N, sum(D_i)]


def build_fused_tower(config: Any) -> FusedTower:
    """Factory of the ``fused`` tower: builds every entry of ``config.towers`` by name (``zoo.sdk.build_component``).

    Each entry is a tower name or a mapping with ``name`` and that tower's own options; messages name
    ``model.vision.towers[i]``.
    """
    entries = list(config.towers or [])
    if len(entries) < 2:
        raise ConfigError(f"model.vision.towers = {entries!r}: a fused tower needs at least two towers")
    towers, names = [], []
    for i, entry in enumerate(entries):
        key = f"model.vision.towers[{i}]"
        options = {"name": entry} if isinstance(entry, str) else dict(entry) if isinstance(entry, Mapping) else None
        if options is None or not isinstance(options.get("name"), str):
            raise ConfigError(f"{key} = {entry!r}: expected a tower name or a mapping with a 'name' key")
        name = options.pop("name")
        tower = build_component("vision", name, options, key=key, dtype=config.dtype or "float32")
        if isinstance(tower, FusedTower):
            raise ConfigError(f"{key}.name = {name!r}: a fused tower cannot contain another fused tower")
        towers.append(tower)
        names.append(name)
    return FusedTower(towers, names)  # type: ignore[arg-type]


def _unequal_tokens_message(towers: Sequence[VisionTower], names: Sequence[str]) -> str:
    described = ", ".join(
        f"towers[{i}] {name!r} gives {t.num_tokens} ({'x'.join(map(str, t.grid_size()))} patches of {t.patch_size} px "
        f"at {t.image_size} px)"
        for i, (name, t) in enumerate(zip(names, towers))
    )
    first = towers[0]
    hints = []
    for i, tower in enumerate(towers[1:], start=1):
        if tower.num_tokens != first.num_tokens and tower.select == "patch" and first.select == "patch":
            side = first.grid_size()[0] * tower.patch_size
            hints.append(f"set model.vision.towers[{i}].image_size: {side}")
    fix = "; ".join(hints) if hints else "give every tower the same model.vision.towers[i].select and patch grid"
    return f"model.vision (fused): the towers must give the same number of tokens per image: {described}; {fix}"
