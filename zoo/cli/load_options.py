"""Command-line options of every command that loads a zoo checkpoint: what the caller allows it.

A checkpoint is data: whether its code may run (``--trust-remote-code``), where its referenced base
checkpoints are (``--base SLOT=PATH``) and whether its hashes are checked (``--verify``) are the
caller's decisions, given here and passed to :func:`zoo.load`.
"""

from __future__ import annotations

import argparse
from typing import Any

from zoo.errors import ConfigError
from zoo.sdk.specs import SLOTS

__all__ = ["add_load_arguments", "load_kwargs"]


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--trust-remote-code``, ``--base`` and ``--verify`` to a command that loads checkpoints."""
    group = parser.add_argument_group("loading a checkpoint (it is data: these are your decisions)")
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a component whose config asks for it run the code shipped with its checkpoint (read it first)",
    )
    group.add_argument(
        "--base",
        action="append",
        default=[],
        metavar="SLOT=PATH",
        help="where the base checkpoint of a component saved by reference is (e.g. lm=/models/qwen2-7b); "
        "'recorded': where the manifest says (trust it only for your own checkpoints)",
    )
    group.add_argument("--verify", action="store_true", help="check every file's sha256 before loading")


def load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`zoo.load` from the parsed options."""
    return {
        "trust_remote_code": args.trust_remote_code,
        "bases": _bases(args.base),
        "verify": args.verify,
        "plugins": tuple(getattr(args, "plugin", None) or ()),
    }


def _bases(items: list[str]) -> dict[str, str] | str:
    if items == ["recorded"]:
        return "recorded"
    bases = {}
    for item in items:
        slot, sep, path = item.partition("=")
        if not sep or slot not in SLOTS or not path:
            raise ConfigError(
                f"--base {item[:200]!r}: expected SLOT=PATH with SLOT one of 'vision', 'projector', 'lm', "
                "or a single --base recorded"
            )
        bases[slot] = path
    return bases
