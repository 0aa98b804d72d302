"""``zoo build``: build a composition, print its summary, and optionally save it."""

from __future__ import annotations

import argparse
import time
from typing import Any

from zoo.cli.shared import add_target_arguments, check_save_target, emit, registry_for, target_of
from zoo.errors import ZooError

HELP = "build a composition and print its summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--meta", action="store_true", help="build on the meta device (nothing allocated)")
    parser.add_argument("--save", metavar="DIR", help="save the built model to DIR")
    parser.add_argument(
        "--overwrite", action="store_true", help="--save into a directory zoo did not write (keeps its files)"
    )


def run(args: argparse.Namespace) -> int:
    from zoo.core.anyres import describe_image_tokens

    if args.save is not None and not args.save.strip():
        raise ZooError(f"--save {args.save!r} is empty; give the directory to save the checkpoint to")
    registry_for(args)
    if args.save and args.meta:
        raise ZooError("--save needs real weights; drop --meta to save the model")
    if args.save:
        check_save_target(args.save, overwrite=bool(getattr(args, "overwrite", False)))
    target = target_of(args)
    start = time.perf_counter()
    if args.meta:
        summary, cached = _meta_summary(target, tuple(args.plugin or ()))
    else:
        from zoo.core.builder import build

        model = build(target, plugins=tuple(args.plugin or ()))
        summary, cached = model.summary(), False
    summary["build_seconds"] = round(time.perf_counter() - start, 3)
    summary["meta"] = args.meta
    summary["cached"] = cached
    lines = [f"{'component':<10} {'name':<28} {'params':>16} {'trainable':>16}"]
    for kind, comp in summary["components"].items():
        lines.append(f"{kind:<10} {comp['name']:<28} {comp['params']:>16,} {comp['trainable']:>16,}")
    lines.append(f"{'total':<10} {'':<28} {summary['params_total']:>16,} {summary['params_trainable']:>16,}")
    tokens = describe_image_tokens(summary["image_tokens"])
    how = "  (meta: nothing allocated" + ("; the same build, from zoo's plan cache)" if cached else ")")
    lines.append(f"image tokens per image: {tokens}   built in {summary['build_seconds']} s"
                 + (how if args.meta else ""))  # fmt: skip
    if args.save and not args.meta:
        from zoo.checkpoint.saving import save

        try:
            save(model, args.save, overwrite=args.overwrite)
        except OSError as error:
            reason = getattr(error, "reason", None) or error.strerror or error  # a WriteError: the system's words
            raise ZooError(f"--save {args.save!r}: cannot write the checkpoint: {reason}") from error
        lines.append(f"saved to {args.save}")
    emit(args, summary, "\n".join(lines))
    return 0


def _meta_summary(target: Any, plugins: tuple[str, ...]) -> tuple[dict[str, Any], bool]:
    """The summary of a ``meta`` build, and whether it came from the plan cache (:mod:`zoo.core.plan_cache`):
    a composition of built-in components built before with the same code and libraries is not rebuilt, so
    the answer imports neither torch nor transformers."""
    from zoo.core.config import ModelConfig, load_model_config
    from zoo.core.plan_cache import cached_composition

    config = target if isinstance(target, ModelConfig) else load_model_config(target)
    computed = []

    def compute() -> dict[str, Any]:
        from zoo.core.builder import build

        computed.append(True)
        return build(config, meta=True, plugins=plugins).summary()

    return cached_composition("meta-build", config, plugins, compute), not computed
