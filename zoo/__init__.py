"""zoo: a plugin-based model zoo of LLaVA-style vision-language models.

Public API (heavy modules load lazily, on first attribute access)::

    import zoo

    model = zoo.build("tiny-clip-mlp-qwen2")          # a registered composition or a YAML path
    zoo.list_components("vision", "tiny-*")          # like timm.list_models
    zoo.save(model, "ckpt/"); model = zoo.load("ckpt/")
    zoo.validate("train.yaml")                       # every problem of a model, training or bench file

Plugins implement the hooks of ``zoo.hookspecs`` with the ``zoo.hookimpl`` marker.
"""

from __future__ import annotations

import importlib
from typing import Any

from zoo.errors import (
    CheckpointError,
    ConfigError,
    ContractError,
    PluginError,
    UnknownNameError,
    ZooError,
)
from zoo.hookspecs import hookimpl
from zoo.specs import (
    LanguageModelConfig,
    LanguageModelSpec,
    ProjectorConfig,
    ProjectorSpec,
    VisionTowerConfig,
    VisionTowerSpec,
)

__version__ = "0.1.0"

_LAZY = {
    "build": "zoo.builder",
    "plan": "zoo.builder",
    "load": "zoo.checkpoint",
    "save": "zoo.checkpoint",
    "save_hf_llava": "zoo.hf_llava",
    "from_hf_llava": "zoo.hf_llava",
    "from_vlm_learning": "zoo.vlm_learning",
    "MultiModal": "zoo.multimodal",
    "MultiModalProcessor": "zoo.processor",
    "VisionTower": "zoo.interfaces",
    "Projector": "zoo.interfaces",
    "LanguageModel": "zoo.interfaces",
    "ImagePreprocessor": "zoo.interfaces",
    "get_registry": "zoo.registry",
    "list_components": "zoo.registry",
    "load_model_config": "zoo.config",
    "ModelConfig": "zoo.config",
    "validate": "zoo.validation",
    "Problem": "zoo.validation",
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
