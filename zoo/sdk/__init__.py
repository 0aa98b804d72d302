"""zoo's plugin SDK: everything a plugin may import, in one place (see ``docs/plugin-sdk.md``).

A plugin imports ``zoo.sdk`` (and, if it likes, ``zoo`` for ``zoo.hookimpl`` and ``zoo.errors``),
nothing else of zoo: the names here are the stable surface, versioned and deprecated by the policy of
``docs/plugin-sdk.md`` (a renamed or removed name keeps working for one minor version, with a
``DeprecationWarning``). zoo's other modules may change between releases. The built-in plugins
(``zoo_plugins``) keep to this too; ``lint-imports`` checks it (``[tool.importlinter]`` in
``pyproject.toml``)::

    from zoo.sdk import LLAMA_LORA_TARGETS, Family, LanguageModelSpec, hookimpl, lm_spec

    GEMMA = Family("GemmaConfig", ("gemma",), LLAMA_LORA_TARGETS, "GemmaDecoderLayer")

    @hookimpl
    def zoo_register_language_models(register):
        register(lm_spec("tiny-gemma", GEMMA, {...}, "tiny random Gemma"))

``import zoo.sdk`` imports no torch: the interfaces, :class:`HFVisionTower` and the weight helpers
(which need torch) resolve on first access, so a registration module stays instant for ``zoo list``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zoo.errors import (
    CheckpointError,
    ConfigError,
    ContractError,
    PluginError,
    UnknownNameError,
    ZooError,
    suggest,
)
from zoo.sdk.components import build_component
from zoo.sdk.deprecation import Renamed, deprecated_attribute
from zoo.sdk.foreign import check_confined_file, confined_directory, read_json_file
from zoo.sdk.generation_config import apply_generation_settings, read_generation_config
from zoo.sdk.hf import (
    GENERIC,
    LLAMA_LORA_TARGETS,
    TINY_EOS_ID,
    TINY_PAD_ID,
    TINY_VOCAB_SIZE,
    Family,
    check_arch_fields,
    checkpoint_directory,
    hf_tower_factory,
    lm_directories,
    lm_spec,
    loading_problems,
    make_hf_config,
    tiny_tokenizer_path,
)
from zoo.sdk.hookspecs import hookimpl
from zoo.sdk.limits import check_arch_sizes
from zoo.sdk.specs import (
    LanguageModelConfig,
    LanguageModelSpec,
    ProjectorConfig,
    ProjectorSpec,
    VisionTowerConfig,
    VisionTowerSpec,
)

if TYPE_CHECKING:  # resolved on first access (module ``__getattr__``): they import torch
    from zoo.sdk.hf_vision import HFVisionTower
    from zoo.sdk.interfaces import ImagePreprocessor, LanguageModel, Projector, VisionTower
    from zoo.sdk.weights import building_on_meta, hub_offline, load_state_dict_file, require_path, torch_dtype_of

__all__ = [
    "GENERIC",
    "LLAMA_LORA_TARGETS",
    "TINY_EOS_ID",
    "TINY_PAD_ID",
    "TINY_VOCAB_SIZE",
    "CheckpointError",
    "ConfigError",
    "ContractError",
    "Family",
    "HFVisionTower",
    "ImagePreprocessor",
    "LanguageModel",
    "LanguageModelConfig",
    "LanguageModelSpec",
    "PluginError",
    "Projector",
    "ProjectorConfig",
    "ProjectorSpec",
    "UnknownNameError",
    "VisionTower",
    "VisionTowerConfig",
    "VisionTowerSpec",
    "ZooError",
    "apply_generation_settings",
    "build_component",
    "building_on_meta",
    "check_arch_fields",
    "check_arch_sizes",
    "check_confined_file",
    "checkpoint_directory",
    "confined_directory",
    "hf_tower_factory",
    "hookimpl",
    "hub_offline",
    "lm_directories",
    "lm_spec",
    "load_state_dict_file",
    "loading_problems",
    "make_hf_config",
    "read_generation_config",
    "read_json_file",
    "require_path",
    "suggest",
    "tiny_tokenizer_path",
    "torch_dtype_of",
]

# names whose module imports torch: imported on first access
_LAZY = {
    "ImagePreprocessor": "zoo.sdk.interfaces",
    "LanguageModel": "zoo.sdk.interfaces",
    "Projector": "zoo.sdk.interfaces",
    "VisionTower": "zoo.sdk.interfaces",
    "HFVisionTower": "zoo.sdk.hf_vision",
    "building_on_meta": "zoo.sdk.weights",
    "hub_offline": "zoo.sdk.weights",
    "load_state_dict_file": "zoo.sdk.weights",
    "require_path": "zoo.sdk.weights",
    "torch_dtype_of": "zoo.sdk.weights",
}

# renamed or removed SDK names, kept one minor version with a DeprecationWarning (docs/plugin-sdk.md):
# old name -> (module now defining it, its name there, the zoo version that deprecated the old name)
_DEPRECATED: dict[str, Renamed] = {}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    return deprecated_attribute(__name__, name, _DEPRECATED)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
