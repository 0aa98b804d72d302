"""First-generation Qwen (Qwen-1.8B, 7B, 14B, 72B) as a native family: transformers' Qwen2, no remote code.

The published Qwen-1 checkpoints ship their own modeling code (``model_type: qwen``); zoo builds the same
network as ``Qwen2ForCausalLM`` instead (see :mod:`._qwen1_config` for the mapping and the one behaviour
that differs: dynamic-NTK / logn scaling past ``seq_length``) and reads a Qwen-1 checkpoint directory
(``model.lm.checkpoint``: safetensors or legacy ``.bin`` shards, ``qwen.tiktoken``) through
:mod:`._qwen1_build`, renaming every tensor onto the Qwen2 layout. The ``qwen.tiktoken`` vocabulary becomes
a fast tokenizer with Qwen-1's special tokens and a ChatML template.

Presets hold the values of each model's ``config.json`` on the Hugging Face Hub (``Qwen/Qwen-7B``...),
converted to ``Qwen2Config`` fields; ``tiny-qwen1`` is a random one for tests (head size 32).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zoo
from zoo.sdk import LanguageModelConfig, LanguageModelSpec

from ._qwen1_config import QWEN1_MODEL_TYPE, qwen1_config, qwen2_arch

if TYPE_CHECKING:
    from zoo.sdk import LanguageModel

__all__ = ["PRESETS", "QWEN1_PUBLISHED", "zoo_register_language_models"]

# name -> (the published config.json's architecture fields, title); vocab 151936 / 152064 is the padded
# embedding size (151643 BPE tokens + 208 special tokens fit below it)
QWEN1_PUBLISHED: dict[str, tuple[dict[str, Any], str]] = {
    "qwen-1.8b": (qwen1_config(2048, 11008, 24, 16, 151936, 8192, 10000), "Qwen-1.8B"),
    "qwen-7b": (qwen1_config(4096, 22016, 32, 32, 151936, 8192, 10000), "Qwen-7B"),
    "qwen-14b": (qwen1_config(5120, 27392, 40, 40, 152064, 2048, 10000), "Qwen-14B"),
    "qwen-72b": (qwen1_config(8192, 49152, 80, 64, 152064, 32768, 1000000), "Qwen-72B"),
}
# Tiny random Qwen-1: the shipped tiny tokenizer (1024 tokens; <|endoftext|> 1021, <|im_end|> 1023) with room
# for added tokens; head size 32 (hidden 64, 2 heads) because some serving backends refuse 16.
_TINY = qwen1_config(64, 256, 2, 2, 1088, 512, 10000)

# name -> (arch: Qwen2Config fields plus the family's model_type "qwen", which tells transformers-layout
# importers (zoo.interop.llava) that these presets are not for model_type qwen2 checkpoints; description)
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    name: (
        {"model_type": QWEN1_MODEL_TYPE, **qwen2_arch(config), "bos_token_id": 151643, "eos_token_id": 151643},
        f"{title} (first-generation Qwen as transformers Qwen2; weights from model.lm.checkpoint, a Qwen-1 dir)",
    )
    for name, (config, title) in QWEN1_PUBLISHED.items()
}
PRESETS["tiny-qwen1"] = (
    {"model_type": QWEN1_MODEL_TYPE, **qwen2_arch(_TINY), "bos_token_id": 1021, "eos_token_id": 1023},
    "tiny random Qwen-1 (Qwen2 layout, no GQA, untied head)",
)


def _build(config: LanguageModelConfig, *, name: str) -> LanguageModel:
    """The factory of every preset; torch and transformers are imported here, on the first build."""
    from ._qwen1_build import build_qwen1

    return build_qwen1(config, name=name)


@zoo.hookimpl
def zoo_register_language_models(register: Callable[[LanguageModelSpec], None]) -> None:
    """Register the Qwen-1 presets."""
    for name, (arch, description) in PRESETS.items():
        register(
            LanguageModelSpec(
                name=name,
                factory=functools.partial(_build, name=name),
                defaults={"arch": dict(arch)},
                description=description,
                source="transformers",
            )
        )
