"""``zoo data``: data utilities; ``zoo data shapes OUT_DIR`` writes the self-generated shapes task."""

from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "add_arguments", "run"]

HELP = "data utilities: 'zoo data shapes OUT_DIR' writes a coloured-shapes VQA task (LLaVA JSON + PNGs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo data``."""
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    shapes = sub.add_parser("shapes", help="write train.json, eval.json, meta.json and images/ of coloured shapes")
    shapes.add_argument("out_dir", help="folder to write into (created if needed)")
    shapes.add_argument("--train", type=int, default=6000, help="training records (default 6000)")
    shapes.add_argument("--eval", type=int, default=300, help="held-out records (default 300)")
    shapes.add_argument("--seed", type=int, default=0, help="the same seed writes the same files")
    shapes.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    shapes.add_argument("--overwrite", action="store_true", help="replace shapes data already in OUT_DIR")
    shapes.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Write the task and print its summary (``--json``: the summary as JSON)."""
    from zoo.shapes import write_shapes

    summary = write_shapes(args.out_dir, train=args.train, eval=args.eval, seed=args.seed,
                           image_size=args.image_size, overwrite=args.overwrite)  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"wrote {summary['train']} train and {summary['eval']} eval records with {args.image_size} px images "
            f"to {args.out_dir} (chance: {summary['chance']:.0%} by answering the commonest answer per question)"
        )
    return 0
