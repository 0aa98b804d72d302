"""Exact-match scoring of short answers and the baseline a model that ignores its images can reach."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

__all__ = ["TRAILING_PUNCTUATION", "exact_match", "majority_baseline", "normalize_answer"]

TRAILING_PUNCTUATION = ".,;:!?。，！？\"'`)]}"


def normalize_answer(text: str) -> str:
    """``text`` stripped, case-folded, whitespace collapsed and trailing punctuation dropped.

    Example:
        >>> normalize_answer("  Red Circle!! ")
        'red circle'
    """
    return " ".join(text.split()).casefold().rstrip(TRAILING_PUNCTUATION).rstrip()


def exact_match(prediction: str, reference: str) -> bool:
    """Whether two answers are equal after :func:`normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(reference)


def majority_baseline(references: Sequence[str], groups: Sequence[object] | None = None) -> float:
    """Accuracy of always giving the most frequent (normalised) reference of each group.

    With ``groups`` (question types) this is the best a model blind to the images can score by
    knowing the question type; without, the best single constant answer.
    """
    if not references:
        return 0.0
    keys = list(groups) if groups is not None else [None] * len(references)
    counts: dict[object, Counter] = {}
    for key, reference in zip(keys, references):
        counts.setdefault(key, Counter())[normalize_answer(reference)] += 1
    return sum(c.most_common(1)[0][1] for c in counts.values()) / len(references)
