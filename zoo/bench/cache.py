"""Build each real component once per grid and share it between the combinations that use it.

A component is identified by its slot, the name asked for and its full typed config (options, dtype
and, for a projector, the ``in_dim`` / ``out_dim`` inferred from its neighbours). A 3 x 3 x 3 grid of
towers, projectors and LMs of matching widths thus builds 3 + 3 + 3 components, not 27 x 3. Each
component is dropped as soon as the last combination that needs it is done.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zoo.bench.grid import Case
from zoo.core.builder import call_factory
from zoo.sdk.specs import SLOTS

__all__ = ["ComponentCache", "component_key"]


def component_key(case: Case, kind: str) -> tuple[str, str, str]:
    """``(kind, name, config repr)``: equal keys build equal modules."""
    return kind, case.plan.names[kind], repr(case.plan.configs[kind])


@dataclass
class ComponentCache:
    """Real components by key, with reference counts over the cases still to run.

    Args:
        device: where components are built (the factory runs under ``with torch.device(device)``).
    """

    device: str | torch.device = "cpu"
    modules: dict[tuple[str, str, str], nn.Module] = field(default_factory=dict)
    build_seconds: dict[tuple[str, str, str], float] = field(default_factory=dict)
    builds: Counter = field(default_factory=Counter)
    _uses: Counter = field(default_factory=Counter)

    def expect(self, cases: Iterable[Case]) -> None:
        """Count how many cases will ask for each component (to free it after its last use)."""
        for case in cases:
            for kind in SLOTS:
                self._uses[component_key(case, kind)] += 1

    def components(self, case: Case) -> tuple[dict[str, nn.Module], dict[str, Any]]:
        """The three real components of ``case`` (built now or reused) and how each was obtained.

        Returns:
            ``(modules by slot, info)`` where ``info[kind] = {"reused": bool, "build_s": float}``.
        """
        modules, info = {}, {}
        for kind in SLOTS:
            key = component_key(case, kind)
            reused = key in self.modules
            if not reused:
                self.modules[key] = self._build(case, kind)
            modules[kind] = self.modules[key]
            info[kind] = {"reused": reused, "build_s": self.build_seconds[key]}
        return modules, info

    def release(self, case: Case) -> None:
        """``case`` is done: drop every component no later case needs."""
        dropped = False
        for kind in SLOTS:
            key = component_key(case, kind)
            self._uses[key] -= 1
            if self._uses[key] <= 0 and key in self.modules:
                del self.modules[key]
                dropped = True
        if dropped:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _build(self, case: Case, kind: str) -> nn.Module:
        spec, config = case.plan.specs[kind], case.plan.configs[kind]
        start = time.perf_counter()
        module = call_factory(spec, config, key=f"model.{kind}", source=case.config.source, device=self.device)
        self.build_seconds[component_key(case, kind)] = time.perf_counter() - start
        self.builds[kind] += 1
        return module
