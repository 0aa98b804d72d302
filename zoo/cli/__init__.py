"""The cli wing: the ``zoo`` command.

``app`` holds the parser, the fast paths and the small commands (list, show, build, validate); every
other command is one module here (``train``, ``eval``, ``generate``, ``chat``, ``convert``, ``data``,
``verify``, ``demo``, ``cache``), registered by name in ``app.COMMANDS``. ``validation`` is
``zoo.validate``. This wing may import every wing below it; nothing imports it.

``zoo.cli.main`` and ``zoo.cli.console`` (the console script of zoo 0.1.0) resolve to ``app``'s.
"""

from __future__ import annotations

from typing import Any

__all__ = ["console", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from zoo.cli import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
