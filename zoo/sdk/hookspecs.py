"""The hook specifications of the ``zoo`` pluggy project: one registration hook per component kind.

A plugin is any module (or object) with functions decorated by ``zoo.hookimpl``::

    import zoo

    @zoo.hookimpl
    def zoo_register_vision_towers(register):
        register(zoo.VisionTowerSpec(name="my-tower", factory=build_my_tower, ...))

Each ``register`` callable takes one spec (``VisionTowerSpec``, ``ProjectorSpec`` or
``LanguageModelSpec``). Registering a name that another plugin already registered is an error
naming both plugins. Implementations are called once, the first time the registry is needed,
in no guaranteed order (pluggy calls the last registered first): nothing may depend on order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from zoo.sdk.specs import LanguageModelSpec, ProjectorSpec, VisionTowerSpec

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "zoo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def zoo_register_vision_towers(register: Callable[[VisionTowerSpec], None]) -> None:
    """Register vision towers by calling ``register(VisionTowerSpec(...))`` once per tower.

    Called once per process, when the registry is first used. Returns nothing.
    """


@hookspec
def zoo_register_projectors(register: Callable[[ProjectorSpec], None]) -> None:
    """Register projectors by calling ``register(ProjectorSpec(...))`` once per projector.

    Called once per process, when the registry is first used. Returns nothing.
    """


@hookspec
def zoo_register_language_models(register: Callable[[LanguageModelSpec], None]) -> None:
    """Register language models by calling ``register(LanguageModelSpec(...))`` once per LM.

    Called once per process, when the registry is first used. Returns nothing.
    """
