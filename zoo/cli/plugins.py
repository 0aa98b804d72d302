"""``zoo plugins``: the plugins loaded, with their components, and those that failed to load."""

from __future__ import annotations

import argparse

from zoo.cli.shared import count, emit, registry_for, table

HELP = "list loaded and failed plugins"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options besides the common ones."""


def run(args: argparse.Namespace) -> int:
    registry = registry_for(args)
    host = registry.host
    counts: dict[str, int] = {}
    for spec in registry.list():
        counts[spec.plugin] = counts.get(spec.plugin, 0) + 1
    loaded = [
        {"name": p.name, "origin": p.origin, "distribution": p.distribution, "version": p.version,
         "components": counts.get(p.name, 0)}
        for p in host.loaded
    ]  # fmt: skip
    failed = [
        {"name": f.name, "origin": f.origin, "distribution": f.distribution, "error": f.error} for f in host.failures
    ]
    rows = [[p["name"], p["origin"], count(p["components"], "component"), p["distribution"]] for p in loaded]
    rows += [
        [f["name"], "FAILED", f["error"] + (f"  (distribution {f['distribution']})" if f["distribution"] else "")]
        for f in failed
    ]
    emit(args, {"loaded": loaded, "failed": failed}, table(rows))
    return 0
