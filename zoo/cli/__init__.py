"""The cli wing: the ``zoo`` command.

``app`` holds the parser, the one-line error handling and the table of commands (``app.COMMANDS``); every
command is one module here (``list``, ``show``, ``validate``, ``build``, ``plugins``, ``train``, ``eval``,
``generate``, ``chat``, ``convert``, ``data``, ``verify``, ``demo``, ``cache``) with ``HELP``,
``add_arguments(parser)`` and ``run(args)``; ``shared`` is what they share. ``validation`` is
``zoo.validate``. This wing may import every wing below it; nothing imports it.

``zoo.cli.main`` and ``zoo.cli.console`` (the console script of zoo 0.1.0) resolve to ``app``'s; the other
names of the flat ``zoo.cli`` module of 0.1.0 resolve with a ``DeprecationWarning`` until 0.2.0.
"""

from __future__ import annotations

from typing import Any

from zoo.sdk.deprecation import Renamed, deprecated_attribute

__all__ = ["console", "main"]

# the other public names of the flat zoo.cli module of 0.1.0 -> where they live now
_DEPRECATED: dict[str, Renamed] = {
    "make_parser": ("zoo.cli.app", "make_parser", "0.1.0"),
    "FAST_EXIT": ("zoo.cli.app", "FAST_EXIT", "0.1.0"),
    "PLUGIN_FREE": ("zoo.cli.app", "PLUGIN_FREE", "0.1.0"),
    "EXTRA_COMMANDS": ("zoo.cli.app", "COMMANDS", "0.1.0"),
    "KIND_ALIASES": ("zoo.cli.shared", "KIND_ALIASES", "0.1.0"),
    **{f"cmd_{name}": (f"zoo.cli.{name}", "run", "0.1.0") for name in ("build", "list", "plugins", "show", "validate")},
}


def __getattr__(name: str) -> Any:
    if name in __all__:
        from zoo.cli import app

        return getattr(app, name)
    return deprecated_attribute(__name__, name, _DEPRECATED)
