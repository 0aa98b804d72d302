"""zoo bench: benchmark grids of compositions side by side.

Example:
    >>> from zoo.bench import load_bench, run_bench, write_outputs
    >>> run = run_bench(load_bench("default"))
    >>> paths = write_outputs(run, "bench-out")
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ComponentCache": "zoo.bench.cache",
    "BenchSpec": "zoo.bench.grid",
    "Combination": "zoo.bench.grid",
    "expand": "zoo.bench.grid",
    "load_bench": "zoo.bench.grid",
    "parse_bench": "zoo.bench.grid",
    "parse_shard": "zoo.bench.grid",
    "plan_grid": "zoo.bench.grid",
    "shard_of": "zoo.bench.grid",
    "load_run": "zoo.bench.merge",
    "merge_runs": "zoo.bench.merge",
    "Timing": "zoo.bench.timing",
    "time_interleaved": "zoo.bench.timing",
    "format_table": "zoo.bench.report",
    "write_outputs": "zoo.bench.report",
    "BenchRun": "zoo.bench.runner",
    "build_models": "zoo.bench.runner",
    "run_bench": "zoo.bench.runner",
}

__all__ = [
    "BenchRun",
    "BenchSpec",
    "Combination",
    "ComponentCache",
    "Timing",
    "build_models",
    "expand",
    "format_table",
    "load_bench",
    "load_run",
    "merge_runs",
    "parse_bench",
    "parse_shard",
    "plan_grid",
    "run_bench",
    "shard_of",
    "time_interleaved",
    "write_outputs",
]


def __getattr__(name: str) -> Any:
    # lazy, so that `zoo list` (whose parser imports zoo.bench.command) never imports torch
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo.bench' has no attribute {name!r}")
