"""``zoo list``: components and compositions by kind and wildcard, like ``timm.list_models``."""

from __future__ import annotations

import argparse

from zoo.cli.shared import KIND_ALIASES, emit, registry_for, table

HELP = "list components or compositions (wildcards)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", help="vision | projector | lm | model (or a pattern)")
    parser.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. 'tiny-*'")


def run(args: argparse.Namespace) -> int:
    registry = registry_for(args)
    kind = KIND_ALIASES.get(args.kind or "", None) if args.kind else None
    if args.kind and kind is None:
        # `zoo list tiny-*` : a pattern in the kind position
        args.pattern, kind = args.kind, None
    pattern = args.pattern or "*"
    rows = []
    if kind in (None, "vision", "projector", "lm"):
        for spec in registry.list(kind, pattern):
            rows.append({"kind": spec.kind, "name": spec.name, "source": spec.source, "plugin": spec.plugin,
                         "description": spec.description})  # fmt: skip
    if kind in (None, "model"):
        for name in registry.list_compositions(pattern):
            rows.append({"kind": "model", "name": name, "source": "registry.yaml", "plugin": "", "description": ""})
    if not rows and args.kind and kind is None and not set("*?[") & set(args.kind):
        from zoo.errors import UnknownNameError, suggest

        choices = ["vision", "projector", "lm", "model", *(s.name for s in registry.list()), *registry.compositions]
        raise UnknownNameError(f"{args.kind!r} is neither a kind (vision, projector, lm, model) nor a registered "
                               f"name; {suggest(args.kind, choices)}{registry.missing_plugins_note()}")  # fmt: skip
    emit(args, rows, table([[r["kind"], r["name"], r["source"], r["description"]] for r in rows]))
    return 0
