"""The ``data:``, ``train:`` and ``quality:`` sections of a bench file, validated: the quality half of the bench
schema (:mod:`zoo.bench.grid` parses the rest and calls :func:`parse_quality`; :mod:`zoo.bench.quality` runs it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ConfigError
from zoo.sdk.limits import brief, check_int_range
from zoo.sdk.problems import Problems, Reported, attempt, report

if TYPE_CHECKING:
    from zoo.core.data_config import DataConfig
    from zoo.train.config import TrainSettings

__all__ = ["QUALITY_KEYS", "SCHEDULES", "QualitySpec", "parse_quality"]

QUALITY_KEYS = ("seeds", "schedule", "eta", "min_steps", "confidence", "bootstrap")
SCHEDULES = ("full", "halving")
# quality: integers -> their [low, high]: a typo such as seeds: 1e9 is refused before anything trains
_INTEGER_RANGES = {"seeds": (1, 1000), "eta": (2, 1000), "min_steps": (1, 10**9), "bootstrap": (100, 10**7)}


@dataclass(frozen=True)
class QualitySpec:
    """The validated ``data:``, ``train:`` and ``quality:`` sections of a bench file (``raw``: as written)."""

    data: DataConfig
    train: TrainSettings
    raw: dict[str, Any]
    seeds: int = 1
    schedule: str = "full"
    eta: int = 3
    min_steps: int | None = None
    confidence: float = 0.95
    bootstrap: int = 2000

    def seed_values(self) -> list[int]:
        """The ``train.seed`` of each of the ``seeds`` runs of a combination."""
        return [self.train.seed + i for i in range(self.seeds)]


def parse_quality(
    data: Mapping[str, Any], *, source: str, base_dir: Path, problems: Problems | None = None
) -> QualitySpec | None:
    """Validate a bench file's ``data:``, ``train:`` and ``quality:`` sections (``data`` and ``train`` both or
    neither; ``data.eval`` required; ``quality`` only with them).

    ``train.output_dir`` is not accepted: each combination trains in its own folder of the run.
    ``problems``: record every problem instead of raising the first (``zoo.sdk.problems``).
    """
    if "data" not in data and "train" not in data:
        if "quality" in data:
            raise ConfigError(f"{source}: quality: is set but data: and train: are not; a quality grid needs both")
        return None
    for key in ("data", "train"):
        if key not in data:
            other = "train" if key == "data" else "data"
            raise ConfigError(
                f"{source}: {other}: is set but {key}: is not; a quality grid needs both sections", key=key
            )
    from zoo.core.data_config import parse_data_config
    from zoo.train.config import parse_train_settings

    mark = len(problems) if problems is not None else 0
    data_config = attempt(
        problems, parse_data_config, data["data"], source=source, base_dir=base_dir, problems=problems
    )
    if data_config is not None and data_config.eval is None:
        report(problems, ConfigError(f"{source}: data.eval is not set; a quality grid scores every combination on "
                                     "held-out data", key="data.eval"))  # fmt: skip
    if isinstance(data["train"], Mapping) and "output_dir" in data["train"]:
        report(problems, ConfigError(f"{source}: train.output_dir: each combination trains under the run's "
                                     "--train-dir; drop it", key="train.output_dir"))  # fmt: skip
    settings = attempt(problems, parse_train_settings, data["train"], source=source, problems=problems)
    if problems is not None and len(problems) > mark:
        raise Reported(f"{source}: the data: or train: section has problems")
    raw = {"data": dict(data["data"]), "train": dict(data["train"] or {})}
    options = _quality_options(data.get("quality"), settings, source)
    if "quality" in data:
        raw["quality"] = dict(data["quality"] or {})
    return QualitySpec(data_config, settings, raw, **options)


def _quality_options(value: Any, settings: TrainSettings, source: str) -> dict[str, Any]:
    from zoo.core.config import _check_keys
    from zoo.errors import suggest

    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: quality = {brief(value)}: expected a mapping with keys {', '.join(QUALITY_KEYS)}")
    _check_keys(value, QUALITY_KEYS, "quality", source)
    options: dict[str, Any] = {}
    for key, (low, high) in _INTEGER_RANGES.items():
        if key in value:
            options[key] = check_int_range(value[key], low, high, f"{source}: quality.{key}")
    if "confidence" in value:
        level = value["confidence"]
        if not isinstance(level, int | float) or isinstance(level, bool) or not 0 < level < 1:
            raise ConfigError(f"{source}: quality.confidence = {brief(level)}: expected a number in (0, 1), e.g. 0.95")
        options["confidence"] = float(level)
    schedule = value.get("schedule", "full")
    if schedule not in SCHEDULES:
        raise ConfigError(
            f"{source}: quality.schedule = {brief(schedule)} is not valid; {suggest(str(schedule), SCHEDULES)}"
        )
    options["schedule"] = schedule
    if schedule == "halving":
        if settings.max_steps is None:
            raise ConfigError(f"{source}: quality.schedule = 'halving' needs train.max_steps (not train.epochs)")
        if "min_steps" not in options:
            raise ConfigError(
                f"{source}: quality.schedule = 'halving' needs quality.min_steps (the first round's steps)"
            )
        if options["min_steps"] >= settings.max_steps:
            raise ConfigError(
                f"{source}: quality.min_steps = {options['min_steps']} is not below train.max_steps = "
                f"{settings.max_steps}: halving would have one round; lower min_steps or use schedule: full"
            )
    elif "min_steps" in options or "eta" in options:
        key = "min_steps" if "min_steps" in options else "eta"
        raise ConfigError(
            f"{source}: quality.{key} is set but quality.schedule is not 'halving'; add schedule: halving"
        )
    return options
