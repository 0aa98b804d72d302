"""CPU seconds (user + system) of short ``zoo`` commands, each in a fresh process, as a user's shell runs them.

Goals: ``zoo list`` / ``zoo show`` / ``zoo validate`` of a tiny composition well under 1 s of CPU;
``zoo build --vision clip-vit-l-14-336 --projector mlp2x-gelu --lm qwen2-7b --meta`` under 2 s.

Each command runs ``--repeats`` times with ``python -m zoo``; the CPU time is the child's own
(``os.wait4``), so the load of other jobs on a shared machine moves it much less than wall time.
``cold`` is the first run with an empty plan cache (``ZOO_CACHE_DIR`` set to a new temporary folder),
``warm`` the median of the later runs (zoo's plan cache holds what planning on ``meta`` found, see
``zoo.core.plan_cache``). The floor lines are the imports alone: what any command that builds a
transformers component on ``meta`` pays before zoo does anything.

    python benchmarks/cli_startup.py [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from _common import machine_line, median, report

COMMANDS = {
    "zoo list": ["list"],
    "zoo show tiny-clip": ["show", "tiny-clip"],
    "zoo validate tiny-clip-mlp-qwen2": ["validate", "tiny-clip-mlp-qwen2"],
    "zoo build clip-vit-l-14-336 + mlp2x-gelu + qwen2-7b --meta": [
        "build", "--vision", "clip-vit-l-14-336", "--projector", "mlp2x-gelu", "--lm", "qwen2-7b", "--meta",
    ],
}  # fmt: skip
FLOORS = {  # imports only, ended like zoo's console script ends these commands (no interpreter teardown)
    "floor: import torch": "import os, torch; os._exit(0)",
    "floor: import torch, transformers.modeling_utils": "import os, torch, transformers.modeling_utils; os._exit(0)",
}


def cpu_seconds(argv: list[str], env: dict[str, str]) -> float:
    """User + system CPU seconds of one child process (``os.wait4``)."""
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in (0, 2):
        raise SystemExit(f"{argv} exited with {child.returncode}")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "ZOO_CACHE_DIR": cache}
        for label, command in COMMANDS.items():
            runs = [cpu_seconds([sys.executable, "-m", "zoo", *command], env) for _ in range(args.repeats)]
            results[label] = {"cold_cpu_s": round(runs[0], 2), "warm_cpu_s": round(median(runs[1:] or runs), 2)}
        for label, code in FLOORS.items():
            runs = [cpu_seconds([sys.executable, "-c", code], env) for _ in range(args.repeats)]
            results[label] = {"cpu_s": round(median(runs), 2)}
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[:3]
    report("CPU seconds of zoo commands (fresh process each)", {"machine": machine_line(), "load_average": load,
                                                                 **results}, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
