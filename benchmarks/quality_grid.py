"""The quality grid: 2 towers x 2 projectors x 2 LMs trained alike on the shapes task, ranked held out.

Writes the shapes data next to the grid file unless it is already there with these counts (6000
training and 300 held-out questions, 64 px), runs ``zoo bench`` on ``grids/quality-shapes.yaml`` (speed measurements, then
each combination trained with the same seed, data order and steps and scored with and without the
images), writes the outputs to ``--out`` and prints the ranking, the wall time and the peak RSS.

Variants of the grid (each changes only the named key of the grid file): ``--max-steps N`` (train.max_steps),
``--feature-cache auto|on|off`` and ``--cache-dir DIR`` (train.feature_cache / feature_cache_dir),
``--seeds N`` (quality.seeds), ``--halving --eta 3 --min-steps N`` (quality.schedule: halving).

    python benchmarks/quality_grid.py [--out bench-out/quality] [--json] [--max-steps 240] [--feature-cache off]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import yaml
from _common import machine_line, report

from zoo.bench import parse_bench, run_bench, write_outputs
from zoo.bench.quality import rank
from zoo.train.shapes import write_shapes

HERE = Path(__file__).parent
GRID = HERE / "grids" / "quality-shapes.yaml"
FIELDS = ("combination", "eval_accuracy", "eval_accuracy_low", "eval_accuracy_high", "tied_with_best",
          "blank_image_accuracy", "eval_loss", "train_loss_final", "trainable_params", "flops_per_sample",
          "forward_ms_median", "train_steps", "train_seconds", "quality_status", "pruned_at_step", "pruned_score",
          "feature_cache", "time_step_ms", "time_data", "time_tower", "time_projector", "time_lm_forward",
          "time_backward", "time_optimizer")  # fmt: skip
SHAPES_DATA = {"train": 6000, "eval": 300, "seed": 0, "image_size": 64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-out/quality")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--max-steps", type=int, help="train.max_steps (the grid file: 800)")
    parser.add_argument("--feature-cache", choices=("auto", "on", "off"), help="train.feature_cache")
    parser.add_argument("--cache-dir", help="train.feature_cache_dir")
    parser.add_argument("--seeds", type=int, help="quality.seeds")
    parser.add_argument("--halving", action="store_true", help="quality.schedule: halving")
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--min-steps", type=int, help="quality.min_steps (default: max_steps / eta^2)")
    args = parser.parse_args()

    data = GRID.parent / "data" / "shapes"
    meta = data / "meta.json"
    written = json.loads(meta.read_text()) if meta.is_file() else {}
    if {k: written.get(k) for k in SHAPES_DATA} != SHAPES_DATA:
        write_shapes(data, **SHAPES_DATA, overwrite=True)
    grid = yaml.safe_load(GRID.read_text())
    train = grid["train"]
    if args.max_steps:
        train["max_steps"] = args.max_steps
    if args.feature_cache:
        train["feature_cache"] = args.feature_cache
    if args.cache_dir:
        train["feature_cache_dir"] = str(Path(args.cache_dir).absolute())
    quality = grid.setdefault("quality", {})
    if args.seeds:
        quality["seeds"] = args.seeds
    if args.halving:
        quality.update(schedule="halving", eta=args.eta,
                       min_steps=args.min_steps or max(1, train["max_steps"] // args.eta**2))  # fmt: skip
    if not quality:
        grid.pop("quality")
    start = time.perf_counter()
    spec = parse_bench(grid, source=str(GRID), base_dir=GRID.parent)
    run = run_bench(spec, progress=not args.json, train_dir=Path(args.out) / "train")
    write_outputs(run, args.out)
    ranked = rank(run.results)
    report(
        "quality grid on the shapes task (same budget, seed and data order for every combination)",
        {
            "machine": machine_line(run.machine["device"]),
            "load_average_start_end": [run.machine["start"].get("loadavg"), run.machine["end"].get("loadavg")],
            "seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "train": train,
            "quality": quality,
            "quality_summary": run.quality_summary,
            "ranking": [{key: r.get(key) for key in FIELDS} for r in ranked],
            "majority_baseline": ranked[0].get("majority_baseline") if ranked else None,
            "outputs": args.out,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
