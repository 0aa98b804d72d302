"""Deprecated: the fused vision tower is the built-in plugin ``zoo_plugins.fused`` (an ordinary plugin, built
through ``zoo.sdk.build_component``, not zoo's builder). ``zoo.fused.FusedTower``, ``FusedPreprocessor`` and
``build_fused_tower`` still resolve to it, with a ``DeprecationWarning``, until zoo 0.2.0.
"""

from __future__ import annotations

from typing import Any

from zoo.sdk.deprecation import Renamed, deprecated_attribute

__all__: list[str] = []  # nothing new is defined here

_DEPRECATED: dict[str, Renamed] = {
    name: ("zoo_plugins.fused", name, "0.1.0") for name in ("FusedPreprocessor", "FusedTower", "build_fused_tower")
}


def __getattr__(name: str) -> Any:
    return deprecated_attribute(__name__, name, _DEPRECATED)
