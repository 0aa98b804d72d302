"""The open_clip tower behind ``zoo_plugins.open_clip_towers`` (imported by its factories, on the first build).

Private module: it imports torch (and open_clip inside its functions), so the registration module
``open_clip_towers`` imports it only inside its factories. Weight files and timm trunks go through the
helpers of the timm tower (``_timm_tower``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from zoo.errors import ConfigError, UnknownNameError, suggest
from zoo.sdk import (
    ImagePreprocessor,
    VisionTower,
    VisionTowerConfig,
    building_on_meta,
    hub_offline,
    load_state_dict_file,
    torch_dtype_of,
)

from ._timm_tower import (
    find_weight_file,
    load_strict,
    prepare_timm_state,
    square_patch_size,
    timm_hidden_states,
    vit_family,
)

__all__ = [
    "OPEN_CLIP_DIR_FILES",
    "OpenClipVisionTower",
    "create_open_clip_tower",
    "load_open_clip_checkpoint",
    "open_clip_model_config",
]

KEY = "model.vision"
OPEN_CLIP_DIR_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
TOP_LEVEL_ARCH = ("embed_dim", "quick_gelu")


def open_clip_model_config(name: str) -> dict[str, Any]:
    """open_clip's model config (``embed_dim``, ``vision_cfg``...) of a registered architecture name."""
    import open_clip

    display = f"open_clip:{name}"
    if name.startswith(("hf-hub:", "local-dir:")):
        raise ConfigError(
            f"{KEY}.name = {display!r}: zoo reads no open_clip hub or directory schema; use the architecture "
            "name (open_clip.list_models()) and set model.vision.checkpoint to the local weight file"
        )
    config = open_clip.get_model_config(name)
    if config is None:
        raise UnknownNameError(
            f"{KEY}.name = {display!r}: {name!r} is not an open_clip architecture; "
            f"{suggest(name, open_clip.list_models())} (see open_clip.list_models())"
        )
    return config


def _pretrained_cfgs(name: str | None) -> list[dict[str, Any]]:
    """open_clip's configs of every pretrained tag of architecture ``name`` (none for the tiny tower)."""
    import open_clip

    if not name:
        return []
    return [open_clip.get_pretrained_cfg(name, tag) for tag in open_clip.list_pretrained_tags_by_model(name)]


def _tags_quick_gelu(tags: list[dict[str, Any]]) -> bool | None:
    """The ``quick_gelu`` every pretrained tag agrees on (open_clip reads a missing one as False), else None."""
    values = {bool(tag.get("quick_gelu", False)) for tag in tags}
    return values.pop() if len(values) == 1 else None


def _preprocess_cfg(tags: list[dict[str, Any]], model_cfg: dict[str, Any], image_size: int) -> dict[str, Any]:
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = merge_preprocess_dict(PreprocessCfg(), model_cfg.get("preprocess_cfg") or {})
    for key in ("mean", "std", "interpolation", "resize_mode"):
        values = {repr(tag.get(key)) for tag in tags}
        if tags and len(values) == 1 and tags[0].get(key) is not None:
            cfg[key] = tags[0][key]  # every pretrained tag of this architecture agrees
    return {**cfg, "size": image_size}


class OpenClipVisionTower(VisionTower):
    """An open_clip image tower (``VisionTransformer``, or ``TimmModel`` with a timm ViT/Eva trunk).

    Args:
        visual: the tower (``model.visual`` of an open_clip CLIP).
        preprocess: open_clip preprocess config (``size``, ``mean``, ``std``, ``interpolation``...).
        select_layer: hidden state to return (``[embeddings, block 1..L]``, Python-indexed).
        select: ``patch`` drops the class token(s), ``all`` keeps them.
        name: registry name, for messages.
    """

    source = "open_clip"

    def __init__(
        self,
        visual: nn.Module,
        preprocess: dict[str, Any],
        *,
        select_layer: int = -2,
        select: str = "patch",
        name: str = "",
    ) -> None:
        trunk = getattr(visual, "trunk", None)
        if trunk is not None and vit_family(trunk) is not None:
            size, patch = trunk.patch_embed.img_size[0], square_patch_size(trunk, name)
            dims = (int(trunk.embed_dim), int(trunk.num_prefix_tokens), patch, size, len(trunk.blocks))
        elif hasattr(visual, "transformer") and hasattr(visual, "class_embedding"):
            size, patch = visual.image_size[0], visual.conv1.kernel_size[0]
            dims = (visual.transformer.width, 1, patch, size, len(visual.transformer.resblocks))
        else:
            inner = f" around a timm {type(trunk).__name__}" if trunk is not None else ""
            raise ConfigError(
                f"{KEY}.name = {name!r}: its open_clip vision tower is a {type(visual).__name__}{inner}, not a "
                "ViT; open_clip towers need a VisionTransformer or a timm ViT/Eva trunk (e.g. "
                "'open_clip:ViT-L-14-336', 'open_clip:EVA02-L-14')"
            )
        hidden, prefix, patch, size, layers = dims
        super().__init__(
            hidden_size=hidden,
            num_prefix_tokens=prefix,
            patch_size=patch,
            image_size=size,
            num_layers=layers,
            select_layer=select_layer,
            select=select,
        )
        self.visual = visual
        self.preprocess_cfg = {**preprocess, "size": size}
        self.name = name

    @property
    def fsdp_wrap_classes(self) -> tuple[type[nn.Module], ...]:
        """The residual block class of the tower."""
        trunk = getattr(self.visual, "trunk", None)
        return (type(trunk.blocks[0]) if trunk is not None else type(self.visual.transformer.resblocks[0]),)

    @property
    def preprocessor(self) -> ImagePreprocessor:
        """open_clip's eval ``image_transform`` for this tower's preprocess config."""
        from open_clip import image_transform

        cfg = self.preprocess_cfg
        transform = image_transform(
            cfg["size"],
            is_train=False,
            mean=cfg["mean"],
            std=cfg["std"],
            resize_mode=cfg["resize_mode"],
            interpolation=cfg["interpolation"],
            fill_color=cfg["fill_color"],
        )
        return ImagePreprocessor(transform, image_size=cfg["size"], mean=cfg["mean"], std=cfg["std"])

    def hidden_states_upto(self, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
        """Tokens after ``layer`` blocks (0: embeddings after ``ln_pre``), ``[B, 1 + N, D]``, before ``ln_post``."""
        visual = self.visual
        if getattr(visual, "trunk", None) is not None:
            return timm_hidden_states(visual.trunk, pixel_values, layer)
        x = visual._embeds(pixel_values)  # [B, 1 + N, D]: patches, class token, positions, ln_pre
        transformer = visual.transformer
        if not transformer.batch_first:
            x = x.transpose(0, 1)  # [1 + N, B, D]
        for block in transformer.resblocks[:layer]:
            if transformer.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x if transformer.batch_first else x.transpose(0, 1)  # [B, 1 + N, D]


def load_open_clip_checkpoint(visual: nn.Module, path: Path, key: str) -> None:
    """Read ``path`` safely and load its ``visual`` weights as open_clip would (prefixes, pos-embed resize)."""
    state = {k.removeprefix("module."): v for k, v in load_state_dict_file(path, key).items()}
    if any(k.startswith("visual.") for k in state):
        state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:
        trunk_state = prepare_timm_state(trunk, {k[6:]: v for k, v in state.items() if k.startswith("trunk.")})
        state = {k: v for k, v in state.items() if not k.startswith("trunk.")}
        state.update({f"trunk.{k}": v for k, v in trunk_state.items()})
    elif "positional_embedding" in state:
        from open_clip.model import resize_pos_embed

        shim = {"visual.positional_embedding": state["positional_embedding"]}
        resize_pos_embed(shim, SimpleNamespace(visual=visual))  # open_clip resizes in place
        state["positional_embedding"] = shim["visual.positional_embedding"]
    load_strict(visual, state, key, path)


def create_open_clip_tower(
    config: VisionTowerConfig, model_cfg: dict[str, Any], name: str | None
) -> OpenClipVisionTower:
    """The vision tower of the open_clip model config ``model_cfg`` (architecture ``name``; ``None``: tiny)."""
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    display = f"open_clip:{name}" if name else "tiny-open-clip"
    tags = _pretrained_cfgs(name)
    arch = dict(config.arch)
    allowed = [f.name for f in dataclasses.fields(CLIPVisionCfg)] + list(TOP_LEVEL_ARCH)
    for field in arch:
        if field not in allowed:
            raise ConfigError(f"{KEY}.arch.{field}: unknown open_clip vision option; {suggest(field, allowed)}")
    vision_cfg = {**model_cfg["vision_cfg"], **{k: v for k, v in arch.items() if k not in TOP_LEVEL_ARCH}}
    if config.image_size is not None:
        vision_cfg["image_size"] = config.image_size
    if name and config.checkpoint is None and not hub_offline(config.offline):
        raise ConfigError(
            f"{KEY}.offline = false: open_clip towers never download; fetch the weights with open_clip and set "
            f"{KEY}.checkpoint to the local file"
        )
    path = find_weight_file(config.checkpoint, f"{KEY}.checkpoint", OPEN_CLIP_DIR_FILES) if config.checkpoint else None
    dtype = torch_dtype_of(config.dtype)
    embed_dim = arch.get("embed_dim", model_cfg["embed_dim"])
    agreed = _tags_quick_gelu(tags)  # the pretrained weights' activation (ViT-L-14-336: openai, QuickGELU)
    quick_gelu = arch.get("quick_gelu", model_cfg.get("quick_gelu", False) if agreed is None else agreed)
    # built as open_clip's "pure" precision: plain LayerNorms, every parameter in ``dtype`` (cast below)
    visual = _build_vision_tower(embed_dim, vision_cfg, quick_gelu=quick_gelu)
    trunk = getattr(visual, "trunk", None)
    size = vision_cfg["image_size"]
    if not isinstance(size, int):
        if len(set(size)) != 1:
            raise ConfigError(f"{KEY}.name = {display!r}: input {size} is not square; set {KEY}.image_size")
        size = int(size[0])
    if trunk is not None and vit_family(trunk) and tuple(trunk.patch_embed.img_size) != (size, size):
        trunk.set_input_size(img_size=(size, size))  # open_clip's TimmModel keeps timm's default size
    preprocess = _preprocess_cfg(tags, model_cfg, size)
    tower = OpenClipVisionTower(
        visual, preprocess, select_layer=config.select_layer, select=config.select, name=display
    )
    if path is not None and not building_on_meta():
        load_open_clip_checkpoint(visual, path, f"{KEY}.checkpoint")
    return tower.to(dtype=dtype)
