"""Successive halving over the combinations of a quality grid (``quality: {schedule: halving}``).

Round budgets are ``min_steps, min_steps * eta, min_steps * eta^2, ...`` up to ``train.max_steps`` (the
last round always reaches it). Round 1 trains every combination (every seed) ``min_steps`` steps and
scores it held out; the best ``ceil(n / eta)`` (mean accuracy over seeds, then held-out loss) continue,
resumed from their checkpoints, to the next budget; the others are pruned with the step and score at
which they stopped. The learning-rate schedule of every run is the one of the whole ``train.max_steps``
(a round stops the run at its budget, :class:`zoo.train.trainer.StopAt`), so a survivor's final model is the
one a full run would give: the winner is scored exactly as in ``schedule: full``, at a fraction of the
steps (8 combinations, ``eta: 3``, ``min_steps = max_steps / 9``: 5 x 1/9 + 2 x 1/3 + 1 x 1 = 2.2 full
budgets instead of 8).

With ``zoo bench --shard I/N`` halving runs within each shard, on that shard's combinations: each shard
sends its own survivor(s) to the full budget, and ``zoo bench merge`` ranks the shards' survivors by their
full-budget scores. A combination pruned in one shard never meets the others, so the merged winner is
the best of the shard winners; the global halving (rounds across machines) would need a merge step
between rounds, which zoo does not do.
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.bench.quality import QualitySpec, SeedRun, aggregate, score, train_seed

if TYPE_CHECKING:
    from zoo.bench.grid import Case

__all__ = ["budgets", "successive_halving"]


def budgets(min_steps: int, eta: int, max_steps: int) -> list[int]:
    """Steps each round trains to: ``min_steps * eta^k`` below ``max_steps``, then ``max_steps``.

    Example:
        >>> budgets(100, 3, 900)
        [100, 300, 900]
    """
    steps, budget = [], min_steps
    while budget < max_steps:
        steps.append(budget)
        budget *= eta
    return [*steps, max_steps]


def _mean(runs: list[SeedRun], key: str) -> float:
    values = [float(r.scored[key]) for r in runs]
    values = [v if math.isfinite(v) else math.inf for v in values]
    return sum(values) / len(values)


def successive_halving(
    cases: list[Case],
    quality: QualitySpec,
    *,
    work_dir: Path,
    plugins: tuple[str, ...],
    max_new_tokens: int,
    progress: bool = False,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[list[float | None]]], dict[str, Any]]:
    """Run the rounds; return row fields by combination label, loss curves by label and a summary.

    The summary holds the budgets, each round's combinations and survivors, the steps trained in total
    (over combinations and seeds) and those the full grid would train.
    """
    from tqdm.auto import tqdm

    from zoo.bench.quality import _counts
    from zoo.checkpoint.loading import load

    if quality.min_steps is None or quality.train.max_steps is None:
        raise ValueError("successive halving needs quality.min_steps and train.max_steps")
    steps = budgets(quality.min_steps, quality.eta, quality.train.max_steps)
    fields: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[SeedRun]] = {}
    rounds: list[dict[str, Any]] = []
    alive = list(cases)
    for index, budget in enumerate(steps):
        last = index == len(steps) - 1
        bar = tqdm(alive, file=sys.stderr, disable=not progress, desc=f"zoo bench: halving round {index + 1} "
                   f"({budget} steps)", unit="combo")  # fmt: skip
        scored = []
        for case in bar:
            label = case.combination.label
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    runs[label] = [
                        train_seed(case, quality, work_dir=work_dir, plugins=plugins, max_new_tokens=max_new_tokens,
                                   seed=seed, stop_at=None if last else budget, resume=index > 0)
                        for seed in quality.seed_values()
                    ]  # fmt: skip
                scored.append(case)
            except Exception as error:  # noqa: BLE001 - one combination that fails must not stop the grid
                fields[label] = {"quality_status": "failed", "quality_reason": f"{type(error).__name__}: {error}",
                                 "diverged": False, "pruned_at_step": budget}  # fmt: skip
        order = sorted(scored, key=lambda c: (-_mean(runs[c.combination.label], "accuracy"),
                                              _mean(runs[c.combination.label], "loss")))  # fmt: skip
        keep = len(order) if last else max(1, math.ceil(len(order) / quality.eta))
        rounds.append({"step": budget, "combinations": [c.combination.label for c in order],
                       "kept": [c.combination.label for c in order[:keep]]})  # fmt: skip
        for case in order[keep:]:
            label = case.combination.label
            row = aggregate(runs[label], quality, None)
            row.update(quality_status="pruned", pruned_at_step=budget, pruned_score=row["eval_accuracy"])
            fields[label] = row
        alive = order[:keep]
    for case in alive:
        label = case.combination.label
        first = runs[label][0]
        blank = score(load(first.checkpoint), quality, max_new_tokens=max_new_tokens, blank_images=True)
        fields[label] = aggregate(runs[label], quality, blank)
    for case in cases:
        label = case.combination.label
        if label in runs and "quality_reason" not in fields[label]:
            fields[label]["trainable_params"] = _counts(case, plugins)
    total = sum(int(f.get("train_steps_total", 0)) for f in fields.values())
    full = len(cases) * quality.seeds * steps[-1]
    summary = {"schedule": "halving", "eta": quality.eta, "budgets": steps, "rounds": rounds, "seeds": quality.seeds,
               "steps_total": total, "steps_full_grid": full,
               "steps_fraction": round(total / full, 4) if full else None}  # fmt: skip
    curves = {label: seeds[0].curve for label, seeds in runs.items()}
    return fields, curves, summary
