"""zoo bench: benchmark grids of compositions side by side.

Example:
    >>> from zoo.bench import load_bench, run_bench, write_outputs
    >>> run = run_bench(load_bench("default"))
    >>> paths = write_outputs(run, "bench-out")
"""

from __future__ import annotations

from zoo.bench.cache import ComponentCache
from zoo.bench.grid import BenchSpec, Combination, expand, load_bench, parse_bench, plan_grid
from zoo.bench.report import format_table, write_outputs
from zoo.bench.runner import BenchRun, build_models, run_bench

__all__ = [
    "BenchRun",
    "BenchSpec",
    "Combination",
    "ComponentCache",
    "build_models",
    "expand",
    "format_table",
    "load_bench",
    "parse_bench",
    "plan_grid",
    "run_bench",
    "write_outputs",
]
