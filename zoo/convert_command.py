"""``zoo convert``: between zoo checkpoints and transformers ``LlavaForConditionalGeneration`` directories.

zoo convert --from-hf-llava HF_DIR ZOO_DIR     # import a Llava directory, save a zoo checkpoint
zoo convert --to-hf-llava SOURCE HF_DIR        # SOURCE: a zoo checkpoint, a YAML file or a composition
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zoo.load_options import add_load_arguments, load_kwargs

__all__ = ["HELP", "add_arguments", "run"]

HELP = "convert between zoo checkpoints and transformers Llava directories"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo convert``."""
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument(
        "--from-hf-llava", action="store_true", help="SOURCE is a transformers Llava directory; write a zoo checkpoint"
    )
    direction.add_argument(
        "--to-hf-llava",
        action="store_true",
        help="SOURCE is a zoo checkpoint, a YAML file or a composition name; write a transformers Llava directory",
    )
    parser.add_argument("source", help="what to convert")
    parser.add_argument("destination", help="output directory (replaced atomically if it holds the same kind)")
    parser.add_argument("--dtype", help="with --from-hf-llava: build in this dtype instead of the checkpoint's")
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a directory zoo did not write (its files are kept)"
    )
    add_load_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Do the conversion and print what was written (``--json``: a JSON object)."""
    from zoo.checkpoint import MANIFEST, load, save
    from zoo.hf_llava import from_hf_llava, save_hf_llava

    source, destination = Path(args.source), Path(args.destination)
    if args.from_hf_llava:
        model = from_hf_llava(source, dtype=args.dtype)
        save(model, destination, overwrite=args.overwrite)
        kind, origin = "zoo checkpoint", "transformers Llava directory"
    else:
        if (source / MANIFEST).is_file():
            model, origin = load(source, **load_kwargs(args)), "zoo checkpoint"
        else:
            from zoo.builder import build

            model, origin = build(args.source, plugins=tuple(args.plugin or ())), "composition"
        save_hf_llava(model, destination, overwrite=args.overwrite)
        kind = "transformers Llava directory"
    names = {k: model.composition.slot(k).name for k in ("vision", "projector", "lm")}
    summary = {
        "source": str(source),
        "source_kind": origin,
        "destination": str(destination),
        "destination_kind": kind,
        "components": names,
        "image_tokens": model.tokens_per_image,
        "image_token_id": model.image_token_id,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"wrote {kind} {str(destination)!r} from {origin} {str(source)!r}: {names['vision']} -> "
            f"{names['projector']} -> {names['lm']}, {model.tokens_per_image} image tokens "
            f"(image token id {model.image_token_id})"
        )
    return 0
