"""Quality in the grid: train every combination with one budget, score it on held-out data, rank them.

A bench file with ``data:`` and ``train:`` sections (the training file's schema, :mod:`zoo.train.config`)
trains each valid combination with :func:`zoo.train.run.train` (transformers' ``Trainer``) and scores the
final model with :func:`zoo.train.evaluate.evaluate`, once with the images and once with blank ones. Every
combination gets the same ``train:`` settings, hence the same seed, the same data order (the sampler is
seeded by ``train.seed``) and the same number of steps. Slot entries may carry a training policy
(``{name: tiny-clip, train: full}``); the speed measurements ignore it (inference does not depend on
it). A combination whose loss turns NaN or infinite is kept and marked ``diverged``, and ranks last::

    grid: {vision: [...], projector: [...], lm: [...]}
    data: {train: data/train.json, eval: data/eval.json, max_length: 128}
    train: {max_steps: 200, batch_size: 16, lr: 2.0e-3, seed: 0}
    quality: {seeds: 3, schedule: halving, eta: 3, min_steps: 50}   # optional

``quality:`` (optional):

- ``seeds: N`` trains each combination ``N`` times, with ``train.seed``, ``train.seed + 1``, ... (the seed
  sets the random init of new weights and the data order). The row gives the mean held-out accuracy
  over seeds and items with a bootstrap interval (:mod:`zoo.bench.intervals`; ``confidence``, default
  0.95, ``bootstrap`` resamples, default 2000), the accuracy of each seed, and ``tied_with_best`` for the
  combinations whose interval overlaps the best one's. The blank-image control is scored once per
  combination, on the first seed's model.
- ``schedule: halving`` (successive halving, :mod:`zoo.bench.halving`) trains every combination
  ``min_steps``, keeps the best ``1/eta`` (at least one), continues the survivors to ``min_steps * eta``,
  and so on up to ``train.max_steps``; pruned combinations are listed with the step and score at which
  they stopped. ``schedule: full`` (the default) trains every combination the whole budget.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.bench.quality_spec import QUALITY_KEYS, SCHEDULES, QualitySpec, parse_quality

if TYPE_CHECKING:
    from zoo.bench.grid import Case

__all__ = [
    "QUALITY_FIELDS",
    "QUALITY_KEYS",
    "SCHEDULES",
    "TIME_FIELDS",
    "QualitySpec",
    "SeedRun",
    "aggregate",
    "parse_quality",
    "rank",
    "score",
    "train_and_evaluate",
    "train_seed",
]

QUALITY_FIELDS = (
    "eval_accuracy", "eval_accuracy_low", "eval_accuracy_high", "eval_accuracy_per_seed", "tied_with_best",
    "eval_loss", "blank_image_accuracy", "majority_baseline", "eval_n", "seeds", "train_loss_final",
    "train_steps", "train_steps_total", "train_seconds", "train_samples_per_s", "trainable_params", "diverged",
    "quality_status", "pruned_at_step", "pruned_score", "feature_cache",
)  # fmt: skip
TIME_FIELDS = ("time_step_ms", "time_data", "time_tower", "time_projector", "time_lm_forward", "time_backward",
               "time_optimizer")  # fmt: skip


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


@dataclass
class SeedRun:
    """One training run of a combination (one seed, up to one budget) and its held-out score."""

    seed: int
    steps: int
    seconds: float
    samples_per_s: float
    curve: list[list[float | None]]
    final_loss: float | None
    scored: dict[str, Any]
    checkpoint: Path
    time_shares: dict[str, Any] = field(default_factory=dict)
    feature_cache: dict[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> list[float]:
        """1.0 / 0.0 per held-out item, in file order."""
        return [1.0 if p["correct"] else 0.0 for p in self.scored["predictions"]]

    @property
    def diverged(self) -> bool:
        """A NaN / infinite training or held-out loss."""
        return any(loss is None for loss in [*(p[1] for p in self.curve), self.final_loss]) or not math.isfinite(
            self.scored["loss"]
        )


def _config(case: Case, quality: QualitySpec, out: Path, seed: int, plugins: tuple[str, ...]) -> Any:
    from zoo.core.config import parse_model_config
    from zoo.train.config import TrainConfig

    model_config = parse_model_config(case.combination.model_dict(plugins, policy=True), source=case.config.source)
    settings = dataclasses.replace(quality.train, output_dir=str(out), seed=seed)
    return TrainConfig(model=model_config, data=quality.data, train=settings, source=case.config.source)


def run_dir(work_dir: Path, case: Case, seed: int, seeds: int) -> Path:
    """Where a combination's run for ``seed`` trains (one folder per seed when there are several)."""
    out = work_dir / _slug(case.combination.label)
    return out / f"seed-{seed}" if seeds > 1 else out


def train_seed(
    case: Case,
    quality: QualitySpec,
    *,
    work_dir: Path,
    plugins: tuple[str, ...],
    max_new_tokens: int,
    seed: int,
    stop_at: int | None = None,
    resume: bool = False,
) -> SeedRun:
    """Train ``case`` with ``seed`` (up to ``stop_at`` steps, or resuming an earlier stop) and score it held out."""
    from zoo.checkpoint.loading import load
    from zoo.train.run import train

    out = run_dir(work_dir, case, seed, quality.seeds)
    result = train(_config(case, quality, out, seed, plugins), resume=resume, stop_at=stop_at)
    curve = _loss_curve(result.log_file)
    metrics = result.metrics
    final = curve[-1][1] if curve else _finite(result.train_loss)
    scored = score(load(result.final_checkpoint), quality, max_new_tokens=max_new_tokens)
    return SeedRun(seed, result.global_step, float(metrics.get("train_runtime", math.nan)),
                   float(metrics.get("train_samples_per_second", math.nan)), curve, final, scored,
                   result.final_checkpoint, result.time_shares, result.feature_cache)  # fmt: skip


def score(model: Any, quality: QualitySpec, *, max_new_tokens: int, blank_images: bool = False) -> dict[str, Any]:
    """:func:`zoo.train.evaluate.evaluate` on ``data.eval`` with the grid's settings."""
    from zoo.train.evaluate import evaluate

    data, settings = quality.data, quality.train
    return evaluate(model, data.eval, image_folder=data.image_folder_for(data.eval),  # type: ignore[arg-type]
                    max_new_tokens=max_new_tokens, batch_size=settings.eval_batch_size or settings.batch_size,
                    max_length=data.max_length, blank_images=blank_images)  # fmt: skip


def aggregate(runs: list[SeedRun], quality: QualitySpec, blank: dict[str, Any] | None) -> dict[str, Any]:
    """Row fields of a combination from its seeds' runs (mean accuracy with a bootstrap interval)."""
    from zoo.bench.intervals import bootstrap_interval

    first = runs[0]
    mean, low, high = bootstrap_interval([r.correct for r in runs], samples=quality.bootstrap,
                                         confidence=quality.confidence)  # fmt: skip
    losses = [r.scored["loss"] for r in runs]
    finals = [r.final_loss for r in runs]
    row: dict[str, Any] = {
        "eval_accuracy": round(mean, 4),
        "eval_accuracy_low": round(low, 4),
        "eval_accuracy_high": round(high, 4),
        "eval_accuracy_per_seed": [round(r.scored["accuracy"], 4) for r in runs],
        "seeds": [r.seed for r in runs],
        "eval_loss": round(sum(losses) / len(losses), 4) if all(map(math.isfinite, losses)) else None,
        "majority_baseline": round(first.scored["majority_baseline"], 4),
        "eval_n": first.scored["n"],
        "train_loss_final": None if None in finals else round(sum(finals) / len(finals), 4),  # type: ignore[arg-type]
        "train_steps": first.steps,
        "train_steps_total": sum(r.steps for r in runs),
        "train_seconds": round(sum(r.seconds for r in runs), 3),
        "train_samples_per_s": round(sum(r.samples_per_s for r in runs) / len(runs), 3),
        "diverged": any(r.diverged for r in runs),
        "feature_cache": _cache_note(runs),
        **_time_fields(runs),
    }
    if blank is not None:
        row["blank_image_accuracy"] = round(blank["accuracy"], 4)
    row["quality_status"] = "diverged" if row["diverged"] else "ok"
    return row


def _cache_note(runs: list[SeedRun]) -> str:
    """``on: 6000 images, 12 computed`` / ``off: <reason>`` over a combination's runs."""
    reports = [r.feature_cache for r in runs if r.feature_cache]
    if not reports:
        return "-"
    if not reports[0].get("enabled"):
        return f"off: {reports[0].get('reason')}"
    computed = sum(int(r.get("computed", 0)) for r in reports)
    return f"on: {reports[0].get('images')} images, {computed} computed"


def _time_fields(runs: list[SeedRun]) -> dict[str, Any]:
    """Mean step time and shares (data, tower, projector, LM forward, backward, optimizer) over the runs."""
    shares = [r.time_shares for r in runs if r.time_shares]
    if not shares:
        return {}
    fields = {"time_step_ms": round(sum(s["step_ms"] for s in shares) / len(shares), 3)}
    for name in TIME_FIELDS[1:]:
        part = name.removeprefix("time_")
        fields[name] = round(sum(s[part] for s in shares) / len(shares), 4)
    return fields


def train_and_evaluate(
    case: Case, quality: QualitySpec, *, work_dir: Path, plugins: tuple[str, ...], max_new_tokens: int
) -> tuple[dict[str, Any], list[list[float | None]]]:
    """Train ``case``'s composition with the grid's budget (once per seed), score it held out; return row fields
    and the first seed's loss curve.

    A failure (an error while training or scoring) is returned as ``quality_status: failed`` with its reason,
    so that the grid goes on.
    """
    from zoo.checkpoint.loading import load

    row: dict[str, Any] = {}
    runs: list[SeedRun] = []
    try:
        row["trainable_params"] = _counts(case, plugins)
        for seed in quality.seed_values():
            runs.append(train_seed(case, quality, work_dir=work_dir, plugins=plugins, max_new_tokens=max_new_tokens,
                                   seed=seed))  # fmt: skip
        blank = score(load(runs[0].checkpoint), quality, max_new_tokens=max_new_tokens, blank_images=True)
    except Exception as error:  # noqa: BLE001 - one combination that fails must not stop the grid
        row.update(quality_status="failed", quality_reason=f"{type(error).__name__}: {error}", diverged=False)
        return row, runs[0].curve if runs else []
    row.update(aggregate(runs, quality, blank))
    return row, runs[0].curve


def _counts(case: Case, plugins: tuple[str, ...]) -> int:
    """Trainable parameters of the combination with its training policy (built on ``meta``)."""
    from zoo.core.builder import build
    from zoo.core.config import parse_model_config

    config = parse_model_config(case.combination.model_dict(plugins, policy=True), source=case.config.source)
    return sum(c["trainable"] for c in build(config, meta=True).parameter_counts().values())


_STATUS_ORDER = {"ok": 0, "pruned": 1, "diverged": 2, "failed": 3}


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per combination with quality results, best first: accuracy, then eval loss; then the combinations
    pruned by successive halving (latest round first, then by score), diverged and failed ones last (kept, not
    dropped). Rows of a grid with intervals get ``tied_with_best`` (:func:`zoo.bench.intervals.mark_ties`)."""
    from zoo.bench.intervals import mark_ties

    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("quality_status") and row["combination"] not in seen:
            seen[row["combination"]] = row

    def key(row: dict[str, Any]) -> tuple[int, float, float, float]:
        status = row["quality_status"]
        if status == "pruned":
            return (1, -float(row.get("pruned_at_step") or 0), -float(row.get("pruned_score") or 0), 0.0)
        if status != "ok":
            return (_STATUS_ORDER.get(status, 3), 0.0, 0.0, 0.0)
        loss = row.get("eval_loss")
        return (0, 0.0, -row["eval_accuracy"], math.inf if loss is None else loss)

    ranked = sorted(seen.values(), key=key)
    mark_ties(ranked)
    return ranked
