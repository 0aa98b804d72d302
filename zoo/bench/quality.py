"""Quality in the grid: train every combination with one budget, score it on held-out data, rank them.

A bench file with ``data:`` and ``train:`` sections (the training file's schema, :mod:`zoo.train_config`)
trains each valid combination with :func:`zoo.train.train` (transformers' ``Trainer``) and scores the
final model with :func:`zoo.evaluate.evaluate`, once with the images and once with blank ones. Every
combination gets the same ``train:`` settings, hence the same seed, the same data order (the sampler is
seeded by ``train.seed``) and the same number of steps. Slot entries may carry a training policy
(``{name: tiny-clip, train: full}``); the speed measurements ignore it (inference does not depend on
it). A combination whose loss turns NaN or infinite is kept and marked ``diverged``, and ranks last::

    grid: {vision: [...], projector: [...], lm: [...]}
    data: {train: data/train.json, eval: data/eval.json, max_length: 128}
    train: {max_steps: 200, batch_size: 16, lr: 2.0e-3, seed: 0}
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ConfigError
from zoo.problems import Problems, Reported, attempt, report

if TYPE_CHECKING:
    from zoo.bench.grid import Case
    from zoo.data_config import DataConfig
    from zoo.train_config import TrainSettings

__all__ = ["QUALITY_FIELDS", "QualitySpec", "parse_quality", "rank", "train_and_evaluate"]

QUALITY_FIELDS = (
    "eval_accuracy", "eval_loss", "blank_image_accuracy", "majority_baseline", "eval_n", "train_loss_final",
    "train_steps", "train_seconds", "train_samples_per_s", "trainable_params", "diverged", "quality_status",
)  # fmt: skip


@dataclass(frozen=True)
class QualitySpec:
    """The validated ``data:`` and ``train:`` sections of a bench file (``raw``: as written, for the report)."""

    data: DataConfig
    train: TrainSettings
    raw: dict[str, Any]


def parse_quality(
    data: Mapping[str, Any], *, source: str, base_dir: Path, problems: Problems | None = None
) -> QualitySpec | None:
    """Validate a bench file's ``data:`` and ``train:`` sections (both or neither; ``data.eval`` required).

    ``train.output_dir`` is not accepted: each combination trains in its own folder of the run.
    ``problems``: record every problem instead of raising the first (``zoo.problems``).
    """
    if "data" not in data and "train" not in data:
        return None
    for key in ("data", "train"):
        if key not in data:
            other = "train" if key == "data" else "data"
            raise ConfigError(
                f"{source}: {other}: is set but {key}: is not; a quality grid needs both sections", key=key
            )
    from zoo.data_config import parse_data_config
    from zoo.train_config import parse_train_settings

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
    return QualitySpec(data_config, settings, {"data": dict(data["data"]), "train": dict(data["train"] or {})})


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", label)


def _finite(value: float) -> float | None:
    """``value``, or ``None`` for NaN / infinity (which JSON cannot hold; the row says ``diverged``)."""
    return value if math.isfinite(value) else None


def _loss_curve(log_file: Path) -> list[list[float | None]]:
    """``[[step, loss], ...]`` from a run's ``log.jsonl`` (a NaN loss becomes ``None``: the run diverged)."""
    if not log_file.is_file():
        return []
    curve = []
    for line in log_file.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record:
            curve.append([float(record["step"]), _finite(float(record["loss"]))])
    return curve


def train_and_evaluate(
    case: Case, quality: QualitySpec, *, work_dir: Path, plugins: tuple[str, ...], max_new_tokens: int
) -> tuple[dict[str, Any], list[list[float | None]]]:
    """Train ``case``'s composition with the grid's budget, score it held out; return row fields and loss curve.

    A failure (an error while training or scoring) is returned as ``quality_status: failed`` with its reason,
    so that the grid goes on.
    """
    from zoo.builder import build
    from zoo.checkpoint import load
    from zoo.config import parse_model_config
    from zoo.evaluate import evaluate
    from zoo.train import train
    from zoo.train_config import TrainConfig

    label = case.combination.label
    out = work_dir / _slug(label)
    model_config = parse_model_config(case.combination.model_dict(plugins, policy=True), source=case.config.source)
    settings = dataclasses.replace(quality.train, output_dir=str(out))
    config = TrainConfig(model=model_config, data=quality.data, train=settings, source=case.config.source)
    row: dict[str, Any] = {}
    curve: list[list[float | None]] = []
    try:
        counts = build(model_config, meta=True).parameter_counts()
        row["trainable_params"] = sum(c["trainable"] for c in counts.values())
        result = train(config)
        curve = _loss_curve(result.log_file)
        metrics = result.metrics
        row["train_steps"] = result.global_step
        row["train_seconds"] = round(float(metrics.get("train_runtime", math.nan)), 3)
        row["train_samples_per_s"] = round(float(metrics.get("train_samples_per_second", math.nan)), 3)
        final = curve[-1][1] if curve else _finite(result.train_loss)
        model = load(result.final_checkpoint)
        data = quality.data
        kwargs = {
            "image_folder": data.image_folder_for(data.eval),  # type: ignore[arg-type]
            "max_new_tokens": max_new_tokens,
            "batch_size": settings.eval_batch_size or settings.batch_size,
            "max_length": data.max_length,
        }
        scored = evaluate(model, data.eval, **kwargs)  # type: ignore[arg-type]
        blank = evaluate(model, data.eval, blank_images=True, **kwargs)  # type: ignore[arg-type]
    except Exception as error:  # noqa: BLE001 - one combination that fails must not stop the grid
        row.update(quality_status="failed", quality_reason=f"{type(error).__name__}: {error}", diverged=False)
        return row, curve
    row["train_loss_final"] = None if final is None else round(final, 4)
    row["eval_accuracy"] = round(scored["accuracy"], 4)
    row["eval_loss"] = round(scored["loss"], 4) if math.isfinite(scored["loss"]) else None
    row["blank_image_accuracy"] = round(blank["accuracy"], 4)
    row["majority_baseline"] = round(scored["majority_baseline"], 4)
    row["eval_n"] = scored["n"]
    row["diverged"] = any(loss is None for loss in [*(p[1] for p in curve), final, row["eval_loss"]])
    row["quality_status"] = "diverged" if row["diverged"] else "ok"
    return row, curve


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per combination with quality results, best first: accuracy, then eval loss; diverged and
    failed combinations last (kept, not dropped)."""
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("quality_status") and row["combination"] not in seen:
            seen[row["combination"]] = row

    def key(row: dict[str, Any]) -> tuple[int, float, float]:
        if row["quality_status"] != "ok":
            return (1 if row["quality_status"] == "diverged" else 2, 0.0, 0.0)
        loss = row.get("eval_loss")
        return (0, -row["eval_accuracy"], math.inf if loss is None else loss)

    return sorted(seen.values(), key=key)
