"""Building a registered component from inside another one's factory (a tower made of towers).

A factory may need other registered components: the ``fused`` tower builds each of its
``towers: [...]`` by name. :func:`build_component` does that without the plugin importing zoo's
builder: the builder (:mod:`zoo.core.builder`, a layer above the SDK) hands its implementation to
:func:`provide_component_builder` when it is imported, which happens before any factory runs. The
component is built the way the builder builds a slot (preset defaults, the name's implied values, the
options, the typed config with its unknown keys named) on the device the caller is building on, so a
sub-component of a ``meta`` build is on ``meta`` too.

Torch-free.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol

from zoo.errors import ConfigError
from zoo.sdk.specs import SLOTS

__all__ = ["ComponentBuilder", "build_component", "provide_component_builder"]

# the module that provides the implementation when nothing has registered one yet
_PROVIDER_MODULE = "zoo.core.builder"


class ComponentBuilder(Protocol):
    """What :func:`provide_component_builder` accepts."""

    def __call__(self, kind: str, name: str, options: Mapping[str, Any], *, key: str, dtype: str) -> Any: ...


_builder: ComponentBuilder | None = None


def provide_component_builder(builder: ComponentBuilder) -> None:
    """Install the implementation of :func:`build_component` (zoo's builder does, when imported)."""
    global _builder
    _builder = builder


def build_component(
    kind: str, name: str, options: Mapping[str, Any] | None = None, *, key: str | None = None, dtype: str = "float32"
) -> Any:
    """Build the registered component ``name`` of ``kind`` with ``options``, as the builder builds a slot.

    Args:
        kind: ``"vision"``, ``"projector"`` or ``"lm"``.
        name: a registered name (or a pass-through such as ``timm:<model>``).
        options: the component's options, as a YAML slot would give them (without ``name``).
        key: the YAML key path that error messages name (default ``model.<kind>``), e.g.
            ``model.vision.towers[1]``.
        dtype: the dtype used when ``options`` has none (the outer component's).

    Returns:
        The built ``VisionTower`` / ``Projector`` / ``LanguageModel``, on the device the caller is
        building on (``meta`` during the builder's contract check).

    Raises:
        UnknownNameError: ``name`` is not registered (with close matches).
        ConfigError: an unknown or invalid option, named by its key path under ``key``.

    Example (inside a factory)::

        tower = build_component("vision", "tiny-siglip", {"image_size": 64}, key="model.vision.towers[1]")
    """
    if kind not in SLOTS:
        raise ConfigError(f"build_component: kind = {kind!r} is not a component kind; valid choices: {list(SLOTS)}")
    builder = _builder
    if builder is None:  # the builder registers itself on import; a factory called directly may come first
        importlib.import_module(_PROVIDER_MODULE)
        builder = _builder
    if builder is None:
        raise RuntimeError(f"{_PROVIDER_MODULE} did not provide zoo.sdk.build_component's implementation")
    return builder(kind, name, dict(options or {}), key=key or f"model.{kind}", dtype=dtype)
