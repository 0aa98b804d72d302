"""The quality grid: 2 towers x 2 projectors x 2 LMs trained alike on the shapes task, ranked held out.

Writes the shapes data next to the grid file unless it is already there with these counts (6000
training and 300 held-out questions, 64 px), runs ``zoo bench`` on ``grids/quality-shapes.yaml`` (speed measurements, then
each combination trained with the same seed, data order and steps and scored with and without the
images), writes the outputs to ``--out`` and prints the ranking.

    python benchmarks/quality_grid.py [--out bench-out/quality] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import machine_line, report

from zoo.bench import load_bench, run_bench, write_outputs
from zoo.bench.quality import rank
from zoo.shapes import write_shapes

HERE = Path(__file__).parent
GRID = HERE / "grids" / "quality-shapes.yaml"
FIELDS = ("combination", "eval_accuracy", "blank_image_accuracy", "eval_loss", "train_loss_final", "trainable_params",
          "flops_per_sample", "forward_ms_median", "train_seconds", "quality_status")  # fmt: skip
SHAPES_DATA = {"train": 6000, "eval": 300, "seed": 0, "image_size": 64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-out/quality")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    data = GRID.parent / "data" / "shapes"
    meta = data / "meta.json"
    written = json.loads(meta.read_text()) if meta.is_file() else {}
    if {k: written.get(k) for k in SHAPES_DATA} != SHAPES_DATA:
        write_shapes(data, **SHAPES_DATA, overwrite=True)
    start = time.perf_counter()
    run = run_bench(load_bench(GRID), progress=not args.json, train_dir=Path(args.out) / "train")
    write_outputs(run, args.out)
    ranked = rank(run.results)
    report(
        "quality grid on the shapes task (same budget, seed and data order for every combination)",
        {
            "machine": machine_line(run.machine["device"]),
            "load_average_start_end": [run.machine["start"].get("loadavg"), run.machine["end"].get("loadavg")],
            "seconds": round(time.perf_counter() - start, 1),
            "ranking": [{key: r.get(key) for key in FIELDS} for r in ranked],
            "majority_baseline": ranked[0].get("majority_baseline") if ranked else None,
            "outputs": args.out,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
