"""The train wing: ``zoo train`` and ``zoo eval`` on transformers' Trainer.

``run`` (one training run), ``trainer`` (the Trainer subclass and its save hook), ``config`` (the
training file), ``checkpoints`` (resume and rotation), ``data`` (LLaVA-format samples and collation),
``chat`` (rendering a conversation for training), ``evaluate`` / ``scoring``, ``shapes`` (the built-in
task), ``feature_cache`` / ``feature_fill`` (features of frozen towers) and ``step_profile``. It imports
``zoo.sdk``, ``zoo.core`` and ``zoo.checkpoint``, never ``zoo.interop``.

The names the flat ``zoo.train`` module exported until 0.1.0 still resolve here, with a
``DeprecationWarning`` naming where each lives now (``zoo.train.run.train``...), until 0.2.0.
"""

from __future__ import annotations

from typing import Any

from zoo.sdk.deprecation import Renamed, deprecated_attribute

__all__: list[str] = []

# the public names of the flat zoo.train module of 0.1.0 -> the module that holds each now
_HOMES = {
    "zoo.train.run": ("OUTPUT_KIND", "TrainResult", "train", "training_arguments"),
    "zoo.train.config": ("TrainConfig", "load_train_config"),
    "zoo.train.checkpoints": ("checkpoint_dirs", "resume_point", "written_by_a_run"),
}
_DEPRECATED: dict[str, Renamed] = {name: (home, name, "0.1.0") for home, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    return deprecated_attribute(__name__, name, _DEPRECATED)
