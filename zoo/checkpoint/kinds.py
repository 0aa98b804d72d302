"""What a directory handed to zoo as a model is: a zoo checkpoint, a transformers Llava directory, or a checkpoint
of the VLM-learning reference. One test for each, used wherever zoo must tell them apart (``zoo.load``'s
errors, ``zoo convert``, ``zoo eval``, the demo's targets), so they cannot disagree.
"""

from __future__ import annotations

import os
from pathlib import Path

from zoo.checkpoint.manifest import MANIFEST

__all__ = [
    "ADAPTER_CONFIG",
    "OTHER_PARAMS",
    "is_llava_directory",
    "is_vlm_learning_dir",
    "is_zoo_checkpoint",
    "not_a_zoo_checkpoint_hint",
]

ADAPTER_CONFIG = "adapter_config.json"  # the reference's peft LoRA settings
OTHER_PARAMS = "other_params.bin"  # the reference's projector weights (a pickle, read with weights_only=True)


def is_zoo_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory zoo saved (it holds ``manifest.json``)."""
    return (Path(path) / MANIFEST).is_file()


def is_llava_directory(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a transformers ``save_pretrained`` directory (``config.json``, no manifest)."""
    directory = Path(path)
    return directory.is_dir() and (directory / "config.json").is_file() and not is_zoo_checkpoint(directory)


def is_vlm_learning_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a checkpoint saved by the reference (adapter config + ``other_params.bin``)."""
    directory = Path(path)
    return (directory / ADAPTER_CONFIG).is_file() and (directory / OTHER_PARAMS).is_file()


def not_a_zoo_checkpoint_hint(path: str | os.PathLike) -> str:
    """The one-line advice for a reference checkpoint given where a zoo checkpoint was expected."""
    return (
        f"{str(path)!r} is a VLM-learning (MMultiModal) checkpoint, not a zoo one: convert it with "
        f"'zoo convert --from-vlm-learning {path} OUT --lm-checkpoint QWEN1_DIR' (the Qwen-1 directory it was "
        "trained from) and use OUT"
    )
