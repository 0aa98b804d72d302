"""What the commands of ``zoo`` share: the registry with the user's plugins, output as text or ``--json``,
the one-line error format, and the model target (a file, a composition name, or ``--vision/--projector/--lm``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from zoo.errors import ZooError

__all__ = [
    "KIND_ALIASES",
    "MAX_ERROR_CHARS",
    "add_target_arguments",
    "check_save_target",
    "count",
    "emit",
    "print_error",
    "registry_for",
    "report_plugin_failures",
    "table",
    "target_of",
]

KIND_ALIASES = {
    "vision": "vision", "tower": "vision", "towers": "vision",
    "projector": "projector", "projectors": "projector",
    "lm": "lm", "lms": "lm", "language-model": "lm",
    "model": "model", "models": "model",
}  # fmt: skip


def registry_for(args: argparse.Namespace) -> Any:
    """The registry with the plugins of ``--plugin`` (and ``--strict-plugins``); load failures are printed."""
    from zoo.core.registry import get_registry

    registry = get_registry(tuple(args.plugin or ()), strict=args.strict_plugins or None, origin="--plugin")
    report_plugin_failures()
    return registry


def report_plugin_failures() -> None:
    """Print, once each, the plugins that failed to load so far (a config's plugins load late)."""
    if "zoo.core.registry" not in sys.modules:  # nothing loaded plugins (``zoo verify`` never does)
        return
    from zoo.core.registry import loaded_registry

    registry = loaded_registry()
    for line in registry.host.unreported_warnings() if registry else ():
        print(line, file=sys.stderr)


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def count(number: int, noun: str) -> str:
    """``1 component``, ``2 components``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as text columns, each as wide as its longest cell (the last column is not padded)."""
    widths = [
        max((len(row[i]) for row in rows if i < len(row) - 1), default=0) for i in range(max(map(len, rows), default=0))
    ]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths)), row[-1]]).rstrip() for row in rows if row
    )


def target_of(args: argparse.Namespace) -> Any:
    """The model the command names: a path or composition name, or a config from the inline form."""
    inline = [args.vision, args.projector, args.lm]
    if any(inline):
        if not all(inline):
            raise ZooError("the inline form needs all three of --vision, --projector and --lm")
        if args.target:
            raise ZooError(f"give either CONFIG_OR_NAME ({args.target!r}) or --vision/--projector/--lm, not both")
        from zoo.core.config import parse_model_config

        data = {"model": {"vision": args.vision, "projector": args.projector, "lm": args.lm,
                          "dtype": args.dtype or "float32"}}  # fmt: skip
        return parse_model_config(data, source="command line")
    if not args.target:
        raise ZooError("give a config file or a composition name (see 'zoo list model'), or --vision/--projector/--lm")
    if args.dtype:
        import dataclasses

        from zoo.core.config import load_model_config, torch_dtype

        config = load_model_config(args.target)
        return dataclasses.replace(config, dtype=str(torch_dtype(args.dtype, key="--dtype")).removeprefix("torch."))
    return args.target


def check_save_target(path: str, *, overwrite: bool = False) -> None:
    """Refuse, before building, a ``--save`` destination that cannot or must not become a checkpoint."""
    from pathlib import Path

    from zoo.checkpoint.kinds import is_zoo_checkpoint

    target = Path(path)
    where = f"--save {path!r}"
    if target.is_symlink() and not target.exists():
        raise ZooError(f"{where} is a dangling symbolic link")
    if target.exists():
        if not target.is_dir():
            raise ZooError(f"{where} exists and is not a directory")
        if os.path.ismount(target):
            raise ZooError(f"{where} is a mount point; choose a new directory")
        if not overwrite and any(target.iterdir()) and not is_zoo_checkpoint(target):
            raise ZooError(f"{where} is a non-empty directory that is not a zoo checkpoint; choose a new directory")
    elif not target.parent.is_dir():
        raise ZooError(f"{where}: the parent directory {str(target.parent)!r} does not exist")


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """The positional target and the inline ``--vision/--projector/--lm/--dtype`` form."""
    parser.add_argument("target", nargs="?", help="a YAML file or a registered composition name")
    parser.add_argument("--vision", help="vision tower name (inline form)")
    parser.add_argument("--projector", help="projector name (inline form)")
    parser.add_argument("--lm", help="language model name (inline form)")
    parser.add_argument("--dtype", help="model dtype (overrides the config's; default float32 for the inline form)")


MAX_ERROR_CHARS = 2000  # a message quoting a huge value is cut: one short line, whatever the input


def print_error(message: str, *, as_json: bool) -> None:
    """``zoo: error: ...`` on stderr, one line (cut past ``MAX_ERROR_CHARS``), or ``{"error": ...}`` on stdout."""
    line = " ".join(message.split())
    if len(line) > MAX_ERROR_CHARS:
        line = line[: MAX_ERROR_CHARS - 30] + f"... ({len(line):,} characters)"
    if as_json:
        print(json.dumps({"error": line}))
    else:
        print(f"zoo: error: {line}", file=sys.stderr)
