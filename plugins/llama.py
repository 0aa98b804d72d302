"""Llama-2 and Vicuna v1.5 language models (native transformers ``LlamaForCausalLM``), plus a tiny variant.

``arch`` holds the official ``config.json`` values of ``meta-llama/Llama-2-7b-hf`` and
``lmsys/vicuna-7b-v1.5`` (the LLM of LLaVA-1.5); weights come from ``model.lm.checkpoint``.
"""

from __future__ import annotations

from collections.abc import Callable

import zoo
from zoo.sdk import LLAMA_LORA_TARGETS, Family, LanguageModelSpec, lm_spec

__all__ = ["LLAMA", "zoo_register_language_models"]

LLAMA = Family("LlamaConfig", ("llama",), LLAMA_LORA_TARGETS, "LlamaDecoderLayer")

LLAMA_2_7B = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
    "hidden_act": "silu", "initializer_range": 0.02, "rope_theta": 10000.0, "attention_bias": False,
    "pretraining_tp": 1, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}  # fmt: skip
# Tiny: vocab exactly the shipped tiny tokenizer's 1024 tokens (like Llama-2's 32000), so adding <image> grows it;
# head size 32, the smallest that vLLM's CPU attention serves.
TINY_LLAMA = {
    "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False, "bos_token_id": 1021, "eos_token_id": 1023,
}  # fmt: skip


@zoo.hookimpl
def zoo_register_language_models(register: Callable[[LanguageModelSpec], None]) -> None:
    """Register Llama-2-7B, Vicuna-7B v1.5 and tiny-llama."""
    checkpoint = "(transformers; weights from model.lm.checkpoint)"
    register(lm_spec("llama-2-7b", LLAMA, LLAMA_2_7B, f"Llama-2-7B {checkpoint}"))
    register(lm_spec("vicuna-7b-v1.5", LLAMA, {**LLAMA_2_7B, "pad_token_id": 0}, f"Vicuna-7B v1.5 {checkpoint}"))
    register(lm_spec("tiny-llama", LLAMA, TINY_LLAMA, "tiny random Llama"))
