"""``zoo generate``: answer a prompt about images with a built or saved model, optionally streaming; or,
with ``--batch-file``, many prompts in batches after one model load (:mod:`zoo.cli.generate_batch`).

Generation follows the model's generation config (its LM directory's ``generation_config.json``, kept in
zoo's checkpoint); each generation option given overrides one of its settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from zoo.cli.generate_batch import DEFAULT_MAX_NEW_TOKENS
from zoo.cli.generation_options import add_generation_arguments, check_generation_arguments, generation_options
from zoo.cli.load_options import add_load_arguments, load_kwargs
from zoo.errors import ZooError

__all__ = ["HELP", "add_arguments", "run"]


DEFAULT_BATCH_SIZE = 8
HELP = "generate text for a prompt (and images) with a composition or a saved checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo generate``."""
    parser.add_argument("target", help="a checkpoint directory, a YAML file or a composition name")
    question = parser.add_mutually_exclusive_group(required=True)
    question.add_argument("--prompt", help="the user message; '<image>' marks each image")
    question.add_argument(
        "--batch-file",
        metavar="FILE.jsonl",
        help='many prompts, one JSON object a line: {"prompt", "images": [...], "id", "system", overrides}; '
        "answers are JSON lines in input order",
    )
    parser.add_argument("--output", metavar="FILE", help="with --batch-file: write the answers here (atomically)")
    parser.add_argument(
        "--batch-size", type=int, help=f"with --batch-file: prompts per generate call (default {DEFAULT_BATCH_SIZE})"
    )
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

    from zoo.cli.generate_batch import render_prompt
    from zoo.sdk.images import open_image

    check_generation_arguments(args)  # every option is checked before anything is built, read or run
    if args.batch_file is not None:
        return _run_batch(args)
    for flag, value in (("--output", args.output), ("--batch-size", args.batch_size)):
        if value is not None:
            raise ZooError(f"{flag} goes with --batch-file; with --prompt the answer is printed")
    if not args.prompt.strip() and not args.image:
        raise ZooError("--prompt is empty; write a question or instruction")
    if args.stream and args.json:
        raise ZooError("--stream and --json do not mix: --json prints one object when generation ends")
    torch.manual_seed(args.seed)
    model = _model(args)
    images = [open_image(path, what="--image") for path in args.image]
    processor = model.processor()
    prompt = render_prompt(
        processor, args.prompt, len(images), system=args.system, chat_template=not args.no_chat_template
    )
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


def _model(args: argparse.Namespace) -> Any:
    import zoo

    target = Path(args.target)
    if target.is_dir():  # a checkpoint directory: zoo.load says what it is if it is not a zoo one
        model = zoo.load(target, **load_kwargs(args))
    else:
        model = zoo.build(args.target, plugins=tuple(args.plugin or ()))
    return model.eval()


def _run_batch(args: argparse.Namespace) -> int:
    """``--batch-file``: check every line, load the model once, answer in batches, write JSONL in input order."""
    import torch

    from zoo.checkpoint.atomic import atomic_file
    from zoo.cli.generate_batch import GenerationOptions, check_fits, generate_answers, read_batch_file, write_answers
    from zoo.core.progress import LineProgress
    from zoo.sdk.limits import check_int_range

    for flag, given in (
        ("--prompt", args.prompt is not None),
        ("--image", bool(args.image)),
        ("--stream", args.stream),
    ):
        if given:
            raise ZooError(f"{flag} does not go with --batch-file: each line of the file has its prompt and images")
    batch_size = check_int_range(DEFAULT_BATCH_SIZE if args.batch_size is None else args.batch_size, 1, 4096,
                                 "--batch-size")  # fmt: skip
    if args.output is not None and Path(args.output).resolve() == Path(args.batch_file).resolve():
        raise ZooError(f"--output {args.output!r} is the --batch-file; the answers would replace the questions")
    given = {key: getattr(args, key) for key in ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k",
                                                 "repetition_penalty")}  # fmt: skip
    eos = tuple(args.eos_token_id) if args.eos_token_id else None
    defaults = GenerationOptions(**given, eos_token_id=eos)  # None: the model's generation config decides
    items = read_batch_file(args.batch_file, defaults=defaults, system=args.system)  # before the model is built
    torch.manual_seed(args.seed)
    model = _model(args)
    chat_template = not args.no_chat_template
    check_fits(model, items, chat_template=chat_template)
    progress = LineProgress(total=len(items), desc="zoo generate", unit="answer", file=sys.stderr)
    answers = generate_answers(model, items, batch_size=batch_size, chat_template=chat_template, progress=progress)
    if args.output is None:
        write_answers(answers, sys.stdout)
        return 0
    with atomic_file(args.output, what="--output") as handle:
        count = write_answers(answers, handle)
    summary = {"output": str(args.output), "answers": count}
    print(
        json.dumps(summary) if args.json else f"wrote {count} answers to {args.output}",
        file=sys.stdout if args.json else sys.stderr,
    )
    return 0
