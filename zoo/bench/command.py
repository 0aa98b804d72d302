"""``zoo bench [GRID_OR_NAME] [--shard I/N]`` and ``zoo bench merge DIR... [--out DIR]``.

Without an argument it runs ``benches.default`` of ``registry.yaml`` (27 tiny compositions). With
``--shard I/N`` it runs the I-th of N slices of the grid (for a SLURM job array or a loop over
machines); ``zoo bench merge`` combines the shards' ``--out`` directories into one report. Exit status:
0 when every valid combination was measured, 1 when one failed at run time. The run claims ``--out``
before it starts (:mod:`zoo.checkpoint.claim`): a directory holding files zoo bench did not write is refused unless
``--overwrite``, and one another run is writing is refused, naming that run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from zoo.errors import ConfigError

__all__ = ["HELP", "OUTPUT_KIND", "add_arguments", "run"]

OUTPUT_KIND = "zoo bench output"  # the marker kind of a claimed --out directory (zoo.checkpoint.claim)

HELP = "benchmark a grid of compositions side by side (and against transformers' Llava); 'merge' joins shards"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo bench`` (``--json``, ``--plugin`` and ``--debug`` come from the common parser)."""
    parser.add_argument(
        "target",
        nargs="*",
        metavar="GRID",
        help="a bench YAML file or a bench name of registry.yaml (default: default); "
        "or 'merge DIR...' to combine the --out directories of shards",
    )
    parser.add_argument("--out", metavar="DIR", help="output directory (default: bench-out/, merge: bench-merged/)")
    parser.add_argument(
        "--overwrite", action="store_true", help="write into an --out directory holding files zoo bench did not write"
    )
    parser.add_argument("--shard", metavar="I/N", help="run only the I-th of N slices of the grid (1 <= I <= N)")
    parser.add_argument("--meta", action="store_true", help="sizes and FLOPs only, on the meta device (no weights)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--no-reference", action="store_true", help="skip the transformers Llava comparison")
    parser.add_argument("--min-run-time", type=float, help="seconds of timing per call and side (overrides the file)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per timing (overrides the file)")
    parser.add_argument("--noise-threshold", type=float, help="IQR / median that flags a timing noisy (overrides)")
    parser.add_argument("--threads", type=int, help="torch threads while measuring (overrides the file)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens generated per sample (overrides the file)")
    parser.add_argument("--prompt-len", type=int, help="text tokens per prompt (overrides the file)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    parser.add_argument(
        "--train-dir", metavar="DIR", help="where a grid with data:/train: trains each combination (default: OUT/train)"
    )


OVERRIDES = ("min_run_time", "rounds", "noise_threshold", "threads", "max_new_tokens", "prompt_len")


def run(args: argparse.Namespace) -> int:
    """Run the bench (or merge shards), write the outputs to ``--out`` and print the table (or ``--json``)."""
    from zoo.checkpoint.claim import claim_directory

    merging = bool(args.target) and args.target[0] == "merge"
    for option, value in (("--out", args.out), ("--train-dir", args.train_dir)):
        if value is not None and not value.strip():
            raise ConfigError(f"{option} {value!r} is empty; give a directory (or leave the option out)")
    if args.device is not None and not merging:  # a typo fails in a second, before anything is claimed or planned
        from zoo.sdk.weights import parse_device

        parse_device(args.device, "--device")
    out = args.out or ("bench-merged" if merging else "bench-out")
    # the run owns --out from the start: another run's directory, or one holding other files, is refused at once
    with claim_directory(out, kind=OUTPUT_KIND, key="--out", overwrite=args.overwrite):
        from zoo.bench.report import format_table, write_outputs

        result = _merge(args) if merging else _bench(args)
        paths = write_outputs(result, out)
    if args.json:
        print(json.dumps(result.results, indent=2, default=str))
    else:
        print(format_table(result))
        print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 1 if any(row["status"] == "failed" for row in result.results) else 0


def _merge(args: argparse.Namespace) -> Any:
    from zoo.bench.merge import load_run, merge_runs

    directories = args.target[1:]
    if not directories:
        raise ConfigError("zoo bench merge: give the --out directories of the shards (zoo bench merge DIR...)")
    if args.shard:
        raise ConfigError("zoo bench merge: --shard applies to running a grid, not to merging")
    return merge_runs([load_run(d) for d in directories], names=directories)


def _bench(args: argparse.Namespace) -> Any:
    from zoo.bench.grid import load_bench, parse_bench, parse_shard
    from zoo.bench.runner import run_bench
    from zoo.core.registry import get_registry

    if len(args.target) > 1:
        raise ConfigError(f"zoo bench takes one grid, got {len(args.target)}: {args.target} (or 'merge DIR...')")
    shard = parse_shard(args.shard) if args.shard else None
    get_registry(tuple(args.plugin or ()), origin="--plugin")
    spec = load_bench(args.target[0] if args.target else None)
    overrides = {key: getattr(args, key) for key in OVERRIDES if getattr(args, key) is not None}
    if overrides:  # validate the overrides like file values
        spec = parse_bench(
            {**spec.to_dict(), **overrides}, source=f"{spec.source} + command line", base_dir=spec.base_dir
        )
    return run_bench(
        spec,
        device=args.device,
        meta=args.meta,
        reference=False if args.no_reference else None,
        progress=not args.no_progress,
        shard=shard,
        train_dir=args.train_dir or str(Path(args.out or "bench-out") / "train"),
    )
