"""Test helpers: tiny Qwen-1 checkpoints in the published layout and a reference forward written from the
published architecture (``QWenLMHeadModel`` of ``modeling_qwen.py``), independent of transformers.

The reference follows Qwen-1's own code paths: a fused ``c_attn`` split into q, k, v; rotary embedding with
``rotate_half`` over the first/second half of the head; ``softmax(q k^T / sqrt(d))`` with a causal mask;
``c_proj``; an MLP ``c_proj(w1(x) * silu(w2(x)))``; RMSNorm ``x * rsqrt(mean(x^2) + eps) * w``. Optional
``lora`` deltas (peft's ``W + B A * alpha / r``) apply to any of its linear layers by Qwen-1 module name.
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["TINY_QWEN1", "qwen1_forward", "tiny_qwen1_state", "write_qwen1_checkpoint", "write_tiktoken"]

TINY_QWEN1 = {
    "model_type": "qwen",
    "architectures": ["QWenLMHeadModel"],
    "auto_map": {"AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"},
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "kv_channels": 32,
    "vocab_size": 512,
    "seq_length": 512,
    "max_position_embeddings": 512,
    "rotary_emb_base": 10000,
    "rotary_pct": 1.0,
    "layer_norm_epsilon": 1e-6,
    "no_bias": True,
    "scale_attn_weights": True,
    "tie_word_embeddings": False,
    "use_dynamic_ntk": True,
    "use_logn_attn": True,
}
_TEXT = (
    "Hello world! The quick brown fox jumps over the lazy dog. What is in this image? A cat on a mat. "
    "the the the cat cat image image picture 12345 describe describe"
)


def write_tiktoken(path: Path, merges: int = 40) -> dict[bytes, int]:
    """A tiny ``qwen.tiktoken``: the 256 bytes plus ``merges`` BPE merges learnt from a fixed text."""
    ranks = {bytes([i]): i for i in range(256)}
    words = [[bytes([b]) for b in word.encode()] for word in _TEXT.split()]
    for _ in range(merges):
        pairs = collections.Counter(p for w in words for p in itertools.pairwise(w))
        if not pairs:
            break
        (a, b), _count = pairs.most_common(1)[0]
        ranks[a + b] = len(ranks)
        merged = []
        for w in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == (a, b):
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged.append(out)
        words = merged
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()), encoding="utf-8")
    return ranks


def tiny_qwen1_state(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random Qwen-1 weights (published names), norms away from 1 and biases non-zero so each one matters."""
    g = torch.Generator().manual_seed(seed)
    h, inter, vocab = config["hidden_size"], config["intermediate_size"] // 2, config["vocab_size"]

    def rand(*shape: int, std: float = 0.05) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    state = {"transformer.wte.weight": rand(vocab, h, std=0.5), "transformer.ln_f.weight": 1 + rand(h, std=0.2),
             "lm_head.weight": rand(vocab, h, std=0.1)}  # fmt: skip
    for i in range(config["num_hidden_layers"]):
        p = f"transformer.h.{i}."
        state.update({
            p + "ln_1.weight": 1 + rand(h, std=0.2), p + "ln_2.weight": 1 + rand(h, std=0.2),
            p + "attn.c_attn.weight": rand(3 * h, h, std=0.15), p + "attn.c_attn.bias": rand(3 * h, std=0.1),
            p + "attn.c_proj.weight": rand(h, h, std=0.1),
            p + "mlp.w1.weight": rand(inter, h, std=0.1), p + "mlp.w2.weight": rand(inter, h, std=0.1),
            p + "mlp.c_proj.weight": rand(h, inter, std=0.1),
        })  # fmt: skip
    return state


def write_qwen1_checkpoint(
    directory: Path, config: dict | None = None, *, seed: int = 0, legacy_bin: bool = False
) -> dict[str, torch.Tensor]:
    """Write a Qwen-1 checkpoint directory as published (config.json, weights, qwen.tiktoken); return the state."""
    from safetensors.torch import save_file

    config = dict(config or TINY_QWEN1)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "QWenTokenizer", "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]}}),
        encoding="utf-8",
    )  # fmt: skip
    ranks = write_tiktoken(directory / "qwen.tiktoken")
    assert len(ranks) + 208 <= config["vocab_size"]
    state = tiny_qwen1_state(config, seed)
    if legacy_bin:
        torch.save(state, directory / "pytorch_model.bin")
    else:
        save_file(state, str(directory / "model.safetensors"))
    return state


def qwen1_forward(
    state: dict[str, torch.Tensor],
    config: dict,
    input_ids: torch.Tensor | None = None,
    *,
    inputs_embeds: torch.Tensor | None = None,
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    lora_scale: float = 1.0,
) -> torch.Tensor:
    """Logits ``[B, T, V]`` of Qwen-1 (no padding), from the published architecture; fp32."""
    h, heads = config["hidden_size"], config["num_attention_heads"]
    d, eps, base = h // heads, config["layer_norm_epsilon"], float(config["rotary_emb_base"])
    lora = lora or {}

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        y = F.linear(x, state[f"{name}.weight"], state.get(f"{name}.bias"))
        if name in lora:
            a, b = lora[name]  # [r, in], [out, r]
            y = y + (x @ a.T @ b.T) * lora_scale
        return y

    def rms_norm(x: torch.Tensor, name: str) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * state[f"{name}.weight"]

    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return torch.cat((-x2, x1), dim=-1)

    x = F.embedding(input_ids, state["transformer.wte.weight"]) if inputs_embeds is None else inputs_embeds
    batch, length, _ = x.shape
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2).float() / d))
    freqs = torch.outer(torch.arange(length).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)[None, :, None, :]  # [1, T, 1, d]
    cos, sin = emb.cos(), emb.sin()
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    for i in range(config["num_hidden_layers"]):
        p = f"transformer.h.{i}."
        q, k, v = linear(rms_norm(x, p + "ln_1"), p + "attn.c_attn").split(h, dim=2)
        q, k, v = (t.view(batch, length, heads, d) for t in (q, k, v))
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        attn = torch.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, length, h)
        x = x + linear(attn, p + "attn.c_proj")
        y = rms_norm(x, p + "ln_2")
        x = x + linear(linear(y, p + "mlp.w1") * F.silu(linear(y, p + "mlp.w2")), p + "mlp.c_proj")
    return linear(rms_norm(x, "transformer.ln_f"), "lm_head")
