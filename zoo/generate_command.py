"""``zoo generate``: answer a prompt about images with a built or saved model, optionally streaming.

Generation follows the model's generation config (its LM directory's ``generation_config.json``, kept in
zoo's checkpoint); each generation option given overrides one of its settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo.errors import ZooError
from zoo.generation_options import add_generation_arguments, check_generation_arguments, generation_options
from zoo.load_options import add_load_arguments, load_kwargs

__all__ = ["HELP", "add_arguments", "run"]

DEFAULT_MAX_NEW_TOKENS = 32  # when neither --max-new-tokens nor the model's generation config sets it

HELP = "generate text for a prompt (and images) with a composition or a saved checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo generate``."""
    parser.add_argument("target", help="a checkpoint directory, a YAML file or a composition name")
    parser.add_argument("--prompt", required=True, help="the user message; '<image>' marks each image")
    parser.add_argument("--image", action="append", default=[], help="image file (repeatable, in order)")
    add_generation_arguments(parser, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-chat-template", action="store_true", help="feed the prompt as raw text")
    parser.add_argument("--system", help="system message (placed first by the chat template)")
    parser.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    add_load_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Load or build the model, run generation, print the answer (``--json``: ``{"text", "tokens"}``)."""
    import torch

    import zoo
    from zoo.images import open_image

    check_generation_arguments(args)  # every option is checked before anything is built, read or run
    if not args.prompt.strip() and not args.image:
        raise ZooError("--prompt is empty; write a question or instruction")
    if args.stream and args.json:
        raise ZooError("--stream and --json do not mix: --json prints one object when generation ends")
    torch.manual_seed(args.seed)
    target = Path(args.target)
    if target.is_dir():  # a checkpoint directory: zoo.load says what it is if it is not a zoo one
        model = zoo.load(target, **load_kwargs(args))
    else:
        model = zoo.build(args.target, plugins=tuple(args.plugin or ()))
    model.eval()
    images = [open_image(path, what="--image") for path in args.image]
    prompt = args.prompt
    if images and model.image_token not in prompt:
        prompt = "\n".join([model.image_token] * len(images) + [prompt])
    processor = model.processor()
    has_template = bool(getattr(processor.tokenizer, "chat_template", None))
    if args.system is not None and (args.no_chat_template or not has_template):
        why = "--no-chat-template is set" if args.no_chat_template else "the tokenizer has no chat template"
        raise ZooError(f"--system needs the chat template, and {why}; put the system text into --prompt instead")
    if not args.no_chat_template and has_template:
        system = [{"role": "system", "content": args.system}] if args.system is not None else []
        prompt = processor.apply_chat_template([*system, {"role": "user", "content": prompt}])
    batch = processor(prompt, images=images)
    # the options given, over the model's generation config (its LM directory's generation_config.json)
    options = generation_options(
        args, model, max_new_tokens=DEFAULT_MAX_NEW_TOKENS, prompt_tokens=int(batch["input_ids"].shape[1])
    )
    if args.stream:
        from transformers import TextStreamer

        options["streamer"] = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    output = model.generate(**batch, **options)  # [1, T + new]
    new_tokens = output[:, batch["input_ids"].shape[1] :]  # [1, new]
    if args.json:
        print(json.dumps({"text": processor.decode(new_tokens)[0], "tokens": new_tokens[0].tolist()}))
    elif not args.stream:
        print(processor.decode(new_tokens)[0])
    sys.stdout.flush()
    return 0
