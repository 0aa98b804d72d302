"""``zoo train CONFIG.yaml``: train a composition with transformers' Trainer (see :mod:`zoo.train.run`).

Also under a launcher: ``torchrun --nproc_per_node 8 -m zoo train CONFIG`` or
``accelerate launch -m zoo train CONFIG``.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "add_arguments", "run"]

HELP = "train a composition on LLaVA-format data (transformers Trainer; torchrun / accelerate launch work)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo train``."""
    parser.add_argument("config", help="training YAML: the model file plus data: and train: sections")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue from the latest checkpoint-N of the output directory, or from CHECKPOINT",
    )
    parser.add_argument("--output-dir", help="overrides train.output_dir")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train into an output directory holding files zoo train did not write (they are kept, but a "
        "log.jsonl or loss.png there is replaced)",
    )
    parser.add_argument("--max-steps", type=int, help="overrides train.max_steps (and train.epochs)")


def run(args: argparse.Namespace) -> int:
    """Train, then print where the checkpoints, the log and the loss curve are."""
    from zoo.train.run import train

    result = train(args.config, output_dir=args.output_dir, max_steps=args.max_steps, resume=args.resume,
                   overwrite=args.overwrite)  # fmt: skip
    if not result.is_main_process:
        return 0
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(
            f"trained {result.global_step} steps, mean loss {result.train_loss:.4f}; model: {result.final_checkpoint} "
            f"(zoo generate / zoo eval / zoo convert read it); log: {result.log_file}"
            + (f"; loss curve: {result.loss_plot}" if result.loss_plot else "")
        )
    return 0
