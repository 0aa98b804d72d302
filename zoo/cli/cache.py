"""``zoo cache info | clear``: what the frozen-tower feature cache holds, and removing it (:mod:`zoo.train.feature_cache`)."""

from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "add_arguments", "run"]

HELP = "show (info) or remove (clear) the feature cache of frozen vision towers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``zoo cache``."""
    parser.add_argument("action", choices=("info", "clear"), help="info: towers, entries, size; clear: remove them")
    parser.add_argument("fingerprint", nargs="*", help="clear: only these towers (fingerprint prefixes, see info)")
    parser.add_argument(
        "--dir", help="the cache folder (default: train.feature_cache_dir's default, ~/.cache/zoo/features)"
    )


def run(args: argparse.Namespace) -> int:
    """Print the cache's contents, or clear it."""
    from zoo.errors import ZooError
    from zoo.sdk.limits import format_bytes
    from zoo.train.feature_cache import cache_info, clear_cache

    if args.action == "info":
        if args.fingerprint:
            raise ZooError(
                "zoo cache info takes no fingerprint (it lists every tower); did you mean 'zoo cache clear'?"
            )
        info = cache_info(args.dir)
        lines = [f"{info['directory']}: {len(info['towers'])} towers, {info['entries']} images, "
                 f"{format_bytes(info['bytes'])}"]  # fmt: skip
        for tower in info["towers"]:
            partial = f", {tower['partial_files']} unfinished writes" if tower["partial_files"] else ""
            lines.append(f"  {tower['fingerprint'][:12]}  {tower['name']} (select_layer {tower['select_layer']}, "
                         f"{tower['device']}): {tower['entries']} images, {format_bytes(tower['bytes'])}{partial}")  # fmt: skip
        print(json.dumps(info, indent=2) if args.json else "\n".join(lines))
        return 0
    removed = clear_cache(args.dir, args.fingerprint)
    text = (f"removed {removed['towers']} towers, {removed['entries']} images, {format_bytes(removed['bytes'])} "
            f"from {removed['directory']}")  # fmt: skip
    print(json.dumps(removed, indent=2) if args.json else text)
    return 0
