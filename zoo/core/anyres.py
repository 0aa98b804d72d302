"""Any-resolution tiling (LLaVA-NeXT): the one place where an image's size becomes its token count.

An image of ``height x width`` pixels is shown to the tower as

1. a *global view*: the whole image resized to one ``S x S`` tile (``S``: the tower's ``image_size``);
2. a *grid of tiles*: the image resized (aspect kept) into the best-fitting ``grid_pinpoints`` resolution,
   padded to it (black, centred) and cut into ``rows x cols`` tiles of ``S x S``.

Every tile goes through the tower and the projector (``M = g * g`` tokens, a ``g x g`` grid, per tile).
The grid tiles' tokens are stitched back into one ``rows*g x cols*g`` map, the rows / columns that only
cover padding are cut away ("unpad", back to the image's aspect ratio), and a learned ``image_newline``
vector ends every row. An image occupies::

    M (global view) + fh * fw (unpadded map) + fh (one newline per row, when ``newline``)

positions, computed by :meth:`AnyResLayout.image_tokens` and nowhere else: the processor expands each
placeholder with it and ``MultiModal`` checks the placeholder count with it. The math is the one of
LLaVA-NeXT and transformers' ``LlavaNextForConditionalGeneration`` (``select_best_resolution``,
``unpad_image``, ``pack_image_features``), so the counts and the features agree with it exactly.

A composition turns it on for any tower and projector whose per-tile output is a square grid::

    vision: {name: clip-vit-l-14-336, anyres: {grid_pinpoints: [[336, 672], [672, 336], [672, 672]]}}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from zoo.errors import ConfigError, ContractError, ZooError, suggest
from zoo.sdk.limits import MAX_PINPOINTS, InputLimitError, brief

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "DEFAULT_GRIDS",
    "MAX_SIDE",
    "AnyResConfig",
    "AnyResLayout",
    "describe_image_tokens",
    "parse_anyres",
    "select_best_resolution",
]

# LLaVA-NeXT's default pinpoints in tiles (rows, cols): 1x2, 2x1, 2x2, 3x1, 1x3 (x 336 px in llava-v1.6)
DEFAULT_GRIDS = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))
_KEYS = ("grid_pinpoints", "newline")
MAX_SIDE = 65536  # pixels per side of a pinpoint (beyond, one image outgrows any LM's context)


@dataclass(frozen=True)
class AnyResConfig:
    """``model.vision.anyres``: the options a user writes.

    Attributes:
        grid_pinpoints: candidate resolutions ``[height, width]`` in pixels, each a multiple of the tower's
            ``image_size``; ``None``: LLaVA-NeXT's five (``DEFAULT_GRIDS`` tiles of the tower's size).
        newline: end every row of the stitched map with the learned ``image_newline`` (LLaVA-NeXT does).
    """

    grid_pinpoints: tuple[tuple[int, int], ...] | None = None
    newline: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :func:`parse_anyres` reads back to an equal config."""
        data: dict[str, Any] = {"newline": self.newline}
        if self.grid_pinpoints is not None:
            data["grid_pinpoints"] = [list(p) for p in self.grid_pinpoints]
        return data


def parse_anyres(value: Any, *, key: str = "model.vision.anyres", source: str = "<config>") -> AnyResConfig:
    """Validate ``model.vision.anyres`` (a mapping, or ``true`` for the defaults).

    Every error names the key path, the bad value and what would work.

    Example:
        >>> parse_anyres({"grid_pinpoints": [[336, 672], [672, 336]]}).grid_pinpoints
        ((336, 672), (672, 336))
    """
    if value is True:
        return AnyResConfig()
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{source}: {key} = {brief(value)}: expected a mapping such as "
            "{grid_pinpoints: [[336, 672], [672, 336], [672, 672]], newline: true} (or true for the defaults)"
        )
    for name in value:
        if name not in _KEYS:
            word = str(name)[:100]
            raise ConfigError(f"{source}: unknown key {key}.{word}; {suggest(word, _KEYS)}")
    newline = value.get("newline", True)
    if not isinstance(newline, bool):
        raise ConfigError(f"{source}: {key}.newline = {brief(newline)} has the wrong type; expected true/false")
    raw = value.get("grid_pinpoints")
    if raw is None:
        return AnyResConfig(newline=newline)
    if not isinstance(raw, list | tuple) or not raw:
        raise ConfigError(
            f"{source}: {key}.grid_pinpoints = {brief(raw)}: expected a non-empty list of [height, width] pairs "
            "in pixels, such as [[336, 672], [672, 336], [672, 672]]"
        )
    if len(raw) > MAX_PINPOINTS:
        raise InputLimitError(
            f"{source}: {key}.grid_pinpoints lists {len(raw):,} resolutions; at most {MAX_PINPOINTS} are accepted"
        )
    pinpoints = []
    for i, point in enumerate(raw):
        ok = (
            isinstance(point, list | tuple)
            and len(point) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in point)
        )
        if not ok:
            raise ConfigError(
                f"{source}: {key}.grid_pinpoints[{i}] = {brief(point)}: expected [height, width], two integers in "
                f"1..{MAX_SIDE} (pixels, multiples of the tower's image_size), such as [336, 672]"
            )
        pinpoints.append((int(point[0]), int(point[1])))
    if len(set(pinpoints)) != len(pinpoints):
        raise ConfigError(f"{source}: {key}.grid_pinpoints = {brief(raw)} lists a resolution twice")
    return AnyResConfig(grid_pinpoints=tuple(pinpoints), newline=newline)


def describe_image_tokens(tokens: int | Mapping[str, int]) -> str:
    """``576``, or for any-res ``any-res 1752..2928 (336x672: 1752, ...)`` (tokens by pinpoint ``HxW``)."""
    if not isinstance(tokens, Mapping):
        return str(tokens)
    low, high = min(tokens.values()), max(tokens.values())
    return f"any-res {low}..{high} (" + ", ".join(f"{k}: {v}" for k, v in tokens.items()) + ")"


def select_best_resolution(size: tuple[int, int], pinpoints: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The pinpoint ``(height, width)`` that keeps most of an image of ``size = (height, width)``.

    LLaVA-NeXT's rule: the largest effective resolution (the image scaled to fit, aspect kept, never
    counted above its own pixel count); among equals, the least padding.
    """
    height, width = size
    best, best_effective, best_wasted = pinpoints[0], -1, math.inf
    for target_h, target_w in pinpoints:
        scale = min(target_w / width, target_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = target_w * target_h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (target_h, target_w), effective, wasted
    return best


def _fit_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of an image of ``size`` resized into ``target`` with its aspect kept (rounded up)."""
    height, width = size
    target_h, target_w = target
    if target_w / width < target_h / height:
        return min(math.ceil(height * target_w / width), target_h), target_w
    return target_h, min(math.ceil(width * target_h / height), target_w)


@dataclass(frozen=True)
class AnyResLayout:
    """The resolved tiling of a composition: pinpoints in pixels, tile side, tokens per tile.

    Attributes:
        pinpoints: candidate resolutions ``(height, width)``, multiples of ``tile_size``.
        tile_size: side ``S`` of a tile in pixels (the tower's input).
        grid: ``g``, side of the square token grid one tile becomes after the projector.
        newline: a learned newline token ends every row of the stitched map.
    """

    pinpoints: tuple[tuple[int, int], ...]
    tile_size: int
    grid: int
    newline: bool = True

    @classmethod
    def resolve(
        cls,
        config: AnyResConfig,
        *,
        tile_size: int,
        tile_tokens: int,
        names: Mapping[str, str],
        source: str,
        keeps_patch_layout: bool = True,
    ) -> AnyResLayout:
        """Check ``config`` against the tower's tile size and the projector's tokens per tile.

        ``keeps_patch_layout``: the projector's tokens keep their place in the image
        (:attr:`zoo.sdk.interfaces.Projector.keeps_patch_layout`); stitching and unpadding need it.

        Raises:
            ConfigError: a pinpoint that is not a whole number of tiles (names the key and valid values).
            ContractError: a projector whose tokens per tile are not a square grid or have no place in the
                image (names both components).
        """
        if not keeps_patch_layout:
            raise ContractError(
                f"{source}: model.vision.anyres stitches each tile's tokens by their place in the image and crops "
                f"the padding away, but projector {names['projector']!r} (model.projector.name) outputs learned "
                "queries that have no place in the image; choose a projector that keeps the patch layout "
                "(mlp2x-gelu, linear, identity, pixel-shuffle) or drop model.vision.anyres"
            )
        key = "model.vision.anyres.grid_pinpoints"
        pinpoints = config.grid_pinpoints or tuple((r * tile_size, c * tile_size) for r, c in DEFAULT_GRIDS)
        for i, (height, width) in enumerate(pinpoints):
            if height % tile_size or width % tile_size:
                near = [max(1, round(v / tile_size)) * tile_size for v in (height, width)]
                raise ConfigError(
                    f"{source}: {key}[{i}] = {[height, width]}: each side must be a whole number of tiles of "
                    f"{tile_size} px (model.vision {names['vision']!r} image_size); valid: multiples of {tile_size}, "
                    f"such as {near}"
                )
        grid = math.isqrt(tile_tokens)
        if grid * grid != tile_tokens:
            raise ContractError(
                f"{source}: model.vision.anyres stitches each tile's tokens back into a square map, but projector "
                f"{names['projector']!r} (model.projector.name) gives {tile_tokens} tokens per tile of vision tower "
                f"{names['vision']!r}, which is not a square grid; set model.vision.select: patch (drop the CLS "
                "token) or choose a token-wise or pixel-shuffle projector"
            )
        return cls(tuple(pinpoints), tile_size, grid, config.newline)

    # -- sizes ------------------------------------------------------------------------------------
    @property
    def tile_tokens(self) -> int:
        """``M``: tokens of one tile (and of the global view)."""
        return self.grid * self.grid

    @property
    def max_tiles(self) -> int:
        """Tiles of the largest pinpoint plus the global view."""
        return max(h * w for h, w in self.pinpoints) // self.tile_size**2 + 1

    def best_resolution(self, height: int, width: int) -> tuple[int, int]:
        """The pinpoint ``(height, width)`` an image of that size is fitted into."""
        return select_best_resolution((height, width), self.pinpoints)

    def tile_grid(self, height: int, width: int) -> tuple[int, int]:
        """``(rows, cols)`` of tiles for an image of ``height x width`` pixels."""
        best_h, best_w = self.best_resolution(height, width)
        return best_h // self.tile_size, best_w // self.tile_size

    def num_tiles(self, height: int, width: int) -> int:
        """Tiles the tower sees for such an image: the grid plus the global view."""
        rows, cols = self.tile_grid(height, width)
        return rows * cols + 1

    def unpadded_crop(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` of the stitched token map that covers the image, not the padding."""
        rows, cols = self.tile_grid(height, width)
        map_h, map_w = rows * self.grid, cols * self.grid
        if width / height > map_w / map_h:  # wider than the map: padding above and below
            new_h = int(round(height * (map_w / width), 7))
            pad = (map_h - new_h) // 2
            return pad, map_h - pad, 0, map_w
        new_w = int(round(width * (map_h / height), 7))
        pad = (map_w - new_w) // 2
        return 0, map_h, pad, map_w - pad

    def image_tokens(self, height: int, width: int) -> int:
        """Positions an image of ``height x width`` pixels occupies: THE count (processor and runtime)."""
        if height < 1 or width < 1:
            raise ZooError(f"image size {[height, width]} is empty; an image has at least 1 x 1 pixels")
        top, bottom, left, right = self.unpadded_crop(int(height), int(width))
        rows = bottom - top
        return self.tile_tokens + rows * (right - left) + (rows if self.newline else 0)

    def tokens_by_pinpoint(self) -> dict[str, int]:
        """Tokens of an image exactly the size of each pinpoint (``"HxW" -> tokens``), for the contract."""
        return {f"{h}x{w}": self.image_tokens(h, w) for h, w in self.pinpoints}

    @property
    def max_tokens(self) -> int:
        """The most positions one image can take (an image with a pinpoint's aspect ratio)."""
        return max(self.tokens_by_pinpoint().values())

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the contract and manifests."""
        return {
            "grid_pinpoints": [list(p) for p in self.pinpoints],
            "tile_size": self.tile_size,
            "tile_grid": self.grid,
            "newline": self.newline,
            "tokens_by_pinpoint": self.tokens_by_pinpoint(),
        }

    # -- images -----------------------------------------------------------------------------------
    def tile_image(self, image: Image.Image) -> list[Image.Image]:
        """The global view then the grid tiles (row-major), each ``S x S``, of one RGB PIL image.

        Resizing is torchvision's antialiased bicubic on the 8-bit image, as transformers' LLaVA-NeXT
        image processor does, so that the tiles (and, through the tower's own processor, the pixel
        values) are the ones it makes.
        """
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as tvf

        side, bicubic = self.tile_size, InterpolationMode.BICUBIC
        pixels = tvf.pil_to_tensor(image)  # [3, H, W] uint8
        height, width = pixels.shape[-2:]
        best_h, best_w = self.best_resolution(height, width)
        fit_h, fit_w = _fit_size((height, width), (best_h, best_w))
        fitted = tvf.resize(pixels, [fit_h, fit_w], interpolation=bicubic, antialias=True)  # [3, fit_h, fit_w]
        left, top = (best_w - fit_w) // 2, (best_h - fit_h) // 2
        canvas = tvf.pad(fitted, [left, top, best_w - fit_w - left, best_h - fit_h - top])  # [3, best_h, best_w] black
        tiles = [
            canvas[:, y : y + side, x : x + side] for y in range(0, best_h, side) for x in range(0, best_w, side)
        ]  # each [3, S, S]
        whole = tvf.resize(pixels, [side, side], interpolation=bicubic, antialias=True)  # [3, S, S]
        return [tvf.to_pil_image(t) for t in (whole, *tiles)]

    def preprocess(
        self, images: Sequence[Image.Image], transform: Callable[[list[Image.Image]], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tiles of every image through the tower's ``transform``, padded to one tensor, like transformers.

        Returns:
            ``pixel_values`` ``[N, max tiles, C, S, S]`` (zeros past an image's own tiles) and
            ``image_sizes`` ``[N, 2]`` (original ``height, width``).
        """
        import torch

        from zoo.sdk.images import to_rgb  # alpha onto white, 16-bit scaled: as for files and transformers' processors

        sizes = torch.tensor([[im.height, im.width] for im in images], dtype=torch.long).reshape(-1, 2)  # [N, 2]
        per_image = [transform(self.tile_image(to_rgb(im))) for im in images]  # each [T_i, C, S, S]
        if not per_image:
            empty = transform([])  # [0, C, S, S]
            return empty.reshape(0, 1, *empty.shape[1:]), sizes
        most = max(p.shape[0] for p in per_image)
        pixels = per_image[0].new_zeros(len(per_image), most, *per_image[0].shape[1:])  # [N, T, C, S, S]
        for i, tiles in enumerate(per_image):
            pixels[i, : tiles.shape[0]] = tiles
        return pixels, sizes

    # -- features ---------------------------------------------------------------------------------
    def check_sizes(self, image_sizes: Any) -> torch.Tensor:
        """``image_sizes`` (a tensor or nested list, as any client sends them) as a ``[N, 2]`` long tensor.

        Raises:
            ZooError: anything but ``[images, 2]`` (or one ``[2]``) whole numbers >= 1, named with its value.
        """
        import torch

        try:
            sizes = torch.as_tensor(image_sizes)
        except (TypeError, ValueError, RuntimeError):
            sizes = None
        ok = (
            sizes is not None
            and sizes.dtype != torch.bool
            and not sizes.is_complex()
            and (sizes.shape == (2,) or (sizes.dim() == 2 and sizes.shape[1] == 2))
            and bool((sizes >= 1).all())
            and (not sizes.is_floating_point() or bool((sizes == sizes.round()).all()))
        )
        if not ok:
            shown = brief(image_sizes.tolist() if isinstance(image_sizes, torch.Tensor) else image_sizes)
            raise ZooError(
                f"image_sizes = {shown}: expected [images, 2] whole numbers >= 1 (height and width of each image, "
                "in pixels), as model.processor() and transformers' LlavaNextProcessor return them"
            )
        return cast("torch.Tensor", sizes).reshape(-1, 2).long()  # [N, 2]

    def tiles_of(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """Every image's own tiles, concatenated: ``[N, T, C, S, S]`` (padded) or ``[sum T_i, C, S, S]``."""
        counts = [self.num_tiles(int(h), int(w)) for h, w in image_sizes.tolist()]
        if pixel_values.dim() == 5:
            if pixel_values.shape[0] != len(counts) or (counts and pixel_values.shape[1] < max(counts)):
                raise ZooError(
                    f"pixel_values {list(pixel_values.shape)} do not hold the tiles of {len(counts)} images of sizes "
                    f"{image_sizes.tolist()} ({counts} tiles); make them with model.processor()"
                )
            return _cat([pixel_values[i, :n] for i, n in enumerate(counts)], pixel_values)  # [sum T_i, C, S, S]
        if pixel_values.dim() != 4 or pixel_values.shape[0] != sum(counts):
            raise ZooError(
                f"pixel_values {list(pixel_values.shape)}: expected [images, tiles, C, H, W] or [{sum(counts)} tiles, "
                f"C, H, W] for images of sizes {image_sizes.tolist()} ({counts} tiles)"
            )
        return pixel_values

    def pack(self, features: torch.Tensor, height: int, width: int, newline: torch.Tensor | None) -> torch.Tensor:
        """One image's tile features ``[T, M, D]`` -> its positions ``[image_tokens(height, width), D]``."""
        import torch

        rows, cols = self.tile_grid(height, width)
        g, dim = self.grid, features.shape[-1]
        base = features[0]  # [M, D]
        stitched = (
            features[1:].reshape(rows, cols, g, g, dim).permute(0, 2, 1, 3, 4).reshape(rows * g, cols * g, dim)
        )  # [rows * g, cols * g, D]
        top, bottom, left, right = self.unpadded_crop(height, width)
        stitched = stitched[top:bottom, left:right]  # [fh, fw, D]
        if self.newline:
            if newline is None:
                raise ContractError("model.vision.anyres.newline is true but the projector holds no image_newline")
            ends = newline.to(stitched.dtype).expand(stitched.shape[0], 1, dim)  # [fh, 1, D]
            stitched = torch.cat([stitched, ends], dim=1)  # [fh, fw + 1, D]
        return torch.cat([base, stitched.reshape(-1, dim)], dim=0)  # [M + fh * (fw + newline), D]


def _cat(parts: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """``torch.cat`` that also takes an empty list (a batch without images)."""
    import torch

    if not parts:
        return like.new_zeros(0, *like.shape[2:])
    return torch.cat(parts, dim=0)
