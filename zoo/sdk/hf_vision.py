"""Shared code of the transformers-backed vision towers (CLIP, SigLIP, DINOv2).

A family subclasses :class:`HFVisionTower` (how to embed, which blocks, which processor) in its own
module (``zoo_plugins._clip_tower``...), and its registration module registers presets whose ``arch`` is a
transformers vision config as a dict (plus ``model_type``), with a factory made by
:func:`zoo.sdk.hf.hf_tower_factory` that imports the family class and calls :func:`build_tower` on first use:

- no ``checkpoint``: random init from the preset's ``arch`` merged with the user's ``arch`` keys;
- ``checkpoint`` directory: a transformers ``save_pretrained`` directory of the vision model or of the
  full two-tower model (the vision part is taken); its ``config.json`` defines the architecture, and
  on the ``meta`` device only that file is read;
- ``checkpoint`` file: a state dict of the vision model (safetensors, or a legacy torch file read with
  ``weights_only=True``) loaded into the ``arch`` architecture.

Public (the built-in CLIP, SigLIP and DINOv2 towers and third-party ones use it). This module imports torch
(transformers only inside functions); registration modules import it only inside their factories, so
listing components stays instant.
"""

from __future__ import annotations

import abc
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from zoo.errors import CheckpointError, ConfigError, few, suggest
from zoo.sdk.hf_config import loading_problems, make_hf_config
from zoo.sdk.interfaces import ImagePreprocessor, VisionTower
from zoo.sdk.limits import check_arch_sizes
from zoo.sdk.specs import VisionTowerConfig
from zoo.sdk.weights import building_on_meta, describe_load_error, load_state_dict_file, require_path, torch_dtype_of

__all__ = ["CHECKPOINT_KEY", "HFVisionTower", "build_tower"]

CHECKPOINT_KEY = "model.vision.checkpoint"
_FULL_MODEL_PREFIX = "vision_model."


class HFVisionTower(VisionTower, abc.ABC):
    """A vision tower around a transformers vision model; runs only the blocks it needs.

    Subclasses set the class attributes and implement :meth:`embed` and :attr:`blocks`.

    Attributes:
        family: display name for messages (``CLIP``).
        model_types: accepted ``config.json`` model types -> (config class, vision model class) names
            in ``transformers``; full two-tower types map to their vision classes.
        default_model_type: model type of a random-init preset without ``arch.model_type``.
        processor_class: name of the transformers image processor class.
        image_mean / image_std: normalisation of the family's checkpoints.
    """

    source = "transformers"
    family: ClassVar[str] = ""
    model_types: ClassVar[dict[str, tuple[str, str]]] = {}
    default_model_type: ClassVar[str] = ""
    processor_class: ClassVar[str] = ""
    image_mean: ClassVar[tuple[float, float, float]] = (0.5, 0.5, 0.5)
    image_std: ClassVar[tuple[float, float, float]] = (0.5, 0.5, 0.5)

    def __init__(
        self, model: nn.Module, *, image_size: int | None = None, select_layer: int = -2, select: str = "patch"
    ) -> None:
        config: Any = model.config  # a transformers vision config
        size = int(image_size or config.image_size)
        if size < config.patch_size:
            raise ConfigError(
                f"model.vision.image_size = {size} is smaller than the patch size {config.patch_size} of this "
                f"{self.family} tower; use a multiple of {config.patch_size} (the checkpoint's is {config.image_size})"
            )
        super().__init__(
            hidden_size=int(config.hidden_size),
            num_prefix_tokens=self.prefix_tokens(config),
            patch_size=int(config.patch_size),
            image_size=size,
            num_layers=int(config.num_hidden_layers),
            select_layer=select_layer,
            select=select,
        )
        self.model = model
        # position embeddings are interpolated only when the input size differs from the model's own
        self.interpolate = size != config.image_size

    # -- family hooks ---------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def prefix_tokens(cls, config: Any) -> int:
        """CLS / register tokens the model puts before the patches."""

    @abc.abstractmethod
    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Input of the first block, ``[B, 3, H, W] -> [B, P + N, D]``."""

    @property
    @abc.abstractmethod
    def blocks(self) -> nn.ModuleList:
        """The encoder blocks, in order."""

    @abc.abstractmethod
    def processor_kwargs(self, image_size: int) -> dict[str, Any]:
        """Keyword arguments of ``processor_class`` for a square input of ``image_size``."""

    # -- contract and compute -------------------------------------------------------------------
    @property
    def fsdp_wrap_classes(self) -> tuple[type[nn.Module], ...]:
        """The encoder layer class (``CLIPEncoderLayer``, ``SiglipEncoderLayer``, ``Dinov2Layer``...)."""
        return (type(self.blocks[0]),) if len(self.blocks) else ()

    def hidden_states_upto(self, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
        """Equals ``model(pixel_values, output_hidden_states=True).hidden_states[layer]``; later blocks never run."""
        if not 0 <= layer <= self.num_layers:
            raise ValueError(f"layer must be in 0..{self.num_layers}, got {layer}")
        hidden = self.embed(pixel_values)  # [B, P+N, D]
        for block in self.blocks[:layer]:
            hidden = block(hidden, None)  # [B, P+N, D]
        return hidden

    @property
    def preprocessor(self) -> ImagePreprocessor:
        """The family's transformers image processor, sized for this tower's ``image_size``."""
        import transformers

        processor = getattr(transformers, self.processor_class)(**self.processor_kwargs(self.image_size))

        def transform(image: Any) -> torch.Tensor:
            return processor(images=image, return_tensors="pt")["pixel_values"][0]  # [3, S, S]

        return ImagePreprocessor(transform, image_size=self.image_size, mean=self.image_mean, std=self.image_std)


def build_tower(tower_cls: type[HFVisionTower], preset_arch: Mapping[str, Any], config: Any) -> HFVisionTower:
    """Build a tower from a validated :class:`~zoo.sdk.specs.VisionTowerConfig` (see the module docstring)."""
    if not isinstance(config, VisionTowerConfig):
        raise ConfigError(f"{tower_cls.family} towers take a VisionTowerConfig, got {type(config).__name__}")
    arch = {**preset_arch, **config.arch}
    model = _load_model(tower_cls, arch, config.checkpoint, torch_dtype_of(config.dtype))
    return tower_cls(model, image_size=config.image_size, select_layer=config.select_layer, select=config.select)


# -- model construction and loading ---------------------------------------------------------------
def _classes(tower_cls: type[HFVisionTower], model_type: str, where: str) -> tuple[Any, Any]:
    if model_type not in tower_cls.model_types:
        raise ConfigError(
            f"{where}: model_type {model_type!r} is not a {tower_cls.family} vision model; "
            f"{suggest(model_type, tower_cls.model_types)}"
        )
    import transformers

    config_name, model_name = tower_cls.model_types[model_type]
    return getattr(transformers, config_name), getattr(transformers, model_name)


def _random_model(tower_cls: type[HFVisionTower], arch: Mapping[str, Any], dtype: torch.dtype) -> nn.Module:
    fields = dict(arch)
    model_type = fields.pop("model_type", tower_cls.default_model_type)
    config_cls, model_cls = _classes(tower_cls, model_type, "model.vision.arch.model_type")
    return model_cls._from_config(make_hf_config(config_cls, fields, "model.vision.arch"), dtype=dtype).eval()


def _load_model(
    tower_cls: type[HFVisionTower], arch: Mapping[str, Any], checkpoint: str | None, dtype: torch.dtype
) -> nn.Module:
    if checkpoint is None:
        return _random_model(tower_cls, arch, dtype)
    path = require_path(checkpoint, CHECKPOINT_KEY)
    if path.is_dir():
        from zoo.sdk.foreign import confined_directory, unstage_name

        with confined_directory(path, what=f"{CHECKPOINT_KEY} = {checkpoint!r}") as staged:
            return unstage_name(_load_directory(tower_cls, staged, checkpoint, dtype), staged, path)
    model = _random_model(tower_cls, arch, dtype)  # the file holds weights only: `arch` gives the shapes
    if not building_on_meta():
        _load_state_file(model, path, checkpoint)
    return model


def _load_directory(tower_cls: type[HFVisionTower], path: Path, checkpoint: str, dtype: torch.dtype) -> nn.Module:
    where = f"{CHECKPOINT_KEY} = {checkpoint!r}"
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            f"{where}: no config.json in this directory; expected a transformers save_pretrained "
            f"directory of a {tower_cls.family} model, or a .safetensors weight file"
        )
    from zoo.sdk.foreign import read_json_file

    data = read_json_file(config_file, what=f"{where}: config")
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: cannot read {config_file}: not a JSON object")
    model_type = data.get("model_type", "")
    check_arch_sizes(data, str(config_file))  # before transformers builds anything of it
    if model_type not in tower_cls.model_types:
        raise CheckpointError(
            f"{where}: config.json has model_type {model_type!r}, which is not a {tower_cls.family} model; "
            f"valid: {', '.join(repr(t) for t in tower_cls.model_types)}"
        )
    config_cls, model_cls = _classes(tower_cls, model_type, where)
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    unreadable = (OSError, ValueError, StrictDataclassError, SafetensorError, pickle.UnpicklingError, EOFError)
    if building_on_meta():  # the contract must reflect the checkpoint: read config.json, no weights
        try:
            hf_config = config_cls.from_pretrained(path, local_files_only=True)
        except unreadable as error:
            raise CheckpointError(f"{where}: cannot read its config.json: {error}") from error
        return model_cls._from_config(hf_config, dtype=dtype).eval()
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # a full two-tower checkpoint lists every text weight as unexpected
    hf_logging.disable_progress_bar()
    try:
        model, info = model_cls.from_pretrained(
            path, local_files_only=True, dtype=dtype, output_loading_info=True, ignore_mismatched_sizes=True
        )
    except unreadable as error:  # a corrupt weight file raises SafetensorError, a plain Exception
        raise CheckpointError(
            f"{where}: cannot load it with {model_cls.__name__}: {describe_load_error(error)}"
        ) from error
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    problems = loading_problems(info)
    if problems:
        raise CheckpointError(f"{where}: {problems}")
    return model.eval()


def _load_state_file(model: nn.Module, path: Path, checkpoint: str) -> None:
    state = load_state_dict_file(path, CHECKPOINT_KEY)
    if any(key.startswith(_FULL_MODEL_PREFIX) for key in state):  # a full two-tower state dict
        state = {k[len(_FULL_MODEL_PREFIX) :]: v for k, v in state.items() if k.startswith(_FULL_MODEL_PREFIX)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of the wrong shape
        raise CheckpointError(f"{CHECKPOINT_KEY} = {checkpoint!r} does not fit model.vision.arch: {error}") from error
    if missing or unexpected:
        raise CheckpointError(
            f"{CHECKPOINT_KEY} = {checkpoint!r} does not fit the {type(model).__name__} of model.vision.arch: "
            f"missing {few(missing)}; unexpected {few(unexpected)}"
        )
    model.eval()
