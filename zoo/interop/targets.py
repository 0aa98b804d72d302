"""One way to turn what a user names on a command line into a ready ``MultiModal``.

A target is a zoo checkpoint directory (it holds ``manifest.json``), a transformers Llava directory (it
holds a ``config.json`` and no manifest), a YAML file or a registered composition name. ``zoo demo``
and the lmms-eval adapter take the same targets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from zoo.core.multimodal import MultiModal

__all__ = ["load_target"]


def load_target(
    target: str | os.PathLike,
    *,
    plugins: Sequence[str] = (),
    device: str | torch.device | None = None,
    **load_options: Any,
) -> MultiModal:
    """Load or build the model a target names, in eval mode.

    Args:
        target: a zoo checkpoint directory, a transformers Llava directory, a YAML path or a composition name.
        plugins: extra plugin modules or ``.py`` files (a checkpoint's own plugins are never imported for it).
        device: where to put the model (default CPU).
        **load_options: for a zoo checkpoint, passed to :func:`zoo.load` (``trust_remote_code``, ``bases``,
            ``verify``: the caller's decisions, see :mod:`zoo.cli.load_options`).

    Example:
        >>> model = load_target("tiny-clip-mlp-qwen2")
    """
    from zoo.checkpoint.kinds import is_llava_directory, is_zoo_checkpoint

    path = Path(target)
    if is_zoo_checkpoint(path):
        from zoo.checkpoint.loading import load

        model = load(path, device=device, **{"plugins": tuple(plugins), **load_options})
    elif is_llava_directory(path):
        from zoo.interop.llava import from_hf_llava

        model = from_hf_llava(path, device=device)
    else:
        from zoo.core.builder import build

        model = build(os.fspath(target), plugins=tuple(plugins), device=device)
    return model.eval()
