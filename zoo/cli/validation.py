"""``zoo validate``: every problem of a zoo YAML file in one run, each with its key path.

A target is a model file, a training file (a model plus ``data:`` and ``train:``), a bench grid file
(``grid:``), a registered composition or bench name, a mapping, or a ``ModelConfig``. The validators of
each section run in collecting mode (:mod:`zoo.sdk.problems`), so that one run reports the unknown keys,
wrong types and bad values of every section; then, section by section, what depends on them:

- every component name is resolved (close matches on a typo) and its options are checked against its
  config class;
- with three valid slots, the composition is planned on the ``meta`` device (:func:`zoo.core.builder.plan`,
  what ``zoo build`` runs first): the contract, the verified output shapes, LoRA targets, image size
  and context limits, the image placeholder; with an invalid slot it is skipped, and a note says so;
- in a training file, ``data.train`` / ``data.eval`` must be files and ``data.image_folder`` a folder,
  and ``data.max_length`` must leave room for one image's positions (the planned image tokens);
- in a bench file, every entry of the grid is checked, then every combination is planned: those whose
  contract fails are listed as skipped (the run would skip them too), not as problems.

Example:
    >>> [p.key for p in zoo.validate("train.yaml")]
    ['train.max_stepz', 'model.projector.name', 'data.train']
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ConfigError, ZooError, suggest
from zoo.sdk.limits import brief
from zoo.sdk.problems import Problems, attempt
from zoo.sdk.specs import SLOTS

if TYPE_CHECKING:
    from zoo.bench.grid import BenchSpec
    from zoo.core.config import ModelConfig

__all__ = ["FILE_KINDS", "Problem", "Validation", "check", "plan_summary", "validate"]

FILE_KINDS = ("model", "train", "bench")
_KEY = re.compile(r"(?:unknown key |missing required key )?'?([A-Za-z_][\w-]*(?:\.[\w<>:+-]+|\[\d+\])*)'?(?=[ :;,]|$)")


@dataclass(frozen=True)
class Problem:
    """One problem: the YAML key path (``""`` for the file as a whole), the message and its error type.

    ``message`` is the one line the CLI prints: it names the file, the key, the bad value and what
    would work.
    """

    key: str
    message: str
    error: str = "ConfigError"

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        """``{"key", "message", "error"}`` (``zoo validate --json``)."""
        return {"key": self.key, "message": self.message, "error": self.error}


@dataclass
class Validation:
    """What :func:`check` found.

    Attributes:
        source: the file (or ``registry.yaml:models.NAME``) that was checked.
        kind: ``model``, ``train`` or ``bench`` (``""`` when the file could not be read).
        problems: every problem, in the order found.
        notes: checks that were skipped because what they depend on is invalid, and why.
        summary: what was checked, for the ``ok`` line: names and contract, data, combinations.
    """

    source: str
    kind: str = ""
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {"ok": self.ok, "kind": self.kind, "source": self.source,
                "problems": [p.to_dict() for p in self.problems], "notes": list(self.notes), **self.summary}  # fmt: skip


def validate(target: Any, *, plugins: Sequence[str] = ()) -> list[Problem]:
    """Every problem of a zoo YAML file (model, training or bench grid) or composition; ``[]`` when valid.

    Args:
        target: a YAML path, a registered composition or bench name, a mapping or a ``ModelConfig``.
        plugins: extra plugin modules or ``.py`` files to load first (like ``--plugin``).

    Example:
        >>> problems = zoo.validate("train.yaml")
        >>> for problem in problems:
        ...     print(problem.key, "->", problem.message)
    """
    return check(target, plugins=plugins).problems


def check(target: Any, *, plugins: Sequence[str] = ()) -> Validation:
    """:func:`validate` with the details: the kind of file, notes on skipped checks, and a summary."""
    from zoo.core.config import ModelConfig

    problems = Problems()
    if isinstance(target, ModelConfig):
        result = Validation(source=target.source, kind="model")
        result.summary = _check_model(target, target.source, None, tuple(plugins), problems)
        return _finish(result, problems)
    try:
        data, source, base_dir = _read(target)
    except ZooError as error:
        return _finish(Validation(source=str(target)[:200]), problems, error)
    kind = _kind_of(data)
    result = Validation(source=source, kind=kind)
    if kind == "bench":
        result.summary = _check_bench(data, source, base_dir, tuple(plugins), problems)
    elif kind == "train":
        result.summary = _check_train(data, source, base_dir, tuple(plugins), problems)
    else:
        result.summary = _check_model(data, source, base_dir, tuple(plugins), problems)
    return _finish(result, problems)


# -- reading -----------------------------------------------------------------------------------------
def _read(target: Any) -> tuple[Any, str, Path | None]:
    """The raw data, its source name and the folder its relative paths resolve against."""
    if isinstance(target, Mapping):
        return target, "<config>", Path(".")
    if not isinstance(target, str | os.PathLike):
        raise ConfigError(f"cannot validate {brief(target)}: expected a YAML path, a registered composition or "
                          "bench name, a mapping or a ModelConfig")  # fmt: skip
    from zoo.checkpoint.kinds import is_zoo_checkpoint
    from zoo.core.config import _exists, read_yaml

    path = Path(target)
    if is_zoo_checkpoint(path):
        raise ConfigError(f"{str(path)!r} is a zoo checkpoint, not a YAML file: 'zoo verify {path}' checks its files "
                          "against its manifest (zoo.load checks everything else when it loads it)")  # fmt: skip
    if path.suffix in {".yaml", ".yml"} or _exists(path):
        return read_yaml(path), str(path), path.parent
    from zoo.bench.grid import registered_benches
    from zoo.core.registry import get_registry

    name = str(target)
    compositions = get_registry().compositions
    if name in compositions:
        return compositions[name], f"registry.yaml:models.{name}", None
    benches = registered_benches()
    if name in benches:
        return benches[name], f"registry.yaml:benches.{name}", Path(".")
    raise ConfigError(
        f"{brief(name)} is neither a YAML file nor a registered composition or bench; "
        f"{suggest(name[:100], [*compositions, *benches])} (see 'zoo list model')"
    )


def _kind_of(data: Any) -> str:
    if isinstance(data, Mapping) and "grid" in data:
        return "bench"
    if isinstance(data, Mapping) and ("data" in data or "train" in data):
        return "train"
    return "model"


def _finish(result: Validation, problems: Problems, error: ZooError | None = None) -> Validation:
    if error is not None:
        problems.add(error)
    result.problems = [_problem(e, result.source) for e in problems.errors]
    result.notes = list(problems.notes)
    return result


def _problem(error: ZooError, source: str) -> Problem:
    message = " ".join(str(error).split())
    key = getattr(error, "key", None)
    if key is None:
        text = message.removeprefix(f"{source}: ") if source else message
        found = _KEY.match(text)
        key = found.group(1) if found and ("." in found.group(1) or text.startswith(("unknown", "missing"))) else ""
    return Problem(key=key, message=message, error=type(error).__name__)


def _quietly(function: Any, *args: Any, **kwargs: Any) -> Any:
    """``function`` in collecting mode with a scratch collector: its problems were recorded already."""
    try:
        return function(*args, problems=Problems(), **kwargs)
    except ZooError:
        return None


# -- a model file, or the model: section of a training file -------------------------------------------
def _check_model(
    data: Any,
    source: str,
    base_dir: Path | None,
    plugins: tuple[str, ...],
    problems: Problems,
    *,
    reported: bool = False,
) -> dict[str, Any]:
    """Parse, resolve names and options per slot, then plan on ``meta``; returns the summary.

    ``reported``: the section's parse problems were recorded already (a training file's).
    """
    from zoo.core.config import ModelConfig, _plugin_reference, parse_model_config, parse_slot

    config: ModelConfig | None
    if isinstance(data, ModelConfig):
        config = data
    elif reported:
        config = _quietly(parse_model_config, data, source=source, base_dir=base_dir)
    else:
        config = attempt(problems, parse_model_config, data, source=source, base_dir=base_dir, problems=problems)
    choices: dict[str, Any] = {}
    if config is not None:
        choices = {kind: config.slot(kind) for kind in SLOTS}
        config_plugins = config.plugins
    else:  # a slot (or the section) cannot be read: check the names of the slots that can
        model = data.get("model", data) if isinstance(data, Mapping) else None
        for kind in SLOTS:
            if isinstance(model, Mapping) and kind in model:
                choice = _quietly(parse_slot, kind, model[kind], source)
                if choice is not None:
                    choices[kind] = choice
        raw = data.get("plugins") if isinstance(data, Mapping) else None
        named = [p for p in raw if isinstance(p, str) and p.strip()] if isinstance(raw, list) else []
        config_plugins = tuple(_plugin_reference(p, base_dir) for p in named)
    slots_ok = _check_slots(choices, config, source, (*config_plugins, *plugins), problems)
    if config is None or len(slots_ok) < len(SLOTS):
        bad = [f"model.{kind}" for kind in SLOTS if kind not in slots_ok]
        problems.note(f"{source}: the contract (checked on meta from the three components together) was not "
                      f"checked: fix {', '.join(bad) or 'the model section'} first")  # fmt: skip
        return {"names": {kind: choice.name for kind, choice in choices.items()}}
    mark = len(problems)
    facts = attempt(problems, plan_summary, config, plugins)
    if facts is None or len(problems) > mark:
        return {"names": {kind: config.slot(kind).name for kind in SLOTS}}
    return facts


def _check_slots(
    choices: Mapping[str, Any], config: ModelConfig | None, source: str, plugins: Sequence[str], problems: Problems
) -> set[str]:
    """Resolve each slot's name and check its options; the slots that passed."""
    from zoo.core.config import component_config
    from zoo.core.registry import get_registry

    registry = get_registry(tuple(plugins))
    dtype = config.dtype if config is not None else "float32"
    good = set()
    for kind, choice in choices.items():
        mark = len(problems)
        try:
            spec, implied = registry.resolve(kind, choice.name, key=f"{source}: model.{kind}.name")
        except ZooError as error:
            problems.add(error)
            continue
        attempt(problems, component_config, spec, choice.options, implied=implied, dtype=dtype,
                key=f"model.{kind}", source=source, problems=problems)  # fmt: skip
        if len(problems) == mark:
            good.add(kind)
    return good


def plan_summary(config: ModelConfig, plugins: Sequence[str] = ()) -> dict[str, Any]:
    """Plan ``config`` on ``meta`` (:func:`zoo.core.builder.plan`) and keep what a summary and later checks need:
    ``names``, ``contract``, ``image_tokens`` (per image, or by any-res pinpoint) and its text.

    The outcome of a composition of built-in components is cached (:mod:`zoo.core.plan_cache`), so checking
    it again imports no model library.
    """
    from zoo.core.plan_cache import cached_composition

    return cached_composition("plan", config, plugins, lambda: _plan(config, plugins))


def _plan(config: ModelConfig, plugins: Sequence[str]) -> dict[str, Any]:
    from zoo.core.anyres import describe_image_tokens
    from zoo.core.builder import plan

    checked = plan(config, plugins=tuple(plugins))
    contract = checked.contract.to_dict()
    tokens = (contract.get("anyres") or {}).get("tokens_by_pinpoint", contract["image_tokens"])
    return {"names": checked.names, "contract": contract, "image_tokens": tokens,
            "image_tokens_text": describe_image_tokens(tokens)}  # fmt: skip


# -- a training file ---------------------------------------------------------------------------------
def _check_train(
    data: Mapping[str, Any], source: str, base_dir: Path | None, plugins: tuple[str, ...], problems: Problems
) -> dict[str, Any]:
    """Every section's own rules (``parse_train_config``), then names, plan, data paths and room for an image."""
    from zoo.core.config import parse_model_config
    from zoo.core.data_config import check_data_paths, check_room_for_an_image, parse_data_config
    from zoo.train.config import parse_train_config

    base = Path(base_dir or ".")
    parsed = attempt(problems, parse_train_config, data, source=source, base_dir=base, problems=problems)
    model_data = {"model": data.get("model"), "plugins": data.get("plugins") or []}
    if parsed is not None:
        model, data_config = parsed.model, parsed.data
    else:
        model = _quietly(parse_model_config, model_data, source=source) if "model" in data else None
        data_config = (
            _quietly(parse_data_config, data["data"], source=source, base_dir=base) if "data" in data else None
        )
    summary: dict[str, Any] = {}
    if "model" in data:
        target = model if model is not None else model_data
        summary = _check_model(target, source, None, plugins, problems, reported=True)
    if data_config is not None:
        check_data_paths(data_config, source=source, problems=problems)
        summary["data"] = {"train": data_config.train, "eval": data_config.eval, "max_length": data_config.max_length}
        if "image_tokens" in summary:
            attempt(problems, _with_source, check_room_for_an_image, source, data_config.max_length,
                    summary["image_tokens"])  # fmt: skip
        elif "model" in data:
            problems.note(f"{source}: data.max_length was not checked against the image tokens: the composition "
                          "could not be planned")  # fmt: skip
    if parsed is not None:
        summary["train"] = {k: v for k, v in vars(parsed.train).items() if v is not None and k != "fsdp_config"}
    return summary


def _with_source(check: Any, source: str, *args: Any) -> None:
    try:
        check(*args)
    except ZooError as error:
        raise type(error)(f"{source}: {error}", key=getattr(error, "key", None)) from error


# -- a bench grid file -------------------------------------------------------------------------------
def _check_bench(
    data: Mapping[str, Any], source: str, base_dir: Path | None, plugins: tuple[str, ...], problems: Problems
) -> dict[str, Any]:
    """The grid's schema, names and options (``parse_bench``), data paths, then every combination's plan."""
    from zoo.bench.grid import parse_bench
    from zoo.core.data_config import check_data_paths

    spec: BenchSpec | None = attempt(
        problems, parse_bench, data, source=source, base_dir=base_dir or Path("."), problems=problems
    )
    if spec is None:
        problems.note(f"{source}: the combinations of the grid were not planned: fix the grid first")
        return {}
    if spec.quality is not None:
        check_data_paths(spec.quality.data, source=source, problems=problems)
    return _plan_combinations(spec, (*spec.plugins, *plugins), problems)


def _plan_combinations(spec: BenchSpec, plugins: Sequence[str], problems: Problems) -> dict[str, Any]:
    """Plan every combination: contract failures are skipped (as ``zoo bench`` would), not problems."""
    from zoo.bench.grid import expand
    from zoo.core.config import parse_model_config
    from zoo.core.data_config import check_room_for_an_image

    valid, skipped = [], []
    for combination in expand(spec):
        where = f"{spec.source} [{combination.label}]"
        try:
            config = parse_model_config(combination.model_dict(spec.plugins), source=where)
            facts = plan_summary(config, plugins)
        except ZooError as error:
            skipped.append({"combination": combination.label, "reason": str(error).removeprefix(f"{where}: "),
                            "error_type": type(error).__name__})  # fmt: skip
            continue
        valid.append(combination.label)
        if spec.quality is not None:
            attempt(problems, _with_source, check_room_for_an_image, where, spec.quality.data.max_length,
                    facts["image_tokens"])  # fmt: skip
    return {"combinations": len(valid) + len(skipped), "valid": valid, "skipped": skipped}
