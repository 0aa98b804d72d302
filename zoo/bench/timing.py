"""Timings with ``torch.utils.benchmark``: medians and spreads over blocks, sides interleaved.

Every timing is a ``torch.utils.benchmark.Timer`` measurement (``blocked_autorange``: the Timer picks a
block size that makes its own overhead negligible, its first runs are the warm-up). A timing is taken in
``rounds``; within a round each call is measured on every side (zoo, then transformers' Llava, or the
other way round: the order alternates ABBA from round to round), so that drift of the machine lands on
both sides of a ratio alike. The rounds of one call are merged (``Measurement.merge``) and reported as the
median and inter-quartile range of the per-call times of every block. A timing whose IQR exceeds
``noise_threshold`` times its median is *noisy*: its number says more about the machine than the model.

Example:
    >>> timings = time_interleaved({"zoo": {"step": lambda: None}}, min_run_time=0.01, rounds=2)
    >>> timings["zoo"]["step"].median_ms > 0
    True
"""

from __future__ import annotations

import timeit
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.benchmark import Measurement, Timer

__all__ = ["MIN_BLOCKS", "NOISE_THRESHOLD", "Timing", "time_interleaved"]

NOISE_THRESHOLD = 0.1  # torch.utils.benchmark warns from an IQR of 10% of the median too
MIN_BLOCKS = 4  # fewer blocks than this cannot show a spread (torch's adaptive_autorange waits for 4 too)


@dataclass(frozen=True)
class Timing:
    """Median and quartiles of the per-call time over every timed block, in milliseconds.

    Attributes:
        median_ms / q1_ms / q3_ms: quantiles of the per-call times (each block's time / calls per block).
        blocks: how many timed blocks the quantiles are over.
        calls_per_block: calls in each block (chosen by the Timer).
        round_spread: (largest - smallest) of the rounds' medians / the median: drift of the machine
            between rounds, which the quartiles of the pooled blocks can hide.
    """

    median_ms: float
    q1_ms: float
    q3_ms: float
    blocks: int
    calls_per_block: int = 1
    round_spread: float = 0.0

    @classmethod
    def from_measurement(cls, measurement: Measurement, round_medians: list[float] | None = None) -> Timing:
        """The quantiles of a (merged) ``Measurement``; ``round_medians`` (seconds) of the rounds merged into it."""
        times = torch.tensor(measurement.times, dtype=torch.float64) * 1e3  # [blocks] ms per call
        q1, median, q3 = (float(v) for v in times.quantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)))
        drift = 0.0
        if round_medians and median > 0:
            drift = (max(round_medians) - min(round_medians)) * 1e3 / median
        return cls(median, q1, q3, len(measurement.times), measurement.number_per_run, drift)

    @property
    def iqr_ms(self) -> float:
        """Third minus first quartile."""
        return self.q3_ms - self.q1_ms

    @property
    def spread(self) -> float:
        """IQR relative to the median (0.05 = the middle half of the blocks lies within 5% of the median)."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else float("inf")

    def noisy(self, threshold: float = NOISE_THRESHOLD) -> bool:
        """Whether the spread (IQR / median) or the drift between rounds exceeds ``threshold``, or there are
        too few blocks to tell.

        Quartiles of fewer than ``MIN_BLOCKS`` blocks say little about the spread (of two blocks, the IQR
        is half their difference): such a timing counts as noisy until measured longer.
        """
        return self.blocks < MIN_BLOCKS or self.spread > threshold or self.round_spread > threshold

    def to_dict(self, prefix: str) -> dict[str, float | int]:
        """``{prefix}_ms_median``, ``_ms_iqr``, ``_ms_q1``, ``_ms_q3``, ``_spread``, ``_round_spread``, ``_blocks``."""
        return {
            f"{prefix}_ms_median": round(self.median_ms, 4),
            f"{prefix}_ms_iqr": round(self.iqr_ms, 4),
            f"{prefix}_ms_q1": round(self.q1_ms, 4),
            f"{prefix}_ms_q3": round(self.q3_ms, 4),
            f"{prefix}_spread": round(self.spread, 4),
            f"{prefix}_round_spread": round(self.round_spread, 4),
            f"{prefix}_blocks": self.blocks,
        }


def _timer(fn: Callable[[], Any], name: str, side: str, device: torch.device) -> Timer:
    # On CPU, the accelerator-synchronising default clock only adds overhead (and forces bigger blocks).
    clock = timeit.default_timer if device.type == "cpu" else None
    kwargs: dict[str, Any] = {} if clock is None else {"timer": clock}
    return Timer(
        stmt="fn()",
        globals={"fn": fn},
        label=name,
        description=side,
        num_threads=torch.get_num_threads(),  # Timer's default is 1 thread; measure what the user runs
        **kwargs,
    )


def time_interleaved(
    sides: Mapping[str, Mapping[str, Callable[[], Any]]],
    *,
    min_run_time: float,
    rounds: int = 4,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, Timing]]:
    """Time every call of every side, interleaving sides and calls round by round.

    Args:
        sides: side name (``"zoo"``, ``"ref"``) -> call name -> zero-argument function.
        min_run_time: seconds spent timing each call of each side, over all rounds together.
        rounds: how many times each call is measured per side (``blocked_autorange`` each time, at least
            one block each); the side that goes first alternates (ABBA) so that neither side always runs
            on a warmer machine.
        device: where the calls run (CUDA is synchronised around every block).

    Returns:
        ``timings[side][call]``.
    """
    device = torch.device(device)
    names = list(sides)
    timers = {
        side: {call: _timer(fn, call, side, device) for call, fn in calls.items()} for side, calls in sides.items()
    }
    measured: dict[str, dict[str, list[Measurement]]] = {
        side: {call: [] for call in calls} for side, calls in sides.items()
    }
    calls = list(dict.fromkeys(call for side in names for call in sides[side]))
    per_round = min_run_time / rounds
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        for call in calls:
            for side in order:
                if call in timers[side]:
                    measured[side][call].append(timers[side][call].blocked_autorange(min_run_time=per_round))
    return {
        side: {
            call: Timing.from_measurement(Measurement.merge(runs)[0], [run.median for run in runs])
            for call, runs in by_call.items()
        }
        for side, by_call in measured.items()
    }
