"""The flat module paths of zoo 0.1.0 (``zoo.hf_llava``, ``zoo.builder``...) and the wing each now lives in.

zoo 0.1.0 kept every module at the top of the package; they now live in wings (``zoo.sdk``, ``zoo.core``,
``zoo.checkpoint``, ``zoo.interop``, ``zoo.train``, ``zoo.cli``). Until zoo 0.2.0 an old path still imports,
with a ``DeprecationWarning`` naming the new one, and gives the very module object of the new path (so
``monkeypatch`` and ``isinstance`` see one module, not a copy). A finder on ``sys.meta_path`` does it:
nothing is imported until an old path is asked for, so ``import zoo`` stays free of torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from zoo.sdk.deprecation import removal_version

__all__ = ["MOVED", "install"]

SINCE = "0.1.0"

# old module -> the module that now holds its code
MOVED: dict[str, str] = {
    **{f"zoo.{name}": f"zoo.sdk.{name}" for name in (
        "hookspecs", "specs", "interfaces", "weights", "images", "hf", "hf_lm", "hf_vision", "generation_config",
        "foreign", "safe_paths", "template_render", "yaml_io", "limits", "problems",
    )},
    **{f"zoo.{name}": f"zoo.core.{name}" for name in (
        "registry", "plugin_manager", "config", "contract", "builder", "multimodal", "anyres", "anyres_projector",
        "processor", "prompt", "progress", "records", "data_config", "plan_cache",
    )},
    "zoo.training": "zoo.core.train_policy",
    "zoo.checkpoint_save": "zoo.checkpoint.saving",
    **{f"zoo.{name}": f"zoo.checkpoint.{name}" for name in ("snapshot", "manifest", "state_dict", "atomic", "claim")},
    "zoo.hf_llava": "zoo.interop.llava",
    "zoo.hf_llava_next": "zoo.interop.llava_next",
    "zoo.lmms_eval_model": "zoo.interop.lmms_eval",
    **{f"zoo.{name}": f"zoo.interop.{name}" for name in ("vlm_learning", "vlm_learning_data", "targets")},
    "zoo.trainer": "zoo.train.trainer",
    "zoo.train_config": "zoo.train.config",
    "zoo.train_checkpoints": "zoo.train.checkpoints",
    **{f"zoo.{name}": f"zoo.train.{name}" for name in (
        "data", "evaluate", "scoring", "shapes", "chat", "feature_fill", "feature_cache", "step_profile",
    )},
    **{f"zoo.{name}_command": f"zoo.cli.{name}" for name in (
        "cache", "chat", "convert", "data", "demo", "eval", "generate", "train", "verify",
    )},
    "zoo.demo": "zoo.cli.demo_app",
    **{f"zoo.{name}": f"zoo.cli.{name}" for name in (
        "load_options", "generation_options", "generate_batch", "validation",
    )},
    "zoo.fused": "zoo_plugins.fused",  # the fused tower became an ordinary built-in plugin
}  # fmt: skip


class _MovedLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a throwaway module: exec_module puts the real one in its place

    def exec_module(self, module: ModuleType) -> None:
        old = module.__name__
        new = MOVED[old]
        warnings.warn(
            f"module {old} is deprecated since zoo {SINCE} and will be removed in zoo {removal_version(SINCE)}; "
            f"import {new}",
            DeprecationWarning,
            stacklevel=2,
        )
        sys.modules[old] = importlib.import_module(new)  # the import system returns what sys.modules holds


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _LOADER)


_LOADER = _MovedLoader()
_FINDER = _MovedFinder()


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once): an old path is never looked up as a file, so a stale
    module left by an old install cannot shadow the moved one."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
