"""MiniCPM3 language models, native in transformers (``MiniCPM3ForCausalLM``), plus a tiny random variant.

MiniCPM3 uses multi-head latent attention and three scalings: ``scale_emb`` on the input embeddings,
``scale_depth / sqrt(num_hidden_layers)`` on residual branches and ``hidden_size / dim_model_base`` before
the LM head. In transformers the embedding scale lives inside the embedding module, so
``LanguageModel.embed`` includes it. ``arch`` of ``minicpm3-4b`` holds the official ``config.json`` values
(``openbmb/MiniCPM3-4B``); that checkpoint's ``model_type`` is ``minicpm3``, so it loads natively and its
shipped remote code runs only with ``model.lm.trust_remote_code: true``.
"""

from __future__ import annotations

from collections.abc import Callable

import zoo
from zoo.sdk import Family, LanguageModelSpec, lm_spec

__all__ = ["MINICPM3", "zoo_register_language_models"]

MINICPM3 = Family(
    "MiniCPM3Config",
    ("minicpm3",),
    ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "MiniCPM3DecoderLayer",
)

_LONGROPE = [1.0591234137867171, 1.1241891283591912, 1.2596935748670968, 1.5380380402321725, 2.093982484148734,
             3.1446935121267696, 4.937952647693647, 7.524541999994549, 10.475458000005451, 13.062047352306353,
             14.85530648787323, 15.906017515851266, 16.461961959767827, 16.740306425132907, 16.87581087164081,
             16.940876586213285]  # fmt: skip
MINICPM3_4B = {
    "vocab_size": 73448, "hidden_size": 2560, "intermediate_size": 6400, "num_hidden_layers": 62,
    "num_attention_heads": 40, "num_key_value_heads": 40, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32,
    "q_lora_rank": 768, "kv_lora_rank": 256, "rms_norm_eps": 1e-5, "hidden_act": "silu", "initializer_range": 0.1,
    "max_position_embeddings": 32768, "scale_emb": 12, "dim_model_base": 256, "scale_depth": 1.4,
    "bos_token_id": 1, "eos_token_id": [2, 73440], "tie_word_embeddings": True,
    "rope_scaling": {"type": "longrope", "long_factor": _LONGROPE, "short_factor": _LONGROPE,
                     "original_max_position_embeddings": 32768},
}  # fmt: skip
# Tiny: same shape of attention (q/kv low rank, rope + nope head parts) and the same three scalings; query/key
# head 24 + 8 = 32 and value head 64 / 2 = 32, the smallest head size vLLM's CPU attention serves.
TINY_MINICPM3 = {
    "vocab_size": 1088, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 2, "qk_nope_head_dim": 24, "qk_rope_head_dim": 8,
    "q_lora_rank": 32, "kv_lora_rank": 16, "max_position_embeddings": 512, "scale_emb": 12,
    "dim_model_base": 16, "scale_depth": 1.4, "tie_word_embeddings": True,
    "bos_token_id": 1021, "eos_token_id": 1023,
}  # fmt: skip


@zoo.hookimpl
def zoo_register_language_models(register: Callable[[LanguageModelSpec], None]) -> None:
    """Register MiniCPM3-4B and tiny-minicpm3."""
    register(
        lm_spec("minicpm3-4b", MINICPM3, MINICPM3_4B, "MiniCPM3-4B (transformers; weights from model.lm.checkpoint)")
    )
    register(lm_spec("tiny-minicpm3", MINICPM3, TINY_MINICPM3, "tiny random MiniCPM3 (with scale_emb)"))
