"""The training file: a model file plus ``data:`` and ``train:`` sections, validated before anything runs.

```yaml
model: {vision: {name: tiny-clip}, projector: {name: mlp2x-gelu}, lm: {name: tiny-qwen2, train: lora}}
data: {train: data/train.json, eval: data/eval.json, max_length: 512}
train: {output_dir: runs/demo, max_steps: 300, batch_size: 32, lr: 1.0e-3, save_steps: 100}
```

``model:`` is parsed by :func:`zoo.config.parse_model_config`, ``data:`` by :func:`zoo.data.parse_data_config`
(paths relative to the file's folder), ``train:`` here. Every error names the key path, the bad value and
the valid choices. ``output_dir`` is relative to the working directory, as with transformers' Trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.config import ModelConfig, config_from_dict, parse_model_config, read_yaml
from zoo.errors import ConfigError, suggest

if TYPE_CHECKING:
    from zoo.data import DataConfig

__all__ = ["SCHEDULERS", "TrainConfig", "TrainSettings", "load_train_config", "parse_train_config"]

SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay",
)  # fmt: skip
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop", "adamw_8bit", "lion_32bit")
TOP_KEYS = ("plugins", "model", "data", "train")
FEATURE_CACHE_MODES = ("auto", "on", "off")  # zoo.feature_fill
FEATURE_CACHE_DTYPES = ("bfloat16", "float16")


@dataclass(frozen=True)
class TrainSettings:
    """The ``train:`` section; each key maps onto one transformers ``TrainingArguments`` field."""

    output_dir: str | None = None
    max_steps: int | None = None
    epochs: float | None = None
    batch_size: int = 8
    eval_batch_size: int | None = None
    grad_accum: int = 1
    lr: float = 1.0e-4
    scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    save_steps: int = 500
    save_total_limit: int | None = None
    eval_steps: int | None = None
    logging_steps: int = 10
    seed: int = 0
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    report_to: str | list[str] = "none"
    fsdp: bool = False
    fsdp_config: dict[str, Any] | None = None
    deepspeed: str | dict[str, Any] | None = None
    feature_cache: str = "auto"
    feature_cache_dir: str | None = None
    feature_cache_dtype: str | None = None
    feature_cache_max_gb: float | None = None

    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "scheduler": SCHEDULERS, "optim": OPTIMIZERS, "feature_cache": FEATURE_CACHE_MODES,
        "feature_cache_dtype": FEATURE_CACHE_DTYPES,
    }  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """A whole training file, validated: the composition, the data and the training settings."""

    model: ModelConfig
    data: DataConfig
    train: TrainSettings
    source: str = "<config>"


def load_train_config(target: str | Path | Mapping[str, Any], *, base_dir: str | Path | None = None) -> TrainConfig:
    """A ``TrainConfig`` from a YAML path or a mapping (relative data paths resolve against ``base_dir``,
    by default the YAML file's folder or the working directory for a mapping).

    Example:
        >>> config = load_train_config("examples/shapes/train.yaml")
        >>> config.train.max_steps
    """
    if isinstance(target, Mapping):
        return parse_train_config(target, source="<train config>", base_dir=Path(base_dir or "."))
    path = Path(target)
    return parse_train_config(read_yaml(path), source=str(path), base_dir=Path(base_dir or path.parent))


def parse_train_config(data: Any, *, source: str = "<config>", base_dir: str | Path = ".") -> TrainConfig:
    """Validate a training mapping ``{plugins, model, data, train}``; see the module docstring."""
    from zoo.data import parse_data_config

    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping with 'model', 'data' and 'train' keys, got {type(data).__name__}"
        )
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{source}: unknown key {key!r}; {suggest(str(key), TOP_KEYS)}")
    for key in ("model", "data", "train"):
        if key not in data:
            raise ConfigError(f"{source}: missing required section {key!r} (a training file has model, data and train)")
    model = parse_model_config({"model": data["model"], "plugins": data.get("plugins") or []}, source=source)
    data_config = parse_data_config(data["data"], source=source, base_dir=Path(base_dir))
    settings = parse_train_settings(data["train"], source=source)
    if settings.gradient_checkpointing and not model.gradient_checkpointing:
        model = dataclasses.replace(model, gradient_checkpointing=True)
    if settings.eval_steps is not None and getattr(data_config, "eval", None) is None:
        raise ConfigError(f"{source}: train.eval_steps = {settings.eval_steps} but data.eval is not set; add data.eval")
    return TrainConfig(model=model, data=data_config, train=settings, source=source)


def parse_train_settings(data: Any, *, source: str = "<config>") -> TrainSettings:
    """Validate the ``train:`` section alone (types, choices, ranges, exclusive keys)."""
    if data is None:
        data = {}
    if isinstance(data, Mapping) and isinstance(data.get("feature_cache"), bool):  # YAML 1.1 reads on / off as booleans
        data = {**data, "feature_cache": "on" if data["feature_cache"] else "off"}
    settings: TrainSettings = config_from_dict(TrainSettings, data, "train", source)
    if (settings.max_steps is None) == (settings.epochs is None):
        both = "both are set" if settings.max_steps is not None else "neither is set"
        raise ConfigError(f"{source}: train needs exactly one of 'max_steps' and 'epochs' ({both})")
    positive = ("max_steps", "epochs", "batch_size", "eval_batch_size", "grad_accum", "lr", "save_steps",
                "save_total_limit", "eval_steps", "logging_steps", "feature_cache_max_gb")  # fmt: skip
    for key in positive:
        value = getattr(settings, key)
        if value is not None and value <= 0:
            raise ConfigError(f"{source}: train.{key} = {value!r} is not valid; it must be positive")
    for key, low, high in (("warmup_ratio", 0.0, 1.0), ("weight_decay", 0.0, None), ("max_grad_norm", 0.0, None)):
        value = getattr(settings, key)
        if value < low or (high is not None and value >= high):
            rule = f"in [{low}, {high})" if high is not None else f">= {low}"
            raise ConfigError(f"{source}: train.{key} = {value!r} is not valid; it must be {rule}")
    if settings.bf16 and settings.fp16:
        raise ConfigError(f"{source}: train.bf16 and train.fp16 are both true; choose one mixed-precision dtype")
    if settings.fsdp_config is not None and not settings.fsdp:
        raise ConfigError(f"{source}: train.fsdp_config is set but train.fsdp is not true; set train.fsdp: true")
    if settings.fsdp and settings.deepspeed:
        raise ConfigError(f"{source}: train.fsdp and train.deepspeed are both set; choose one sharding engine")
    if settings.feature_cache_dir is not None and not settings.feature_cache_dir.strip():
        raise ConfigError(f"{source}: train.feature_cache_dir = {settings.feature_cache_dir!r}: expected a folder path")
    if isinstance(settings.deepspeed, str) and not Path(settings.deepspeed).is_file():
        raise ConfigError(f"{source}: train.deepspeed = {settings.deepspeed!r}: no such DeepSpeed JSON file")
    return settings
