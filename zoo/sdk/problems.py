"""Collect problems instead of stopping at the first: what ``zoo validate`` reports in one run.

The validators of ``zoo.core.config``, ``zoo.train.config``, ``zoo.core.data_config`` and ``zoo.bench.grid`` take an
optional ``problems`` collector. Without one (every caller but ``zoo validate``) the first problem is
raised, as always. With one, each rule records its ``ZooError`` through :func:`report` and the validator
goes on, a bad value replaced by its default so that later, independent rules still run; a value that
cannot be built at all raises :class:`Reported` (its problems are already recorded) so that the checks
that depend on it are skipped.

Example:
    >>> problems = Problems()
    >>> with problems.guard():
    ...     parse_model_config(data, source="model.yaml", problems=problems)
    >>> [str(error) for error in problems.errors]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from zoo.errors import ConfigError, ZooError

__all__ = ["Problems", "Reported", "attempt", "report"]

T = TypeVar("T")


class Reported(ConfigError):
    """A value could not be built; its problems were recorded in the collector already."""


class Problems:
    """The ``ZooError`` s found so far, in the order found, and notes on the checks that were skipped."""

    def __init__(self) -> None:
        self.errors: list[ZooError] = []
        self.notes: list[str] = []

    def __len__(self) -> int:
        return len(self.errors)

    def add(self, error: ZooError) -> None:
        """Record one problem (a ``Reported`` carries nothing new and is dropped)."""
        if not isinstance(error, Reported):
            self.errors.append(error)

    def note(self, text: str) -> None:
        """Record a check that was skipped, and why (not a problem itself)."""
        self.notes.append(text)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run a block; a ``ZooError`` it raises is recorded and the block ends there."""
        try:
            yield
        except ZooError as error:
            self.add(error)


def report(problems: Problems | None, error: ZooError) -> None:
    """Raise ``error``; when collecting, record it instead and return (the caller goes on with a default)."""
    if problems is None:
        raise error
    problems.add(error)


def attempt(
    collector: Problems | None, function: Callable[..., T], /, *args: Any, default: Any = None, **kwargs: Any
) -> T:
    """``function(*args, **kwargs)``; when collecting, a ``ZooError`` is recorded and ``default`` returned.

    (``collector`` and ``function`` are positional-only, so ``kwargs`` may pass ``problems=`` on.)
    """
    if collector is None:
        return function(*args, **kwargs)
    try:
        return function(*args, **kwargs)
    except ZooError as error:
        collector.add(error)
        return default
