"""Confidence intervals for held-out accuracy over seeds and items, and ties in a ranking.

A combination trained with ``quality: {seeds: N}`` has an ``N x items`` matrix of exact-match scores
(1 correct, 0 wrong). :func:`bootstrap_interval` resamples both at once: ``N`` seeds with replacement
and ``items`` held-out questions with replacement, ``samples`` times with a fixed generator, and
returns the mean and the central ``confidence`` interval of the resampled means (percentile
bootstrap). Resampling the seeds carries the training noise (init and data order), resampling the
items the finite test set. With the same generator seed and the same sizes every combination gets
the same resampling indices (a paired bootstrap: differences between combinations are not inflated
by different draws).

:func:`mark_ties` flags the combinations whose interval overlaps the best one's: the data cannot tell
them apart from the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["BOOTSTRAP_SEED", "bootstrap_interval", "mark_ties"]

BOOTSTRAP_SEED = 0


def bootstrap_interval(
    scores: Sequence[Sequence[float]], *, samples: int = 2000, confidence: float = 0.95, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float, float]:
    """``(mean, low, high)`` of a ``seeds x items`` score matrix (see the module docstring).

    Example:
        >>> bootstrap_interval([[1, 0, 1, 1], [1, 1, 0, 1]], samples=500)[0]
        0.75
    """
    import numpy as np

    matrix = np.asarray(scores, dtype=np.float64)  # [S, n]
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"scores must be a non-empty seeds x items matrix, got shape {matrix.shape}")
    rng = np.random.default_rng(seed)
    seeds, items = matrix.shape
    seed_index = rng.integers(0, seeds, size=(samples, seeds))  # [B, S]
    item_index = rng.integers(0, items, size=(samples, items))  # [B, n]
    means = matrix[seed_index[:, :, None], item_index[:, None, :]].mean(axis=(1, 2))  # [B]
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(matrix.mean()), float(low), float(high)


def mark_ties(ranked: Sequence[dict[str, Any]]) -> None:
    """Set ``tied_with_best`` on the ``ok`` rows of a ranking (best first) that carry an interval.

    The best row gets ``"best"``; a row whose interval overlaps the best one's gets ``True``, others
    ``False``. Rows without an interval (one seed and no items, or not ``ok``) are left alone.
    """
    ok = [r for r in ranked if r.get("quality_status") == "ok" and r.get("eval_accuracy_low") is not None]
    if not ok:
        return
    best = ok[0]
    best["tied_with_best"] = "best"
    for row in ok[1:]:
        row["tied_with_best"] = bool(row["eval_accuracy_high"] >= best["eval_accuracy_low"])
