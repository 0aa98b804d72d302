"""Where a training step's time goes: data loading, tower, projector, LM forward, backward, optimizer.

:class:`StepProfiler` times a window of optimizer steps of transformers' ``Trainer`` (by default the
2nd to the 51st: the first pays one-time costs) with ``time.perf_counter``: forward hooks around the
tower, the projector and the LM; ``ZooTrainer`` reports the wait for the next batches
(``get_batch_samples``: the dataset, the collator, and the feature cache reads) and each
``training_step`` (forward and backward); the step ends at ``on_step_end``. Per step::

    data        waiting for the batch (dataset + collator, or the dataloader workers)
    tower       the vision tower's forward (0 when the features come from the feature cache)
    projector   the projector's forward
    lm_forward  the LM's forward, loss included
    backward    the rest of training_step: the backward pass (and the small glue of the forward)
    optimizer   the rest of the step: gradient clipping, optimizer and scheduler steps, callbacks

On a CUDA device each boundary synchronises, inside the window only (the window's steps are a little
slower; the others are untouched). Gradient accumulation puts several micro-batches in a step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from zoo.core.multimodal import MultiModal

__all__ = ["PARTS", "StepProfiler", "format_shares"]

PARTS = ("data", "tower", "projector", "lm_forward", "backward", "optimizer")
_LABELS = {"lm_forward": "LM forward"}


class StepProfiler(TrainerCallback):
    """Per-part time of a window of training steps (see the module docstring).

    Args:
        model: the ``MultiModal`` (unwrapped); hooks go on its ``vision``, ``projector`` and ``lm``.
        skip: steps left out at the start (one-time costs).
        steps: steps measured after those.
    """

    def __init__(self, model: MultiModal, *, skip: int = 1, steps: int = 50) -> None:
        import torch

        self.skip, self.window = skip, steps
        self.totals = dict.fromkeys(PARTS, 0.0)
        self.step_seconds = 0.0
        self.measured = 0
        self.completed = 0
        self._step_start: float | None = None
        self._step = _fresh_step()
        self._in_step = False
        self._handles: list[Any] = []
        # the model moves to its device later (Trainer): on a CUDA machine, synchronise whatever it is on
        self._sync: Callable[[], None] = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        self._starts: dict[str, float] = {}
        for part, module in (("tower", model.vision), ("projector", model.projector), ("lm_forward", model.lm)):
            self._handles.append(module.register_forward_pre_hook(self._pre(part)))
            self._handles.append(module.register_forward_hook(self._post(part)))

    # -- state --------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether the current step is in the measured window."""
        return self.skip <= self.completed < self.skip + self.window

    def _now(self) -> float:
        if self.active:
            self._sync()
        return time.perf_counter()

    def _pre(self, part: str) -> Callable[..., None]:
        def hook(module: Any, args: Any) -> None:
            if self._in_step and self.active:
                self._starts[part] = self._now()

        return hook

    def _post(self, part: str) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            start = self._starts.pop(part, None)
            if start is not None and self._in_step and self.active:
                self._step["forward"][part] += self._now() - start

        return hook

    # -- called by ZooTrainer -----------------------------------------------------------------------
    def data_begin(self) -> float:
        """The step begins with fetching its batches; returns the start time."""
        now = self._now()
        if self._step_start is None:
            self._step_start = now
        return now

    def data_end(self, start: float) -> None:
        """The batches are in."""
        if self.active:
            self._step["data"] += self._now() - start

    def train_step_begin(self) -> float:
        """A micro-batch's forward and backward begin."""
        self._in_step = True
        return self._now()

    def train_step_end(self, start: float) -> None:
        """A micro-batch's forward and backward end."""
        self._in_step = False
        if self.active:
            self._step["train"] += self._now() - start

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Trainer's optimizer step is done: close the step's account."""
        if self._step_start is not None and self.active:
            total = self._now() - self._step_start
            step = self._step
            forward = sum(step["forward"].values())
            for part, seconds in step["forward"].items():
                self.totals[part] += seconds
            self.totals["data"] += step["data"]
            self.totals["backward"] += max(step["train"] - forward, 0.0)
            self.totals["optimizer"] += max(total - step["data"] - step["train"], 0.0)
            self.step_seconds += total
            self.measured += 1
        self._step_start = None
        self._step = _fresh_step()
        self.completed += 1

    def remove(self) -> None:
        """Take the hooks off the model."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- results --------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """``{steps, first_step, step_ms, <part>: share of the step}`` (shares sum to 1; ``{}`` before any step)."""
        if not self.measured or self.step_seconds <= 0:
            return {}
        counted = sum(self.totals.values())  # = step_seconds, up to the clamping of rounding noise
        shares = {part: round(self.totals[part] / counted, 4) for part in PARTS}
        return {"steps": self.measured, "first_step": self.skip + 1,
                "step_ms": round(1e3 * self.step_seconds / self.measured, 3), **shares}  # fmt: skip


def _fresh_step() -> dict[str, Any]:
    return {"data": 0.0, "train": 0.0, "forward": dict.fromkeys(("tower", "projector", "lm_forward"), 0.0)}


def format_shares(summary: dict[str, Any]) -> str:
    """One line: ``where a step's time goes (steps 2-51, 153.0 ms/step): data 2%, tower 48%, ...``."""
    if not summary:
        return "where a step's time goes: no step was measured"
    first, last = summary["first_step"], summary["first_step"] + summary["steps"] - 1
    parts = ", ".join(f"{_LABELS.get(p, p)} {100 * summary[p]:.0f}%" for p in PARTS)
    return f"where a step's time goes (steps {first}-{last}, {summary['step_ms']:.1f} ms/step): {parts}"
