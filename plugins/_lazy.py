"""Lazy module attributes for the built-in plugins: registering a component imports no model library.

A registration module (``clip``, ``projectors``...) holds presets as plain data and imports only
torch-free names of ``zoo.sdk`` and ``zoo.errors``, so that ``zoo list`` never pays for torch,
transformers, timm or open_clip. Its spec factories import the implementation on first call,
and the implementation names it re-exports (``zoo_plugins.clip.CLIPTower``) resolve on first access
through a module ``__getattr__`` (PEP 562)::

    _LAZY = {"CLIPTower": "._clip_tower"}


    def __getattr__(name: str) -> Any:
        return lazy_attribute(__name__, name, _LAZY)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["lazy_attribute"]


def lazy_attribute(module_name: str, name: str, exports: Mapping[str, str]) -> Any:
    """Import and return ``name`` from the module ``exports[name]`` names, caching it in ``module_name``.

    Args:
        module_name: ``__name__`` of the module that re-exports the name.
        name: the attribute looked up.
        exports: attribute name -> module defining it, absolute or relative to ``zoo_plugins``.

    Raises:
        AttributeError: ``name`` is not in ``exports`` (what a module ``__getattr__`` must raise).
    """
    source = exports.get(name)
    if source is None:
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source, __package__), name)
    setattr(sys.modules[module_name], name, value)  # later lookups find it without __getattr__
    return value
