"""Qwen-1 ``config.json`` (``model_type: qwen``, remote code) -> transformers ``Qwen2Config`` fields.

First-generation Qwen (Qwen-1.8B/7B/14B/72B) is the Qwen2 architecture without grouped-query attention:
RMSNorm pre-norm blocks, rotary attention with a fused ``c_attn`` (q, k, v with bias) and a bias-free
``c_proj``, a SwiGLU MLP whose ``intermediate_size`` counts *both* halves (``w1`` and ``w2`` are each
``intermediate_size // 2`` wide). So a Qwen-1 config maps field by field onto ``Qwen2Config``, with
``intermediate_size`` halved and ``num_key_value_heads = num_attention_heads``.

What differs: Qwen-1's ``use_dynamic_ntk`` (RoPE base grown by ``2 ** ceil(log2(n / seq_length) + 1) - 1``)
and ``use_logn_attn`` (queries scaled by ``log_{seq_length}(position)``) act only on positions past
``seq_length`` and only at inference. zoo's Qwen2 build uses the plain RoPE of ``rotary_emb_base`` at every
length, so logits are identical up to ``seq_length`` tokens (the models' training length, which the
presets record as ``max_position_embeddings``) and differ beyond it, where Qwen-1 extrapolates with NTK/logn.
transformers' ``dynamic`` RoPE uses another formula, so it is not substituted.

Private module: plain data and dict arithmetic, no torch, so that registering the presets stays instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zoo.errors import CheckpointError

__all__ = ["QWEN1_MODEL_TYPE", "STRUCTURE", "qwen1_config", "qwen2_arch"]

QWEN1_MODEL_TYPE = "qwen"
# fields that fix the shapes of a checkpoint: a preset and a checkpoint must agree on them
STRUCTURE = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
# values every published Qwen-1 config has and the Qwen2 mapping relies on: field -> (value, why)
_REQUIRED = {
    "rotary_pct": (1.0, "Qwen2 rotates the whole head"),
    "no_bias": (True, "Qwen2 has bias on q/k/v only"),
    "scale_attn_weights": (True, "Qwen2 scales attention by 1/sqrt(head_dim)"),
}


def qwen1_config(
    hidden: int, intermediate: int, layers: int, heads: int, vocab: int, seq_length: int, rope_base: float
) -> dict[str, Any]:
    """The architecture fields of a published Qwen-1 ``config.json`` (its own names)."""
    return {
        "model_type": QWEN1_MODEL_TYPE,
        "hidden_size": hidden,
        "intermediate_size": intermediate,  # both SwiGLU halves: w1 and w2 are intermediate_size // 2 wide
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "kv_channels": hidden // heads,
        "vocab_size": vocab,
        "seq_length": seq_length,
        "rotary_emb_base": rope_base,
        "rotary_pct": 1.0,
        "layer_norm_epsilon": 1e-6,
        "no_bias": True,
        "scale_attn_weights": True,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
    }


def qwen2_arch(config: Mapping[str, Any], where: str = "Qwen-1 config") -> dict[str, Any]:
    """``Qwen2Config`` keyword arguments equivalent to a Qwen-1 ``config.json`` mapping.

    Raises:
        CheckpointError: a field is missing, has the wrong type, or takes a value the Qwen2 architecture
            cannot express (partial rotary, biases on ``c_proj``/MLP, a head size that is not
            ``hidden_size / num_attention_heads``).
    """
    if config.get("model_type") != QWEN1_MODEL_TYPE:
        raise CheckpointError(
            f"{where}: model_type = {config.get('model_type')!r}, expected {QWEN1_MODEL_TYPE!r} (first-generation Qwen)"
        )
    values = {}
    for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
        value = config.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CheckpointError(f"{where}: {field} = {value!r}: expected a positive integer")
        values[field] = value
    hidden, heads = values["hidden_size"], values["num_attention_heads"]
    head_dim = config.get("kv_channels", hidden // heads)
    if hidden % heads or head_dim != hidden // heads:
        raise CheckpointError(
            f"{where}: kv_channels = {head_dim!r} with hidden_size {hidden} and {heads} heads: the Qwen2 layout "
            f"needs kv_channels == hidden_size / num_attention_heads"
        )
    if values["intermediate_size"] % 2:
        raise CheckpointError(
            f"{where}: intermediate_size = {values['intermediate_size']} is odd; Qwen-1 splits it into w1 and w2"
        )
    for field, (expected, why) in _REQUIRED.items():
        if field in config and config[field] != expected:
            raise CheckpointError(
                f"{where}: {field} = {config[field]!r} is not supported ({why}; expected {expected!r})"
            )
    seq_length = config.get("seq_length") or config.get("max_position_embeddings") or 8192
    return {
        "vocab_size": values["vocab_size"],
        "hidden_size": hidden,
        "intermediate_size": values["intermediate_size"] // 2,  # one SwiGLU half (w1 = up, w2 = gate)
        "num_hidden_layers": values["num_hidden_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "hidden_act": "silu",
        "max_position_embeddings": int(seq_length),  # exact up to here (see the module docstring)
        "rms_norm_eps": float(config.get("layer_norm_epsilon", 1e-6)),
        "rope_theta": float(config.get("rotary_emb_base", 10000)),
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
        "initializer_range": float(config.get("initializer_range", 0.02)),
        "use_sliding_window": False,
        "max_window_layers": values["num_hidden_layers"],
        "attention_dropout": 0.0,
    }
