"""Renamed and removed public names keep working for one minor version, with a ``DeprecationWarning``.

A module that renames or moves a public name keeps the old one in a table consulted by its module
``__getattr__`` (PEP 562)::

    _DEPRECATED = {"old_name": ("zoo.sdk", "new_name", "0.2.0")}  # old -> (new module, new name, since)


    def __getattr__(name):
        return deprecated_attribute(__name__, name, _DEPRECATED)

The old name then resolves to the new object, warning once per call site that it goes away in the next
minor version (``0.2.0`` -> removed in ``0.3.0``). Torch-free.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["Renamed", "deprecated_attribute", "removal_version"]

# old name -> (module now defining it, its name there, the zoo version that deprecated the old name)
Renamed = tuple[str, str, str]


def removal_version(since: str) -> str:
    """The version that drops a name deprecated in ``since``: the next minor (``0.2.0`` -> ``0.3.0``)."""
    major, minor, *_ = (int(part) for part in since.split("."))
    return f"{major}.{minor + 1}.0"


def deprecated_attribute(module_name: str, name: str, table: Mapping[str, Renamed]) -> Any:
    """The object an old ``module_name.name`` now stands for, after a ``DeprecationWarning`` naming the new one.

    Args:
        module_name: ``__name__`` of the module whose attribute was looked up.
        name: the attribute looked up.
        table: old name -> (new module, new name, version that deprecated it).

    Raises:
        AttributeError: ``name`` is not in ``table`` (what a module ``__getattr__`` must raise).
    """
    entry = table.get(name)
    if entry is None:
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    new_module, new_name, since = entry
    warnings.warn(
        f"{module_name}.{name} is deprecated since zoo {since} and will be removed in zoo "
        f"{removal_version(since)}; use {new_module}.{new_name}",
        DeprecationWarning,
        stacklevel=3,  # the line that looked the name up (this function -> the module __getattr__ -> caller)
    )
    return getattr(importlib.import_module(new_module), new_name)
