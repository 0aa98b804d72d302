"""``zoo generate``: answer a prompt about images with a built or saved model, optionally streaming."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.load_options import add_load_arguments, load_kwargs

__all__ = ["HELP", "add_arguments", "run"]

HELP = "generate text for a prompt (and images) with a composition or a saved checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo generate``."""
    parser.add_argument("target", help="a checkpoint directory, a YAML file or a composition name")
    parser.add_argument("--prompt", required=True, help="the user message; '<image>' marks each image")
    parser.add_argument("--image", action="append", default=[], help="image file (repeatable, in order)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-chat-template", action="store_true", help="feed the prompt as raw text")
    parser.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    add_load_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Load or build the model, run generation, print the answer."""
    import torch

    import zoo
    from zoo.images import open_image

    torch.manual_seed(args.seed)
    target = Path(args.target)
    if (target / "manifest.json").is_file():
        model = zoo.load(target, **load_kwargs(args))
    else:
        model = zoo.build(args.target, plugins=tuple(args.plugin or ()))
    model.eval()
    images = [open_image(path, what="--image") for path in args.image]
    prompt = args.prompt
    if images and model.image_token not in prompt:
        prompt = "\n".join([model.image_token] * len(images) + [prompt])
    processor = model.processor()
    if not args.no_chat_template and getattr(processor.tokenizer, "chat_template", None):
        prompt = processor.apply_chat_template([{"role": "user", "content": prompt}])
    batch = processor(prompt, images=images)
    options = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample}
    if args.do_sample:
        options.update(temperature=args.temperature, top_p=args.top_p)
    if args.stream:
        from transformers import TextStreamer

        options["streamer"] = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    output = model.generate(**batch, **options)  # [1, T + new]
    if not args.stream:
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        print(processor.decode(new_tokens)[0])
    sys.stdout.flush()
    return 0
