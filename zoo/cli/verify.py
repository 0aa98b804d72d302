"""``zoo verify DIR``: check every file of a zoo checkpoint against the sha256 its manifest records.

A hash check needs no model code: it imports no plugin (no built-in, no entry point, no ``--plugin``:
a checkpoint under suspicion must not get to run anything) and no model library.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "add_arguments", "run"]

HELP = "check a checkpoint's files against the sha256 hashes in its manifest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo verify``."""
    parser.add_argument("directory", help="a zoo checkpoint directory")


def run(args: argparse.Namespace) -> int:
    """Hash every file; print a summary, or fail (exit 2) naming the files that differ."""
    from zoo.checkpoint.snapshot import verify

    report = verify(args.directory)
    if args.json:
        print(json.dumps({"ok": True, **report}, indent=2))
    else:
        print(f"ok: {report['files']} files, {report['bytes']} bytes match the manifest of {args.directory!r}")
    return 0
