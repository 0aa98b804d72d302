"""The LLaVA-NeXT parts of the transformers interop (:mod:`zoo.interop.llava` dispatches here on ``model_type``).

transformers' ``LlavaNextForConditionalGeneration`` is a Llava (same vision model, projector and LM
layout) plus any-resolution tiling: ``image_grid_pinpoints`` and a learned ``image_newline``. In zoo
that is a composition with ``model.vision.anyres: {grid_pinpoints: ..., newline: true}``; the newline
vector is held by the projector (:class:`zoo.core.anyres_projector.AnyResProjector`). The tiling math is
:mod:`zoo.core.anyres`, which gives the same tiles, token counts and stitched features as transformers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from zoo.errors import CheckpointError, ZooError
from zoo.sdk.limits import brief

if TYPE_CHECKING:
    from zoo.core.anyres import AnyResLayout
    from zoo.core.multimodal import MultiModal

__all__ = ["anyres_fields", "copy_newline", "next_composition", "next_processor"]


def next_composition(config: Any, file: Path, select: str) -> dict[str, Any]:
    """``model.vision.anyres`` of a ``LlavaNextConfig`` read from ``file``, or a ``CheckpointError`` naming the field.

    ``image_grid_pinpoints`` must be a non-empty list of ``[height, width]`` pixel pairs, each a whole number
    of ``vision_config.image_size`` tiles (as transformers' image processor tiles them); an absent field is
    (or null) field is transformers' default (LLaVA-NeXT's 336 px pinpoints), which only fits a 336 px tower.
    """
    from zoo.core.anyres import MAX_SIDE

    side = int(config.vision_config.image_size)
    if select == "all":  # CLIP with strategy 'full': each tile keeps its CLS token
        grid = side // int(config.vision_config.patch_size)
        raise CheckpointError(
            f"{file}: vision_feature_select_strategy = 'full' keeps the CLS token of every tile, which LLaVA-NeXT "
            f"cannot stitch into the {grid}x{grid} patch map of a tile (transformers' LlavaNextForConditionalGeneration "
            "fails on it too); valid for a CLIP tower: 'default'"
        )
    pinpoints = config.image_grid_pinpoints
    if _raw(file).get("image_grid_pinpoints") is None:
        bad = next((p for p in pinpoints if p[0] % side or p[1] % side), None)
        if bad is not None:
            raise CheckpointError(
                f"{file}: image_grid_pinpoints is not set in config.json: transformers' default {brief(pinpoints)} "
                f"applies, and its {list(bad)} is not a whole number of vision_config.image_size = {side} px tiles; "
                f"write the checkpoint's own image_grid_pinpoints (multiples of {side}) into config.json"
            )
    from zoo.sdk.limits import MAX_PINPOINTS

    if isinstance(pinpoints, list | tuple) and len(pinpoints) > MAX_PINPOINTS:
        raise CheckpointError(
            f"{file}: image_grid_pinpoints lists {len(pinpoints):,} resolutions; at most {MAX_PINPOINTS} are accepted"
        )
    if not isinstance(pinpoints, list | tuple) or not pinpoints:
        raise CheckpointError(
            f"{file}: image_grid_pinpoints = {brief(pinpoints)}: expected a non-empty list of [height, width] pairs "
            f"in pixels, multiples of vision_config.image_size = {side}, such as [[{side}, {2 * side}]]"
        )
    for i, point in enumerate(pinpoints):
        ok = (
            isinstance(point, list | tuple)
            and len(point) == 2
            and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE and v % side == 0 for v in point
            )
        )
        if not ok:
            raise CheckpointError(
                f"{file}: image_grid_pinpoints[{i}] = {brief(point)}: expected [height, width], two integers in "
                f"1..{MAX_SIDE} that are multiples of vision_config.image_size = {side} (pixels), such as [{side}, {2 * side}]"
            )
    return {"grid_pinpoints": [list(p) for p in pinpoints], "newline": True}


def _raw(file: Path) -> dict[str, Any]:
    """``file``'s top-level fields as written (before transformers fills its defaults)."""
    from zoo.sdk.foreign import read_json_file

    data = read_json_file(file, what="Llava config")
    return data if isinstance(data, dict) else {}


def anyres_fields(model: MultiModal, names: Mapping[str, str]) -> dict[str, Any]:
    """The ``LlavaNextConfig`` fields of ``model``'s any-res layout, or a ``ZooError`` naming what does not fit."""
    layout = cast("AnyResLayout", model.anyres)
    if not layout.newline:
        raise ZooError(
            f"model.vision.anyres.newline = false ({names['vision']!r}): transformers' LlavaNextForConditionalGeneration "
            "always ends each row with image_newline; set newline: true to export"
        )
    rows, cols = model.vision.grid_size()
    if (rows, cols) != (layout.grid, layout.grid):
        raise ZooError(
            f"model.projector = {names['projector']!r} gives a {layout.grid}x{layout.grid} token grid per tile but "
            f"LlavaNextForConditionalGeneration stitches the tower's {rows}x{cols} patch grid; use mlp2x-gelu"
        )
    return {"image_grid_pinpoints": [list(p) for p in layout.pinpoints]}


def next_processor(model: MultiModal, config: Any, tower_kwargs: Mapping[str, Any]) -> Any:
    """A ``LlavaNextProcessor``: the tower's resizing and normalisation, the pinpoints, the LM tokenizer."""
    import transformers

    tower = model.vision
    side = tower.image_size
    image_processor = transformers.LlavaNextImageProcessor(
        size=dict(tower_kwargs.get("size", {"shortest_edge": side})),
        crop_size={"height": side, "width": side},
        image_grid_pinpoints=[list(p) for p in config.image_grid_pinpoints],
        image_mean=list(tower.preprocessor.mean),
        image_std=list(tower.preprocessor.std),
    )
    tokenizer = model.lm.tokenizer
    return transformers.LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=tower.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_token=model.image_token,
        num_additional_image_tokens=tower.num_prefix_tokens,
        chat_template=getattr(tokenizer, "chat_template", None),
    )


def copy_newline(hf: Any, model: MultiModal) -> None:
    """Give ``model``'s projector the ``image_newline`` of the imported LLaVA-NeXT ``hf``."""
    source = hf.model.image_newline
    holder = model.projector
    current = getattr(holder, "image_newline", None)
    if current is None or tuple(current.shape) != tuple(source.shape):
        shape = None if current is None else tuple(current.shape)
        raise CheckpointError(f"image_newline has shape {tuple(source.shape)}, the zoo projector holds {shape}")
    with torch.no_grad():
        value = source.detach().to(current.dtype).clone()
    holder.image_newline = nn.Parameter(value, requires_grad=current.requires_grad)
