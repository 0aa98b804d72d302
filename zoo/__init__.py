"""zoo: a plugin-based model zoo of LLaVA-style vision-language models.

Public API (heavy modules load lazily, on first attribute access)::

    import zoo

    model = zoo.build("tiny-clip-mlp-qwen2")          # a registered composition or a YAML path
    zoo.list_components("vision", "tiny-*")          # like timm.list_models
    zoo.save(model, "ckpt/"); model = zoo.load("ckpt/")
    zoo.validate("train.yaml")                       # every problem of a model, training or bench file

Plugins implement the hooks of ``zoo.sdk.hookspecs`` with the ``zoo.hookimpl`` marker.
"""

from __future__ import annotations

import importlib
from typing import Any

from zoo import _moved
from zoo.errors import (
    CheckpointError,
    ConfigError,
    ContractError,
    PluginError,
    UnknownNameError,
    ZooError,
)
from zoo.sdk.hookspecs import hookimpl
from zoo.sdk.specs import (
    LanguageModelConfig,
    LanguageModelSpec,
    ProjectorConfig,
    ProjectorSpec,
    VisionTowerConfig,
    VisionTowerSpec,
)

__version__ = "0.1.0"

_moved.install()  # the flat module paths of 0.1.0 (zoo.hf_llava...) import, with a warning, until 0.2.0

_LAZY = {
    "build": "zoo.core.builder",
    "plan": "zoo.core.builder",
    "load": "zoo.checkpoint.loading",
    "save": "zoo.checkpoint.saving",
    "save_hf_llava": "zoo.interop.llava",
    "from_hf_llava": "zoo.interop.llava",
    "from_vlm_learning": "zoo.interop.vlm_learning",
    "MultiModal": "zoo.core.multimodal",
    "MultiModalProcessor": "zoo.core.processor",
    "VisionTower": "zoo.sdk.interfaces",
    "Projector": "zoo.sdk.interfaces",
    "LanguageModel": "zoo.sdk.interfaces",
    "ImagePreprocessor": "zoo.sdk.interfaces",
    "get_registry": "zoo.core.registry",
    "list_components": "zoo.core.registry",
    "load_model_config": "zoo.core.config",
    "ModelConfig": "zoo.core.config",
    "validate": "zoo.cli.validation",
    "Problem": "zoo.cli.validation",
}

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ContractError",
    "LanguageModelConfig",
    "LanguageModelSpec",
    "PluginError",
    "ProjectorConfig",
    "ProjectorSpec",
    "UnknownNameError",
    "VisionTowerConfig",
    "VisionTowerSpec",
    "ZooError",
    "__version__",
    "hookimpl",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
