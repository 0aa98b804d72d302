"""The training file: a model file plus ``data:`` and ``train:`` sections, validated before anything runs.

```yaml
model: {vision: {name: tiny-clip}, projector: {name: mlp2x-gelu}, lm: {name: tiny-qwen2, train: lora}}
data: {train: data/train.json, eval: data/eval.json, max_length: 512}
train: {output_dir: runs/demo, max_steps: 300, batch_size: 32, lr: 1.0e-3, save_steps: 100}
```

``model:`` is parsed by :func:`zoo.core.config.parse_model_config`, ``data:`` by :func:`zoo.core.data_config.parse_data_config`
(paths relative to the file's folder), ``train:`` here. Every error names the key path, the bad value and
the valid choices. ``output_dir`` is relative to the working directory, as with transformers' Trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.core.config import ModelConfig, config_from_dict, parse_model_config, read_yaml
from zoo.errors import ConfigError, suggest
from zoo.sdk.limits import brief
from zoo.sdk.problems import Problems, Reported, attempt, report

if TYPE_CHECKING:
    from zoo.core.data_config import DataConfig

__all__ = ["SCHEDULERS", "TrainConfig", "TrainSettings", "load_train_config", "parse_train_config"]

SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay",
)  # fmt: skip
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop", "adamw_8bit", "lion_32bit")
TOP_KEYS = ("plugins", "model", "data", "train")
FEATURE_CACHE_MODES = ("auto", "on", "off")  # zoo.train.feature_fill
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
    eval_steps: int | None = None  # with data.eval: also every N steps; unset: once, at the end of training
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


def parse_train_config(
    data: Any, *, source: str = "<config>", base_dir: str | Path = ".", problems: Problems | None = None
) -> TrainConfig:
    """Validate a training mapping ``{plugins, model, data, train}``; see the module docstring.

    ``problems``: record every problem of every section instead of raising the first (``zoo.sdk.problems``).
    """
    from zoo.core.data_config import parse_data_config

    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping with 'model', 'data' and 'train' keys, got {type(data).__name__}"
        )
    for key in data:
        if key not in TOP_KEYS:
            report(problems, ConfigError(f"{source}: unknown key {brief(key)}; {suggest(str(key)[:100], TOP_KEYS)}",
                                         key=str(key)[:100]))  # fmt: skip
    for key in ("model", "data", "train"):
        if key not in data:
            report(problems, ConfigError(f"{source}: missing required section {key!r} (a training file has model, "
                                         "data and train)", key=key))  # fmt: skip
    model_data = {"model": data.get("model"), "plugins": data.get("plugins") or []}
    model = (
        attempt(problems, parse_model_config, model_data, source=source, problems=problems) if "model" in data else None
    )
    data_config = (
        attempt(problems, parse_data_config, data["data"], source=source, base_dir=Path(base_dir), problems=problems)
        if "data" in data
        else None
    )
    settings = (
        attempt(problems, parse_train_settings, data["train"], source=source, problems=problems)
        if "train" in data
        else None
    )
    if (
        settings is not None
        and settings.eval_steps is not None
        and data_config is not None
        and data_config.eval is None
    ):
        report(problems, ConfigError(f"{source}: train.eval_steps = {settings.eval_steps} but data.eval is not set; "
                                     "add data.eval", key="train.eval_steps"))  # fmt: skip
    if model is None or data_config is None or settings is None:
        raise Reported(f"{source}: a section cannot be read")  # its problems are recorded
    if settings.gradient_checkpointing and not model.gradient_checkpointing:
        model = dataclasses.replace(model, gradient_checkpointing=True)
    return TrainConfig(model=model, data=data_config, train=settings, source=source)


def parse_train_settings(data: Any, *, source: str = "<config>", problems: Problems | None = None) -> TrainSettings:
    """Validate the ``train:`` section alone (types, choices, ranges, exclusive keys).

    ``problems``: record every problem instead of raising the first; a bad value keeps its default.
    """
    if data is None:
        data = {}
    if isinstance(data, Mapping) and isinstance(data.get("feature_cache"), bool):  # YAML 1.1 reads on / off as booleans
        data = {**data, "feature_cache": "on" if data["feature_cache"] else "off"}
    mark = len(problems) if problems is not None else 0
    settings: TrainSettings = config_from_dict(TrainSettings, data, "train", source, problems)
    told = {error.key for error in problems.errors[mark:]} if problems is not None else set()

    def bad(message: str, key: str, *about: str) -> None:
        """Report a rule's problem, unless a value it is about was bad already (and replaced by its default)."""
        if not told & {f"train.{name}" for name in about}:
            report(problems, ConfigError(f"{source}: {message}", key=key))

    if (settings.max_steps is None) == (settings.epochs is None):
        both = "both are set" if settings.max_steps is not None else "neither is set"
        bad(f"train needs exactly one of 'max_steps' and 'epochs' ({both})", "train.max_steps", "max_steps", "epochs")
    positive = ("max_steps", "epochs", "batch_size", "eval_batch_size", "grad_accum", "lr", "save_steps",
                "save_total_limit", "eval_steps", "logging_steps", "feature_cache_max_gb")  # fmt: skip
    for key in positive:
        value = getattr(settings, key)
        if value is not None and value <= 0:
            bad(f"train.{key} = {value!r} is not valid; it must be positive", f"train.{key}", key)
    for key, low, high in (("warmup_ratio", 0.0, 1.0), ("weight_decay", 0.0, None), ("max_grad_norm", 0.0, None)):
        value = getattr(settings, key)
        if value < low or (high is not None and value >= high):
            rule = f"in [{low}, {high})" if high is not None else f">= {low}"
            bad(f"train.{key} = {value!r} is not valid; it must be {rule}", f"train.{key}", key)
    if settings.bf16 and settings.fp16:
        bad("train.bf16 and train.fp16 are both true; choose one mixed-precision dtype", "train.fp16", "bf16", "fp16")
    if settings.fsdp_config is not None and not settings.fsdp:
        bad("train.fsdp_config is set but train.fsdp is not true; set train.fsdp: true", "train.fsdp_config", "fsdp")
    if settings.fsdp and settings.deepspeed:
        bad("train.fsdp and train.deepspeed are both set; choose one sharding engine", "train.deepspeed", "fsdp")
    if settings.feature_cache_dir is not None and not settings.feature_cache_dir.strip():
        bad(
            f"train.feature_cache_dir = {settings.feature_cache_dir!r}: expected a folder path",
            "train.feature_cache_dir",
        )
    if isinstance(settings.deepspeed, str) and not Path(settings.deepspeed).is_file():
        bad(f"train.deepspeed = {brief(settings.deepspeed)}: no such DeepSpeed JSON file", "train.deepspeed")
    return settings
