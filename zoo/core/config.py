"""YAML -> validated, frozen configs: the model file, each component slot, and component options.

Every error names the file, the key path, the bad value and what would work. Only ``yaml.safe_load``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.core.anyres import AnyResConfig, parse_anyres
from zoo.errors import ConfigError, suggest
from zoo.sdk.deprecation import Renamed, deprecated_attribute
from zoo.sdk.limits import MAX_CONFIG_INT, InputLimitError, brief
from zoo.sdk.problems import Problems, Reported, attempt, report
from zoo.sdk.specs import SLOTS, ComponentSpec
from zoo.sdk.yaml_io import load_yaml_file

__all__ = [
    "DTYPES",
    "FROZEN_MODES",
    "TRAIN_MODES",
    "ComponentChoice",
    "LoraSettings",
    "ModelConfig",
    "component_config",
    "config_from_dict",
    "load_model_config",
    "parse_model_config",
    "parse_slot",
    "read_yaml",
    "torch_dtype",
]

TRAIN_MODES = ("frozen", "full", "lora")
FROZEN_MODES = ("eval", "train")  # model.<slot>.frozen_mode: how a frozen component runs while the model trains
DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}  # fmt: skip
DEFAULT_TRAIN = {"vision": "frozen", "projector": "full", "lm": "frozen"}


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (peft); ``targets`` defaults to the LM's declared LoRA targets."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: list[str] | None = None


@dataclass(frozen=True)
class ComponentChoice:
    """One slot of a composition: a registered name, its option overrides and its training policy."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    train: str = "frozen"
    lr: float | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    anyres: AnyResConfig | None = None  # model.vision.anyres: any-resolution tiling (zoo.core.anyres)
    frozen_mode: str = "eval"  # train: a frozen component follows model.train() (BatchNorm statistics update)

    @property
    def held_in_eval(self) -> bool:
        """A frozen component that stays in eval mode whatever ``model.train()`` is called with."""
        return self.train == "frozen" and self.frozen_mode == "eval"


@dataclass(frozen=True)
class ModelConfig:
    """A whole composition, validated; ``source`` is where it was read from (for messages)."""

    vision: ComponentChoice
    projector: ComponentChoice
    lm: ComponentChoice
    dtype: str = "float32"
    image_token: str = "<image>"
    image_token_id: int | None = None
    gradient_checkpointing: bool = False
    plugins: tuple[str, ...] = ()
    source: str = "<config>"

    def slot(self, kind: str) -> ComponentChoice:
        """The choice for ``vision``, ``projector`` or ``lm``."""
        return getattr(self, kind)

    def to_dict(self) -> dict[str, Any]:
        """Plain data that ``parse_model_config`` reads back to an equal config."""
        model: dict[str, Any] = {"dtype": self.dtype, "image_token": self.image_token}
        if self.image_token_id is not None:
            model["image_token_id"] = self.image_token_id
        if self.gradient_checkpointing:
            model["gradient_checkpointing"] = True
        for kind in SLOTS:
            choice = self.slot(kind)
            slot: dict[str, Any] = {"name": choice.name, **dict(choice.options), "train": choice.train}
            if choice.lr is not None:
                slot["lr"] = choice.lr
            if choice.train == "lora":
                slot["lora"] = dataclasses.asdict(choice.lora)
            if choice.anyres is not None:
                slot["anyres"] = choice.anyres.to_dict()
            if choice.frozen_mode != "eval":
                slot["frozen_mode"] = choice.frozen_mode
            model[kind] = slot
        data: dict[str, Any] = {"model": model}
        if self.plugins:
            data["plugins"] = list(self.plugins)
        return data


def torch_dtype(name: str, *, key: str = "dtype"):
    """The ``torch.dtype`` for a dtype name (``bf16``, ``float32``...), or a ConfigError naming ``key``."""
    import torch

    canonical = DTYPES.get(name.lower()) if isinstance(name, str) else None
    if canonical is None:
        raise ConfigError(f"{key} = {brief(name)} is not a dtype; {suggest(_word(name), sorted(set(DTYPES.values())))}")
    return getattr(torch, canonical)


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with the bounded safe loader (``zoo.sdk.yaml_io``); errors name the file and line.

    Only regular files up to a size limit are read; aliases, nesting and duplicate keys are checked.
    """
    return load_yaml_file(path)


def load_model_config(target: str | Path | Mapping[str, Any]) -> ModelConfig:
    """A ``ModelConfig`` from a YAML path, a registered composition name, or a mapping.

    Example:
        >>> load_model_config("tiny-clip-mlp-qwen2").lm.name
        'tiny-qwen2'
    """
    if isinstance(target, Mapping):
        return parse_model_config(target)
    path = Path(target)
    if path.suffix in {".yaml", ".yml"} or _exists(path):
        return parse_model_config(read_yaml(path), source=str(path), base_dir=path.parent)
    from zoo.core.registry import get_registry

    compositions = get_registry().compositions
    if str(target) in compositions:
        return parse_model_config(compositions[str(target)], source=f"registry.yaml:models.{target}")
    raise ConfigError(
        f"{brief(str(target))} is neither a YAML file nor a registered composition; "
        f"{suggest(str(target)[:100], compositions)} (see 'zoo list model')"
    )


def parse_model_config(
    data: Any, *, source: str = "<config>", base_dir: str | Path | None = None, problems: Problems | None = None
) -> ModelConfig:
    """Validate a composition mapping (``{plugins, model: {vision, projector, lm, dtype...}}``).

    A mapping without a ``model`` key but with slot keys is accepted as the ``model`` section itself
    (the form used by ``registry.yaml``). A relative plugin path (``.py`` or containing a ``/``) is
    resolved against ``base_dir``, the folder of the config file, never the working directory.

    ``problems``: collect every problem instead of raising the first (``zoo.sdk.problems``); a bad value is
    then replaced by its default, and ``Reported`` is raised only when a slot cannot be read at all.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping with a 'model' key, got {type(data).__name__}")
    if "model" not in data and any(k in data for k in SLOTS):
        data = {"model": {k: v for k, v in data.items() if k != "plugins"}, "plugins": data.get("plugins", [])}
    _check_keys(data, ("plugins", "model"), "", source, required=("model",), problems=problems)
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) and p.strip() for p in plugins):
        report(problems, ConfigError(f"{source}: plugins = {brief(plugins)}: expected a list of module names or "
                                     ".py paths", key="plugins"))  # fmt: skip
        plugins = []
    plugins = [_plugin_reference(p, base_dir) for p in plugins]
    if "model" not in data:  # reported above (only a collecting caller gets here)
        raise Reported(f"{source}: no model section")
    model = data["model"]
    if not isinstance(model, Mapping):
        raise ConfigError(
            f"{source}: model = {brief(model)}: expected a mapping with vision, projector and lm", key="model"
        )
    _check_keys(
        model,
        (*SLOTS, "dtype", "image_token", "image_token_id", "gradient_checkpointing"),
        "model",
        source,
        SLOTS,
        problems=problems,
    )
    dtype = model.get("dtype", "float32")
    canonical = DTYPES.get(dtype.lower()) if isinstance(dtype, str) else None
    if canonical is None:
        report(problems, ConfigError(f"{source}: model.dtype = {brief(dtype)} is not a dtype; "
                                     f"{suggest(_word(dtype), sorted(set(DTYPES.values())))}", key="model.dtype"))  # fmt: skip
        canonical = "float32"
    image_token = attempt(
        problems, _typed, model.get("image_token", "<image>"), str, "model.image_token", source, default="<image>"
    )
    if not image_token.strip() or image_token != image_token.strip():
        report(problems, ConfigError(f"{source}: model.image_token = {brief(image_token)}: expected a non-empty "
                                     "token such as '<image>'", key="model.image_token"))  # fmt: skip
        image_token = "<image>"
    image_token_id = attempt(problems, _typed, model.get("image_token_id"), int | None, "model.image_token_id", source)
    if image_token_id is not None and image_token_id < 0:
        report(problems, ConfigError(f"{source}: model.image_token_id = {image_token_id}: expected a token id >= 0",
                                     key="model.image_token_id"))  # fmt: skip
        image_token_id = None
    checkpointing = attempt(
        problems, _typed, model.get("gradient_checkpointing", False), bool, "model.gradient_checkpointing", source,
        default=False,
    )  # fmt: skip
    slots = {
        kind: attempt(problems, parse_slot, kind, model[kind], source, problems) for kind in SLOTS if kind in model
    }
    if len(slots) < len(SLOTS) or any(choice is None for choice in slots.values()):
        raise Reported(f"{source}: a slot of model cannot be read")  # its problems are recorded
    return ModelConfig(
        **slots,
        dtype=canonical,
        image_token=image_token,
        image_token_id=image_token_id,
        gradient_checkpointing=checkpointing,
        plugins=tuple(plugins),
        source=source,
    )


def parse_slot(kind: str, value: Any, source: str, problems: Problems | None = None) -> ComponentChoice:
    """One slot (``model.vision`` ...): a name, or a mapping of the name, options and training policy."""
    key = f"model.{kind}"
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {key} = {brief(value)}: expected a name or a mapping with a 'name' key", key=key)
    if "name" not in value:
        raise ConfigError(f"{source}: {key} has no 'name' (see 'zoo list {kind}' for the choices)", key=f"{key}.name")
    options = dict(value)
    name = _typed(options.pop("name"), str, f"{key}.name", source)
    anyres = None
    if "anyres" in options:
        raw = options.pop("anyres")
        if kind != "vision":
            report(problems, ConfigError(f"{source}: {key}.anyres: any-resolution tiling is an option of the vision "
                                         "slot; move it to model.vision.anyres", key=f"{key}.anyres"))  # fmt: skip
        else:
            anyres = attempt(problems, parse_anyres, raw, key=f"{key}.anyres", source=source)
    train = options.pop("train", DEFAULT_TRAIN[kind])
    if train not in TRAIN_MODES:
        report(problems, ConfigError(f"{source}: {key}.train = {brief(train)} is not a training mode; "
                                     f"{suggest(_word(train), TRAIN_MODES)}", key=f"{key}.train"))  # fmt: skip
        train = DEFAULT_TRAIN[kind]
    if train == "lora" and kind != "lm":
        report(problems, ConfigError(f"{source}: {key}.train = 'lora': LoRA applies to the language model; use "
                                     "frozen or full", key=f"{key}.train"))  # fmt: skip
        train = DEFAULT_TRAIN[kind]
    frozen_mode = options.pop("frozen_mode", "eval")
    if frozen_mode not in FROZEN_MODES:
        report(problems, ConfigError(
            f"{source}: {key}.frozen_mode = {brief(frozen_mode)} is not valid; {suggest(_word(frozen_mode), FROZEN_MODES)} "
            "(eval: a frozen component never leaves eval mode; train: it follows model.train(), so BatchNorm "
            "statistics update and dropout is on)", key=f"{key}.frozen_mode"))  # fmt: skip
        frozen_mode = "eval"
    if frozen_mode != "eval" and train != "frozen":
        report(problems, ConfigError(
            f"{source}: {key}.frozen_mode = {frozen_mode!r} applies to a frozen component, but {key}.train = "
            f"{brief(train)}; drop {key}.frozen_mode", key=f"{key}.frozen_mode"))  # fmt: skip
        frozen_mode = "eval"
    lr = options.pop("lr", None)
    if lr is not None:
        try:
            lr = _typed(lr, float, f"{key}.lr", source)
            if not math.isfinite(lr) or lr <= 0:
                raise ConfigError(
                    f"{source}: {key}.lr = {brief(lr)} is not valid; expected a finite number > 0", key=f"{key}.lr"
                )
        except ConfigError as error:
            report(problems, error)
            lr = None
    lora_data = options.pop("lora", None)
    if lora_data is not None and train != "lora":
        report(problems, ConfigError(f"{source}: {key}.lora is set but {key}.train = {brief(train)}; set "
                                     f"{key}.train: lora or drop it", key=f"{key}.lora"))  # fmt: skip
        lora_data = None
    lora = attempt(
        problems, config_from_dict, LoraSettings, lora_data or {}, f"{key}.lora", source, problems,
        default=LoraSettings(),
    )  # fmt: skip
    for field_name, ok, rule in (
        ("r", lora.r >= 1, "a positive integer"),
        ("alpha", lora.alpha > 0, "positive"),
        ("dropout", 0 <= lora.dropout < 1, "in [0, 1)"),  # NaN fails it too
    ):
        if not ok:
            value = getattr(lora, field_name)
            report(problems, ConfigError(f"{source}: {key}.lora.{field_name} = {brief(value)} is not valid; it must "
                                         f"be {rule}", key=f"{key}.lora.{field_name}"))  # fmt: skip
            lora = dataclasses.replace(lora, **{field_name: getattr(LoraSettings(), field_name)})
    return ComponentChoice(
        name=name, options=options, train=train, lr=lr, lora=lora, anyres=anyres, frozen_mode=frozen_mode
    )


def _check_keys(
    data: Mapping, allowed: Any, path: str, source: str, required: Any = (), problems: Problems | None = None
) -> None:
    """Unknown keys of ``data`` (each one, when collecting) and missing ``required`` ones."""
    for key in data:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            report(problems, ConfigError(f"{source}: unknown key {brief(where)}; {suggest(_word(key), allowed)}",
                                         key=_word(where)))  # fmt: skip
    for key in required:
        if key not in data:
            where = f"{path}.{key}" if path else key
            report(problems, ConfigError(f"{source}: missing required key {where!r}", key=where))


def config_from_dict(
    cls: type, data: Any, path: str, source: str = "<config>", problems: Problems | None = None
) -> Any:
    """Build dataclass ``cls`` from ``data``, checking unknown keys, types and declared choices.

    ``path`` is the YAML key path of ``data`` (``model.vision``), used in every message. With
    ``problems`` every bad key is recorded and left at its default (``Reported`` if a required one is
    missing).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: {path} = {brief(data)}: expected a mapping", key=path)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    _check_keys(data, names, path, source, problems=problems)
    choices: dict[str, tuple[str, ...]] = getattr(cls, "choices", {})
    values = {}
    for key, value in data.items():
        if key not in names:  # recorded by _check_keys (only a collecting caller gets here)
            continue
        try:
            value = _typed(value, hints[key], f"{path}.{key}", source)
            if key in choices and value is not None and value not in choices[key]:
                raise ConfigError(
                    f"{source}: {path}.{key} = {brief(value)} is not valid; {suggest(_word(value), choices[key])}",
                    key=f"{path}.{key}",
                )
        except ConfigError as error:
            report(problems, error)
            continue
        values[key] = value
    try:
        return cls(**values)
    except TypeError as error:  # a required field left out after a recorded problem
        if problems is None:
            raise
        raise Reported(f"{source}: {path} cannot be read") from error


def component_config(
    spec: ComponentSpec,
    options: Mapping[str, Any],
    *,
    implied: Mapping[str, Any] | None = None,
    dtype: str = "float32",
    key: str = "",
    source: str = "<config>",
    extra: Mapping[str, Any] | None = None,
    problems: Problems | None = None,
) -> Any:
    """The typed config of ``spec``: preset defaults < name-implied values < ``options`` < ``extra``.

    ``arch`` mappings merge key by key, so a user can override one architecture field of a preset.
    ``problems``: record every bad option instead of raising the first (``zoo validate``).
    """
    key = key or f"model.{spec.kind}"
    data: dict[str, Any] = {**spec.defaults, **(implied or {})}
    for name, value in options.items():
        if name == "arch" and isinstance(value, Mapping) and isinstance(data.get("arch"), Mapping):
            data["arch"] = {**data["arch"], **value}
        else:
            data[name] = value
    data.update(extra or {})
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    if "dtype" in fields:
        raw = data.get("dtype") or dtype
        canonical = DTYPES.get(str(raw).lower())
        if canonical is None:
            report(problems, ConfigError(f"{source}: {key}.dtype = {brief(raw)} is not a dtype; valid choices: "
                                         f"{sorted(set(DTYPES.values()))}", key=f"{key}.dtype"))  # fmt: skip
        data["dtype"] = canonical or dtype
    for name, value in (implied or {}).items():
        value = _coerce_implied(spec.config_cls, name, value)
        if name in options and options[name] != value:
            report(problems, ConfigError(f"{source}: {key}.{name} = {brief(options[name])} contradicts the name "
                                         f"{key}.name, which implies {name} = {value!r}; drop {key}.{name} or change "
                                         "the name", key=f"{key}.{name}"))  # fmt: skip
        data[name] = value
    return config_from_dict(spec.config_cls, data, key, source, problems)


def _coerce_implied(cls: type, name: str, value: Any) -> Any:
    field_types = {f.name: f.type for f in dataclasses.fields(cls)}
    if isinstance(value, str) and "int" in str(field_types.get(name, "")) and value.isdigit():
        return int(value)
    return value


def _typed(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against a simple type hint (and coerce int -> float); raise a ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _typed(value, option, key, source)
            except ConfigError:
                continue
        raise ConfigError(f"{source}: {key} = {brief(value)} has the wrong type; expected {_type_name(hint)}", key=key)
    if hint is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(
                f"{source}: {key} = {brief(value)} has the wrong type; expected {_type_name(hint)}", key=key
            )
        (item_hint, *_) = typing.get_args(hint) or (Any,)
        return [_typed(v, item_hint, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {key} = {brief(value)} has the wrong type; expected a mapping", key=key)
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 2**1000:
            raise InputLimitError(f"{source}: {key} = {brief(value)} is out of range for a number", key=key)
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    if isinstance(hint, type) and (
        isinstance(value, bool)
        if hint is bool
        else isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        if hint is int and not -MAX_CONFIG_INT <= value <= MAX_CONFIG_INT:
            raise InputLimitError(
                f"{source}: {key} = {brief(value)} is out of range; integers are limited to +-{MAX_CONFIG_INT:,}",
                key=key,
            )
        return value
    raise ConfigError(f"{source}: {key} = {brief(value)} has the wrong type; expected {_type_name(hint)}", key=key)


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if origin is not None:
        return f"a list of {_type_name(typing.get_args(hint)[0])}" if origin in (list, tuple) else "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(hint, str(hint))


def _plugin_reference(name: str, base_dir: str | Path | None) -> str:
    """A plugin entry as given, with a relative file path made absolute against the config's folder."""
    if base_dir is None or not (name.endswith(".py") or "/" in name or os.sep in name):
        return name
    path = Path(name).expanduser()
    return name if path.is_absolute() else os.path.normpath(Path(base_dir).resolve() / path)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def _word(value: Any) -> str:
    """``value`` as a short string to find close matches for (never a huge ``str()``)."""
    return value[:100] if isinstance(value, str) else brief(value)


_DEPRECATED: dict[str, Renamed] = {"SLOT_KEYS": ("zoo.sdk.specs", "SLOTS", "0.1.0")}  # one definition of the slots


def __getattr__(name: str) -> Any:
    return deprecated_attribute(__name__, name, _DEPRECATED)
