"""The one error hierarchy of zoo: every user-facing failure is a ``ZooError``.

The CLI prints ``str(error)`` and exits 2 for any of these; a traceback shows only with ``--debug``.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable
from typing import Any

__all__ = [
    "WRITE_ERRNOS",
    "CheckpointError",
    "ConfigError",
    "ContractError",
    "DuplicateNameError",
    "OutputDirError",
    "PluginError",
    "UnknownNameError",
    "WriteError",
    "ZooError",
    "close_matches",
    "few",
    "suggest",
]


class ZooError(Exception):
    """Base class of every error zoo raises for bad input or a broken environment.

    ``key``: the YAML key path the error is about (``model.projector.name``), when the raiser knows it;
    ``zoo validate`` lists it beside the message.
    """

    def __init__(self, *args: object, key: str | None = None) -> None:
        super().__init__(*args)
        self.key = key


class ConfigError(ZooError):
    """A YAML file or argument has an unknown key, a wrong type or a bad value."""


class UnknownNameError(ConfigError):
    """A component or composition name is not registered."""


class ContractError(ZooError):
    """Two components disagree on a dimension or token count (checked before any weight is read)."""


class PluginError(ZooError):
    """A plugin failed to import, used an unknown hook, or registered a name twice."""


class DuplicateNameError(PluginError):
    """Two plugins registered the same component name (always fatal: which one wins is undefined)."""


class CheckpointError(ZooError):
    """A checkpoint directory or weight file is missing, incomplete or of an unknown format."""


WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS})  # a write that cannot succeed


class WriteError(ZooError, OSError):
    """Output could not be written: the disk or quota is full, a file grew past a limit, the file system is
    read-only. Both a ``ZooError`` (one message naming what was being written) and an ``OSError`` (``errno``
    kept, so ``except OSError`` still catches it); nothing half-written is left behind."""

    def __init__(self, code: int | None, message: str, reason: str = "") -> None:
        OSError.__init__(self, code, message)
        self.key = None
        self.reason = reason or message  # the system's words alone ("No space left on device")

    def __str__(self) -> str:
        return str(self.strerror)


class OutputDirError(ZooError):
    """An output directory holds files zoo did not write, or another zoo run is writing it (:mod:`zoo.checkpoint.claim`)."""


def close_matches(word: str, choices: Iterable[str], limit: int = 5) -> list[str]:
    """Return up to ``limit`` choices close to ``word`` (difflib), best first."""
    choices = list(choices)
    found = difflib.get_close_matches(word, choices, n=limit, cutoff=0.5)
    if not found:
        lowered = word.lower()
        found = [c for c in choices if lowered in c.lower() or c.lower() in lowered][:limit]
    return found


def few(items: Iterable[Any], limit: int = 4) -> str:
    """Up to ``limit`` items for a message, then how many more: ``a, b, c, d (and 3 more)``; ``none`` when empty.

    A set is sorted first, so a message about one is the same from run to run.

    Example:
        >>> few(["x.weight", "y.weight", "z.weight"], limit=2)
        'x.weight, y.weight (and 1 more)'
    """
    shown = sorted(map(str, items)) if isinstance(items, set | frozenset) else [str(item) for item in items]
    if not shown:
        return "none"
    more = f" (and {len(shown) - limit} more)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def suggest(word: str, choices: Iterable[str], limit: int = 5) -> str:
    """A ``did you mean ...?`` tail for an error message, or the valid choices when none is close."""
    choices = sorted(set(choices))
    found = close_matches(word, choices, limit)
    if found:
        return "did you mean " + " or ".join(repr(c) for c in found) + "?"
    return "valid choices: " + few([repr(c) for c in choices], limit=12)
