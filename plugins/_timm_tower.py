"""The timm tower behind ``zoo_plugins.timm_towers`` (imported by its factories, on the first build).

Private module: it imports torch (and timm inside its functions), so the registration module
``timm_towers`` imports it only inside its factories. The weight-file helpers here (``find_weight_file``,
``load_strict``, ``prepare_timm_state``) and ``timm_hidden_states`` / ``vit_family``
are shared with the open_clip tower (``_open_clip_tower``), whose ``TimmModel`` trunks are timm ViTs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from zoo.errors import CheckpointError, ConfigError, UnknownNameError, suggest
from zoo.sdk import (
    ImagePreprocessor,
    VisionTower,
    VisionTowerConfig,
    building_on_meta,
    check_confined_file,
    hub_offline,
    load_state_dict_file,
    require_path,
    torch_dtype_of,
)

__all__ = [
    "TIMM_DIR_FILES",
    "TimmVisionTower",
    "create_timm_tower",
    "find_weight_file",
    "load_strict",
    "load_timm_checkpoint",
    "prepare_timm_state",
    "square_patch_size",
    "timm_hidden_states",
    "vit_family",
]

KEY = "model.vision"
TIMM_DIR_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


def vit_family(model: nn.Module) -> str | None:
    """``"vit"`` for timm's VisionTransformer family, ``"eva"`` for Eva, ``None`` for anything else."""
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, VisionTransformer):
        return "vit"
    if isinstance(model, Eva):
        return "eva"
    return None


def timm_hidden_states(model: nn.Module, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
    """Tokens of a timm ViT/Eva after ``layer`` blocks (0: embeddings), ``[B, P + N, D]``, before the final norm.

    Runs exactly what timm's ``forward_features`` runs (patch embedding, position embedding, patch
    dropout, ``norm_pre``), then only the first ``layer`` blocks.
    """
    x = model.patch_embed(pixel_values)  # [B, N, D] (or [B, H, W, D] with dynamic image size)
    rope = None
    if vit_family(model) == "eva":
        x, rope = model._pos_embed(x)  # [B, P + N, D]; Eva applies patch dropout inside
    else:
        x = model.patch_drop(model._pos_embed(x))  # [B, P + N, D]
    x = model.norm_pre(x)
    mixed = rope is not None and getattr(model, "rope_mixed", False)
    for index, block in enumerate(model.blocks[:layer]):
        kwargs = {} if rope is None else {"rope": rope[index] if mixed else rope}
        if model.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, use_reentrant=False, **kwargs)
        else:
            x = block(x, **kwargs)
    return x


def square_patch_size(model: nn.Module, name: str) -> int:
    """The side of the square patches of a timm ViT/Eva (its patch embedding's, not ``img_size // grid``).

    An input size that is not a multiple of it is refused where the model would (``dynamic_img_size``
    models assert it in their forward) or where the grid would not be ``image_size // patch`` (padding).
    """
    embed = model.patch_embed
    (rows, cols), size = embed.patch_size, embed.img_size[0]
    if rows != cols:
        raise ConfigError(f"{KEY}.name = {name!r}: patches of {rows}x{cols} pixels are not square")
    if size % rows and (embed.dynamic_img_pad or not embed.strict_img_size):
        raise ConfigError(
            f"{KEY}.image_size = {size} is not a multiple of the patch size {rows} of {name!r}, and this timm "
            f"model (dynamic image size or padding) needs one; use e.g. {size - size % rows}"
        )
    return int(rows)


def find_weight_file(path: str, key: str, names: Sequence[str]) -> Path:
    """``path`` itself if it is a file, else the first of ``names`` inside the directory ``path`` (a symlink
    there that leads out of the directory is refused, see ``zoo.sdk.foreign``)."""
    found = require_path(path, key)
    if found.is_file():
        return found
    for name in names:
        if check_confined_file(found, name, what=f"{key} = {path!r}"):
            return found / name
    raise CheckpointError(f"{key} = {path!r}: the directory holds none of {', '.join(names)}")


def prepare_timm_state(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's own clean-up of a state dict for ``model``: wrapper prefixes, then the family's checkpoint filter."""
    from timm.models import clean_state_dict

    state = clean_state_dict(state)
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    return filter_fn(state, model) if filter_fn is not None else state


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], key: str, path: Path) -> None:
    """Load ``state`` into ``module``; a missing or unexpected key is a CheckpointError listing a few."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        parts = [f"{len(keys)} {what} (e.g. {', '.join(keys[:4])})" for what, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected)) if keys]  # fmt: skip
        raise CheckpointError(
            f"{key} = {str(path)!r} does not fit {type(module).__name__}: {'; '.join(parts)}; is it a checkpoint "
            "of the same architecture?"
        )


def load_timm_checkpoint(model: nn.Module, path: Path, key: str) -> None:
    """Read ``path`` safely and load it into a timm model through timm's checkpoint filter."""
    state = prepare_timm_state(model, load_state_dict_file(path, key))
    own = model.state_dict()
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head"
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state = {k: v for k, v in state.items() if k in own or not k.startswith(tuple(h + "." for h in heads))}
    load_strict(model, state, key, path)


class TimmVisionTower(VisionTower):
    """A timm ViT-style model; ``hidden_states_upto`` runs only the blocks it needs.

    Args:
        model: a timm ``VisionTransformer`` or ``Eva`` (built with ``num_classes=0``).
        select_layer: hidden state to return (``[embeddings, block 1..L]``, Python-indexed).
        select: ``patch`` drops the prefix tokens, ``all`` keeps them.
        name: registry name, for messages.
    """

    source = "timm"

    def __init__(self, model: nn.Module, *, select_layer: int = -2, select: str = "patch", name: str = "") -> None:
        if vit_family(model) is None:
            raise ConfigError(
                f"{KEY}.name = {name!r}: timm builds a {type(model).__name__}, which is not a ViT-style model; "
                "timm towers need a VisionTransformer or Eva (patch embedding + transformer blocks), "
                "e.g. 'timm:vit_base_patch16_224' or 'timm:vit_so400m_patch14_siglip_384'"
            )
        (height, width), (rows, cols) = model.patch_embed.img_size, model.patch_embed.grid_size
        if height != width or rows != cols:
            raise ConfigError(f"{KEY}.name = {name!r}: input {height}x{width} is not square; set image_size")
        patch = square_patch_size(model, name)
        super().__init__(
            hidden_size=int(model.embed_dim),
            num_prefix_tokens=int(model.num_prefix_tokens),
            patch_size=patch,
            image_size=height,
            num_layers=len(model.blocks),
            select_layer=select_layer,
            select=select,
        )
        self.model = model
        self.name = name

    @property
    def fsdp_wrap_classes(self) -> tuple[type[nn.Module], ...]:
        """timm's transformer block class."""
        return (type(self.model.blocks[0]),)

    @property
    def preprocessor(self) -> ImagePreprocessor:
        """timm's eval transform for this model (``resolve_data_config`` + ``create_transform``)."""
        from timm.data import create_transform, resolve_data_config

        size = self.image_size
        data = resolve_data_config({"input_size": (3, size, size)}, model=self.model)
        transform = create_transform(**data, is_training=False)
        return ImagePreprocessor(transform, image_size=size, mean=data["mean"], std=data["std"])

    def hidden_states_upto(self, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
        """Tokens after ``layer`` blocks (0: embeddings), ``[B, P + N, D]``, before timm's final norm."""
        return timm_hidden_states(self.model, pixel_values, layer)


def create_timm_tower(config: VisionTowerConfig, *, tiny: bool) -> TimmVisionTower:
    """The tower of ``timm:<model_name>`` (``tiny=False``) or ``tiny-timm-vit`` (``tiny=True``; never pretrained)."""
    import timm

    name = config.model_name
    display = "tiny-timm-vit" if tiny else f"timm:{name}"
    if not timm.is_model(name):
        raise UnknownNameError(
            f"{KEY}.name = {display!r}: {name!r} is not a timm model; {suggest(name, timm.list_models())} "
            "(see timm.list_models())"
        )
    kwargs = dict(config.arch)
    if config.image_size is not None:
        kwargs["img_size"] = config.image_size
    path = find_weight_file(config.checkpoint, f"{KEY}.checkpoint", TIMM_DIR_FILES) if config.checkpoint else None
    meta = building_on_meta()
    pretrained = path is None and not tiny and not meta and not hub_offline(config.offline)
    model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    tower = TimmVisionTower(model, select_layer=config.select_layer, select=config.select, name=display)
    if path is not None and not meta:
        load_timm_checkpoint(model, path, f"{KEY}.checkpoint")
    return tower.to(dtype=torch_dtype_of(config.dtype))
