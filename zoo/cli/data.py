"""``zoo data``: data utilities.

``zoo data shapes OUT_DIR`` writes the self-generated shapes task; ``zoo data from-vlm-learning IMAGE_MAP
CAPTIONS OUT_DIR`` converts the VLM-learning reference's training data (``zoo.interop.vlm_learning_data``).
"""

from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "data utilities: 'zoo data shapes OUT_DIR' writes a coloured-shapes VQA task (LLaVA JSON + PNGs); "
    "'zoo data from-vlm-learning IMAGE_MAP CAPTIONS OUT_DIR' converts the VLM-learning reference's data"
)


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
    vlm = sub.add_parser(
        "from-vlm-learning",
        help="the VLM-learning reference's image_map_b.json + captions_b.json -> OUT_DIR/train.json (LLaVA JSON)",
        description=(
            "Convert the two files the VLM-learning reference's dataprocess/process_image.py writes into zoo's "
            "LLaVA JSON, one record per image as its dataset feeds them (question with <image>, one answer). "
            "Train them with model.image_token '<|extra_0|>', data.system_prompt '你是一位图像理解助手。' and "
            "data.end_token '<|endoftext|>' (examples/vlm-learning/train.yaml)."
        ),
    )
    vlm.add_argument("image_map", help="the reference's image_map_b.json (image file -> ID and folder)")
    vlm.add_argument("captions", help="the reference's captions_b.json (ID -> question 'q' and answers 'a')")
    vlm.add_argument("out_dir", help="folder to write train.json and summary.json into (written atomically)")
    vlm.add_argument("--image-path", action="append", default=[], metavar="OLD=NEW",
                     help="the image map's folder OLD is now NEW (repeat for each folder; default: as written)")  # fmt: skip
    vlm.add_argument("--captions", dest="captions_mode", choices=("one", "all"), default="one",
                     help="one: one caption per image drawn with --seed (the reference draws one per visit); "
                          "all: a record per caption")  # fmt: skip
    vlm.add_argument("--seed", type=int, default=0, help="the draw of --captions one (default 0)")
    vlm.add_argument("--on-error", choices=("error", "skip"), default="error",
                     help="error: stop at the first bad record; skip: leave bad records out and count them")  # fmt: skip
    vlm.add_argument("--overwrite", action="store_true", help="write into a folder this command did not write")
    vlm.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Write the task or the conversion and print its summary (``--json``: the summary as JSON)."""
    if args.data_command == "from-vlm-learning":
        return _from_vlm_learning(args)
    from zoo.train.shapes import write_shapes

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


def _from_vlm_learning(args: argparse.Namespace) -> int:
    from zoo.interop.vlm_learning_data import convert_vlm_learning_data, parse_image_paths

    summary = convert_vlm_learning_data(
        args.image_map, args.captions, args.out_dir, image_paths=parse_image_paths(args.image_path),
        captions_mode=args.captions_mode, seed=args.seed, on_error=args.on_error, overwrite=args.overwrite,
    )  # fmt: skip
    if getattr(args, "json", False):
        print(json.dumps(summary, ensure_ascii=False, indent=2))
        return 0
    skipped = (
        f", skipped {summary['skipped']} bad entries (first: {summary['problems'][0]})" if summary["skipped"] else ""
    )
    print(f"wrote {summary['records']} records for {summary['images']} images to {args.out_dir}/train.json{skipped}")
    if summary["unused_captions"]:
        print(f"{summary['unused_captions']} captions are named by no image-map entry (the reference never reads them)")
    if summary["answers_starting_with_a_line_break"]:
        print(
            f"{summary['answers_starting_with_a_line_break']} answers begin with a line break: zoo tokenizes the "
            "whole text, the reference the answer apart, so their first ids can differ"
        )
    recipe = summary["recipe"]
    print(
        f"train with model.image_token: {recipe['model.image_token']!r}, data.system_prompt: "
        f"{recipe['data.system_prompt']!r}, data.end_token: {recipe['data.end_token']!r}"
    )
    return 0
