"""Qwen2, Qwen2.5 and Qwen3 language models (native transformers), plus their tiny random variants.

``arch`` holds the values of each model's official ``config.json`` on the Hugging Face Hub
(``Qwen/<name>``); weights come from ``model.lm.checkpoint``, a local directory. Qwen2.5 reuses the
Qwen2 architecture (``model_type: qwen2``).
"""

from __future__ import annotations

from collections.abc import Callable

import zoo
from zoo.sdk import LLAMA_LORA_TARGETS, Family, LanguageModelSpec, lm_spec

__all__ = ["QWEN2", "QWEN3", "zoo_register_language_models"]

QWEN2 = Family("Qwen2Config", ("qwen2",), LLAMA_LORA_TARGETS, "Qwen2DecoderLayer")
QWEN3 = Family("Qwen3Config", ("qwen3",), LLAMA_LORA_TARGETS, "Qwen3DecoderLayer")

_QWEN2 = {
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "use_sliding_window": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
}
_QWEN3 = {
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000,
    "use_sliding_window": False,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "vocab_size": 151936,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}


def _size(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int, tie: bool, context: int) -> dict:
    return {"hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
            "tie_word_embeddings": tie, "max_position_embeddings": context}  # fmt: skip


def _qwen2(*size, window: int) -> dict:
    arch = {**_QWEN2, **_size(*size)}
    return {**arch, "sliding_window": arch["max_position_embeddings"], "max_window_layers": window}


PRESETS: dict[str, tuple[Family, dict, str]] = {
    "qwen2-0.5b": (QWEN2, _qwen2(896, 4864, 24, 14, 2, 151936, True, 131072, window=24), "Qwen2-0.5B"),
    "qwen2-1.5b": (QWEN2, _qwen2(1536, 8960, 28, 12, 2, 151936, True, 131072, window=28), "Qwen2-1.5B"),
    "qwen2-7b": (QWEN2, _qwen2(3584, 18944, 28, 28, 4, 152064, False, 131072, window=28), "Qwen2-7B"),
    "qwen2.5-0.5b": (QWEN2, _qwen2(896, 4864, 24, 14, 2, 151936, True, 32768, window=24), "Qwen2.5-0.5B"),
    "qwen2.5-1.5b": (QWEN2, _qwen2(1536, 8960, 28, 12, 2, 151936, True, 131072, window=28), "Qwen2.5-1.5B"),
    "qwen2.5-7b": (QWEN2, _qwen2(3584, 18944, 28, 28, 4, 152064, False, 131072, window=28), "Qwen2.5-7B"),
    "qwen3-0.6b": (QWEN3, {**_QWEN3, **_size(1024, 3072, 28, 16, 8, 151936, True, 40960), "max_window_layers": 28},
                   "Qwen3-0.6B"),
    "qwen3-8b": (QWEN3, {**_QWEN3, **_size(4096, 12288, 36, 32, 8, 151936, False, 40960), "max_window_layers": 36},
                 "Qwen3-8B"),
}  # fmt: skip

# Tiny random variants: the shipped tiny tokenizer (1024 tokens; <|endoftext|> 1021, <|im_end|> 1023) with
# room for added tokens such as <image>, tied embeddings like the small Qwens. Head size 32 (2 heads, GQA 2:1):
# the smallest that vLLM's CPU attention serves (32, 64, 80 and up), so an export of a tiny model can be served.
_TINY = {**_size(64, 128, 2, 2, 1, 1088, True, 512), "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
         "bos_token_id": 1021, "eos_token_id": 1023}  # fmt: skip
PRESETS["tiny-qwen2"] = (QWEN2, {**_TINY, "max_window_layers": 2}, "tiny random Qwen2")
PRESETS["tiny-qwen3"] = (QWEN3, {**_TINY, "head_dim": 32, "max_window_layers": 2}, "tiny random Qwen3")


@zoo.hookimpl
def zoo_register_language_models(register: Callable[[LanguageModelSpec], None]) -> None:
    """Register the Qwen presets."""
    for name, (family, arch, title) in PRESETS.items():
        what = title if name.startswith("tiny-") else f"{title} (transformers; weights from model.lm.checkpoint)"
        register(lm_spec(name, family, arch, what))
