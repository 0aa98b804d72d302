"""``zoo validate``: every problem of a model, training or bench file in one run (:mod:`zoo.cli.validation`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from zoo.cli.shared import add_target_arguments, emit, print_error, registry_for, report_plugin_failures, target_of

HELP = "check a model, training or bench file: every problem in one run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Every problem of the file in one run (one line each, then a count), or a summary; exit 2 or 0."""
    from zoo.cli.validation import check

    registry_for(args)
    result = check(target_of(args), plugins=tuple(args.plugin or ()))
    if not result.ok:
        report_plugin_failures()
        count = f"{len(result.problems)} problem{'s' if len(result.problems) > 1 else ''} in {result.source}"
        if args.json:  # one document, with the CLI's {"error": ...} shape
            print(json.dumps({"error": count, **result.to_dict()}, default=str))
        elif len(result.problems) == 1 and not result.notes:
            print_error(result.problems[0].message, as_json=False)
        else:
            for problem in result.problems:
                print(problem.message, file=sys.stderr)
            for note in result.notes:
                print(f"note: {note}", file=sys.stderr)
            print_error(count, as_json=False)
        return 2
    emit(args, result.to_dict(), _validation_summary(result))
    return 0


def _validation_summary(result: Any) -> str:
    """The ``ok:`` line(s) of ``zoo validate``."""
    summary = result.summary
    model = ""
    if "contract" in summary:
        c, names = summary["contract"], summary["names"]
        model = (f"{names['vision']} ({c['vision_hidden_size']}, {c['vision_tokens']} tokens) -> {names['projector']} "
                 f"-> {names['lm']} ({c['lm_hidden_size']}); {summary['image_tokens_text']} image tokens per image")  # fmt: skip
    if result.kind == "model":
        return f"ok: {model}"
    if result.kind == "train":
        data, train = summary["data"], summary.get("train", {})
        files = data["train"] + (f" (eval {data['eval']})" if data["eval"] else "")
        steps = f"max_steps {train['max_steps']}" if "max_steps" in train else f"epochs {train.get('epochs')}"
        return (f"ok: training file {result.source}: {model}\n  data: {files}, max_length {data['max_length']}\n"
                f"  train: {steps}, batch_size {train.get('batch_size')}, lr {train.get('lr')}")  # fmt: skip
    lines = [f"ok: bench grid {result.source}: {summary['combinations']} combinations, {len(summary['valid'])} "
             f"valid, {len(summary['skipped'])} skipped (as zoo bench would skip them)"]  # fmt: skip
    lines += [f"  skipped {row['combination']}: {row['reason']}" for row in summary["skipped"]]
    return "\n".join(lines)
