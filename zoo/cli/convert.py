"""``zoo convert``: between zoo checkpoints and transformers ``LlavaForConditionalGeneration`` directories
(``LlavaNextForConditionalGeneration`` for any-res compositions; import dispatches on ``model_type``).

zoo convert --from-hf-llava HF_DIR ZOO_DIR     # import a Llava directory, save a zoo checkpoint
zoo convert --to-hf-llava SOURCE HF_DIR        # SOURCE: a zoo checkpoint, a YAML file or a composition
zoo convert --from-vlm-learning SRC ZOO_DIR --lm-checkpoint QWEN1_DIR [--vision-checkpoint CLIP_DIR] \
    [--self-contained]       # the reference's adapter + projector; --self-contained copies the bases in
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from zoo.cli.load_options import add_load_arguments, load_kwargs
from zoo.errors import ZooError
from zoo.sdk.specs import SLOTS

__all__ = ["HELP", "add_arguments", "run"]

HELP = "convert between zoo checkpoints and transformers Llava / LLaVA-NeXT directories"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo convert``."""
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument(
        "--from-hf-llava",
        action="store_true",
        help="SOURCE is a transformers Llava or LLaVA-NeXT directory (by its model_type); write a zoo checkpoint",
    )
    direction.add_argument(
        "--to-hf-llava",
        action="store_true",
        help="SOURCE is a zoo checkpoint, a YAML file or a composition name; write a transformers Llava directory "
        "(LLaVA-NeXT for a composition with model.vision.anyres)",
    )
    direction.add_argument(
        "--from-vlm-learning",
        action="store_true",
        help="SOURCE is a VLM-learning (MMultiModal) output: peft adapter + other_params.bin; write a zoo checkpoint",
    )
    parser.add_argument("source", help="what to convert")
    parser.add_argument("destination", help="output directory (replaced atomically if it holds the same kind)")
    parser.add_argument(
        "--dtype", help="write the weights in this dtype (float32, bfloat16, float16) instead of the source's"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a directory zoo did not write (its files are kept)"
    )
    add_load_arguments(parser)
    parser.add_argument(
        "--lm-checkpoint", metavar="QWEN1_DIR", help="with --from-vlm-learning: the Qwen-1 base model dir"
    )
    parser.add_argument("--vision-checkpoint", metavar="DIR", help="with --from-vlm-learning: the CLIP dir it used")
    parser.add_argument(
        "--model", default="vlm-learning-qwen-7b", help="with --from-vlm-learning: the composition (name or YAML)"
    )
    parser.add_argument(
        "--self-contained",
        action="store_true",
        help="with --from-vlm-learning: copy the bases into the checkpoint (the Qwen-1 and CLIP weights in full, "
        "their config and tokenizer files) so that it loads with a plain zoo.load(DIR); without it the checkpoint "
        "references them and loads with --base lm=QWEN1_DIR [--base vision=CLIP_DIR]",
    )


def run(args: argparse.Namespace) -> int:
    """Do the conversion and print what was written (``--json``: a JSON object)."""
    for name, value in (("SOURCE", args.source), ("DESTINATION", args.destination)):
        if not value.strip():  # Path("") is the working directory: never what was meant
            raise ZooError(f"{name} {value!r} is empty; give a path")
    from zoo.checkpoint.kinds import is_zoo_checkpoint
    from zoo.checkpoint.loading import load
    from zoo.checkpoint.saving import check_save_target, save
    from zoo.core.config import torch_dtype
    from zoo.interop.llava import check_export_target, from_hf_llava, save_hf_llava

    dtype = torch_dtype(args.dtype, key="--dtype") if args.dtype else None  # refused before anything is read
    if args.self_contained and not args.from_vlm_learning:
        raise ZooError(
            "--self-contained goes with --from-vlm-learning (an import from a Llava directory is always "
            "self-contained, and an export always holds every weight)"
        )
    source, destination = Path(args.source), Path(args.destination)
    # a destination the save would refuse (files zoo did not write there) is refused before the long read
    (check_export_target if args.to_hf_llava else check_save_target)(destination, overwrite=args.overwrite)
    if args.from_hf_llava:
        model = from_hf_llava(source, dtype=args.dtype)
        save(model, destination, overwrite=args.overwrite)
        kind = "zoo checkpoint"
        origin = "transformers LLaVA-NeXT directory" if model.anyres is not None else "transformers Llava directory"
    elif args.from_vlm_learning:
        from zoo.interop.vlm_learning import from_vlm_learning

        if not args.lm_checkpoint:
            raise ZooError("--from-vlm-learning needs --lm-checkpoint QWEN1_DIR (the Qwen-1 model it was trained on)")
        model = from_vlm_learning(
            source, args.lm_checkpoint, model=args.model, vision_checkpoint=args.vision_checkpoint,
            dtype=args.dtype, plugins=tuple(args.plugin or ()),
        )  # fmt: skip
        save(model, destination, overwrite=args.overwrite, self_contained=args.self_contained)
        kind, origin = "zoo checkpoint", "VLM-learning checkpoint"
    else:
        if is_zoo_checkpoint(source):
            model, origin = load(source, **load_kwargs(args)), "zoo checkpoint"
        else:
            from zoo.core.builder import build

            model, origin = build(args.source, plugins=tuple(args.plugin or ())), "composition"
        if dtype is not None:
            model = model.to(dtype)
        save_hf_llava(model, destination, overwrite=args.overwrite)
        kind = "transformers LLaVA-NeXT directory" if model.anyres is not None else "transformers Llava directory"
    names = {k: model.composition.slot(k).name for k in SLOTS}
    summary = {
        "source": str(source),
        "source_kind": origin,
        "destination": str(destination),
        "destination_kind": kind,
        "components": names,
        "image_tokens": model.summary()["image_tokens"],
        "image_token_id": model.image_token_id,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"wrote {kind} {str(destination)!r} from {origin} {str(source)!r}: {names['vision']} -> "
            f"{names['projector']} -> {names['lm']}, {_tokens_text(model)} image tokens "
            f"(image token id {model.image_token_id})"
        )
    return 0


def _tokens_text(model: Any) -> str:
    if model.anyres is None:
        return str(model.tokens_per_image)
    counts = sorted(set(model.anyres.tokens_by_pinpoint().values()))
    return f"any-res {counts[0]}..{counts[-1]}"
