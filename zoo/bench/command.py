"""``zoo bench [GRID_OR_NAME]``: the command-line shell over ``zoo.bench``.

Without an argument it runs ``benches.default`` of ``registry.yaml`` (a tiny grid, about a minute on a
laptop CPU). Exit status: 0 when every valid combination was measured, 1 when one failed at run time.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["HELP", "add_arguments", "run"]

HELP = "benchmark a grid of compositions side by side (and against transformers' Llava)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo bench`` (``--json``, ``--plugin`` and ``--debug`` come from the common parser)."""
    parser.add_argument(
        "target", nargs="?", default=None, help="a bench YAML file or a bench name of registry.yaml (default: default)"
    )
    parser.add_argument("--out", default="bench-out", metavar="DIR", help="output directory (default: bench-out/)")
    parser.add_argument("--meta", action="store_true", help="sizes and FLOPs only, on the meta device (no weights)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--no-reference", action="store_true", help="skip the transformers Llava comparison")
    parser.add_argument("--repeats", type=int, help="timed repeats per measurement (overrides the file)")
    parser.add_argument("--warmup", type=int, help="untimed warm-up runs (overrides the file)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens generated per sample (overrides the file)")
    parser.add_argument("--prompt-len", type=int, help="text tokens per prompt (overrides the file)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def run(args: argparse.Namespace) -> int:
    """Run the bench, write the outputs to ``--out`` and print the table (or the results with ``--json``)."""
    from zoo.bench.grid import load_bench, parse_bench
    from zoo.bench.report import format_table, write_outputs
    from zoo.bench.runner import run_bench
    from zoo.registry import get_registry

    get_registry(tuple(args.plugin or ()))
    spec = load_bench(args.target)
    overrides = {
        key: getattr(args, key)
        for key in ("repeats", "warmup", "max_new_tokens", "prompt_len")
        if getattr(args, key) is not None
    }
    if overrides:  # validate the overrides like file values
        data = {**spec.to_dict(), **overrides}
        spec = parse_bench(data, source=f"{spec.source} + command line")
    result = run_bench(
        spec,
        device=args.device,
        meta=args.meta,
        reference=False if args.no_reference else None,
        progress=not args.no_progress,
    )
    paths = write_outputs(result, args.out)
    if args.json:
        print(json.dumps(result.results, indent=2, default=str))
    else:
        print(format_table(result))
        print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 1 if any(row["status"] == "failed" for row in result.results) else 0
