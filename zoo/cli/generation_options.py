"""Command-line generation options of ``zoo generate`` and ``zoo chat``: each one overrides one setting of the
model's generation config (its LM directory's ``generation_config.json``, see :mod:`zoo.sdk.generation_config`);
an option left out keeps the model's setting.
"""

from __future__ import annotations

import argparse
from typing import Any

from zoo.errors import ConfigError
from zoo.sdk.limits import brief, check_generation_options

__all__ = ["add_generation_arguments", "check_generation_arguments", "generation_options"]

# the options, named as argparse stores them and as model.generate takes them
_OPTIONS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "eos_token_id")


def add_generation_arguments(parser: argparse.ArgumentParser, *, max_new_tokens: int) -> None:
    """``--max-new-tokens``, ``--do-sample/--no-do-sample``, ``--temperature``, ``--top-p``, ``--top-k``,
    ``--repetition-penalty``, ``--eos-token-id``: each defaults to the model's generation config."""
    group = parser.add_argument_group(
        "generation (each default: the model's generation config, i.e. its LM directory's generation_config.json)"
    )
    group.add_argument(
        "--max-new-tokens",
        type=int,
        help=f"at least 1 (default: the generation config's, else {max_new_tokens}); within the model's context",
    )
    group.add_argument(
        "--do-sample",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sample (--no-do-sample: greedy decoding); default: the generation config's (greedy if it says nothing)",
    )
    group.add_argument("--temperature", type=float, help="sampling temperature; finite and > 0")
    group.add_argument("--top-p", type=float, help="nucleus sampling; in (0, 1]")
    group.add_argument("--top-k", type=int, help="top-k sampling; an integer >= 0, 0 turning it off")
    group.add_argument("--repetition-penalty", type=float, help="> 0; 1 is none")
    group.add_argument(
        "--eos-token-id",
        type=int,
        action="append",
        metavar="ID",
        help="stop at this token id (repeatable); default: the generation config's eos",
    )


def check_generation_arguments(args: argparse.Namespace) -> None:
    """Refuse meaningless values before anything is built or read."""
    check_generation_options(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        eos_token_id=args.eos_token_id,
    )


def generation_options(
    args: argparse.Namespace, model: Any, *, max_new_tokens: int, prompt_tokens: int | None = None
) -> dict[str, Any]:
    """The keyword arguments of ``model.generate``: the options given, over the model's generation config.

    ``max_new_tokens`` falls back to the command's default when neither sets it; with ``prompt_tokens``, a
    ``--max-new-tokens`` past the model's context is refused, and a default past it is capped to the room left.
    """
    from zoo.sdk.generation_config import default_options

    config = getattr(model.lm.model, "generation_config", None)
    explicit = {option: getattr(args, option) for option in _OPTIONS}
    options = default_options(config, explicit, max_new_tokens=max_new_tokens)
    vocab = model.lm.vocab_size
    for token in options.get("eos_token_id") or ():
        if token >= vocab:
            raise ConfigError(f"--eos-token-id = {brief(token)} is not a token of the model (vocabulary of {vocab})")
    context = getattr(getattr(model.lm.model, "config", None), "max_position_embeddings", None)
    if prompt_tokens is None or not isinstance(context, int) or context < 1:
        return options
    if args.max_new_tokens is not None:
        check_generation_options(max_new_tokens=args.max_new_tokens, context=context, prompt_tokens=prompt_tokens)
        return options
    check_generation_options(max_new_tokens=1, context=context, prompt_tokens=prompt_tokens)  # room for one
    wanted = options.get("max_new_tokens", getattr(config, "max_new_tokens", None))
    if isinstance(wanted, int) and wanted > context - prompt_tokens:
        options["max_new_tokens"] = context - prompt_tokens  # a default, not the user's choice: capped
    return options
