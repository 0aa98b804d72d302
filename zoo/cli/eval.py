"""``zoo eval TARGET --data FILE``: exact match and reference loss of a model on held-out records."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["HELP", "add_arguments", "run"]

HELP = "score a checkpoint, config or composition on LLaVA records (exact match, loss; --blank-images ablation)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo eval``."""
    parser.add_argument("target", help="a checkpoint directory, a YAML file or a composition name")
    parser.add_argument("--data", required=True, help="LLaVA conversation JSON or JSONL")
    parser.add_argument("--image-folder", help="where relative image paths resolve (default: the data file's folder)")
    parser.add_argument("--blank-images", action="store_true", help="replace every image by a grey one of its size")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--predictions", metavar="FILE", help="write every prediction to FILE (JSONL)")


def _model_target(target: str) -> Any:
    """A training file (model + data + train sections) evaluates its ``model`` section; other targets pass."""
    from zoo.core.config import parse_model_config, read_yaml

    if Path(target).suffix not in (".yaml", ".yml") or not Path(target).is_file():
        return target
    data = read_yaml(target)
    if isinstance(data, dict) and ("data" in data or "train" in data):
        return parse_model_config({k: v for k, v in data.items() if k in ("plugins", "model")}, source=target)
    return target


def run(args: argparse.Namespace) -> int:
    """Load or build the model, evaluate, print the scores."""
    import zoo
    from zoo.checkpoint.kinds import is_zoo_checkpoint
    from zoo.errors import ZooError
    from zoo.train.evaluate import evaluate

    for option in ("max_new_tokens", "batch_size"):
        if getattr(args, option) < 1:
            raise ZooError(f"--{option.replace('_', '-')} = {getattr(args, option)} is not valid; it must be >= 1")
    if not Path(args.data).is_file():  # before the model is built: a typo should fail in a second
        raise ZooError(f"--data {args.data!r} does not exist or is not a file")
    target = Path(args.target)
    if is_zoo_checkpoint(target):
        model = zoo.load(target)
    else:
        model = zoo.build(_model_target(args.target), plugins=tuple(args.plugin or ()))
    result = evaluate(model, args.data, image_folder=args.image_folder, blank_images=args.blank_images,
                      max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)  # fmt: skip
    predictions = result.pop("predictions")
    if args.predictions:
        lines = "".join(json.dumps(p) + "\n" for p in predictions)
        Path(args.predictions).write_text(lines, encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    blank = " (blank images)" if args.blank_images else ""
    print(f"exact match {result['accuracy']:.1%} of {result['n']}{blank}   loss {result['loss']:.4f}   "
          f"majority baseline {result['majority_baseline']:.1%}")  # fmt: skip
    for kind, scores in result.get("by_type", {}).items():
        print(f"  {kind:<12} {scores['accuracy']:.1%} of {scores['n']}")
    return 0
