"""``hf-causal-lm``: any local causal-LM checkpoint directory in transformers' layout.

The architecture comes from the checkpoint's ``config.json``; LoRA targets are every ``nn.Linear`` inside
the decoder layers, whose class is read from the model's ``_no_split_modules``. Code shipped inside the
checkpoint (``auto_map``) runs only with ``model.lm.trust_remote_code: true``.
"""

from __future__ import annotations

from collections.abc import Callable

import zoo
from zoo.sdk import GENERIC, LanguageModelSpec, lm_spec

__all__ = ["zoo_register_language_models"]


@zoo.hookimpl
def zoo_register_language_models(register: Callable[[LanguageModelSpec], None]) -> None:
    """Register the generic ``hf-causal-lm`` (requires ``checkpoint:``)."""
    description = "any local transformers causal-LM directory (requires model.lm.checkpoint)"
    register(lm_spec("hf-causal-lm", GENERIC, None, description, requires_checkpoint=True))
