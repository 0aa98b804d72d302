"""Qwen-1 checkpoint tensors -> transformers ``Qwen2ForCausalLM`` names, one to one, every key accounted for.

Qwen-1 (``QWenLMHeadModel``)                    Qwen2 (``Qwen2ForCausalLM``)
``transformer.wte.weight``                      ``model.embed_tokens.weight``
``transformer.h.N.ln_1.weight``                 ``model.layers.N.input_layernorm.weight``
``transformer.h.N.attn.c_attn.{weight,bias}``   ``model.layers.N.self_attn.{q,k,v}_proj.{weight,bias}``
                                                (rows split in three: q, k, v, as Qwen-1's ``split``)
``transformer.h.N.attn.c_proj.weight``          ``model.layers.N.self_attn.o_proj.weight``
``transformer.h.N.ln_2.weight``                 ``model.layers.N.post_attention_layernorm.weight``
``transformer.h.N.mlp.w1.weight``               ``model.layers.N.mlp.up_proj.weight``
``transformer.h.N.mlp.w2.weight``               ``model.layers.N.mlp.gate_proj.weight``
``transformer.h.N.mlp.c_proj.weight``           ``model.layers.N.mlp.down_proj.weight``
``transformer.ln_f.weight``                     ``model.norm.weight``
``lm_head.weight``                              ``lm_head.weight``

The MLP is ``c_proj(w1(x) * silu(w2(x)))``: ``w2`` is the gate, ``w1`` the up projection. A
``transformer.rotary_emb.inv_freq`` buffer (old exports persisted it) is checked against the config's
``rotary_emb_base`` rather than ignored. Any other key, or a missing one, is an error naming them.

Private module: imports torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from zoo.errors import CheckpointError, few
from zoo.sdk import load_state_dict_file

__all__ = ["LAYER_RENAMES", "qwen2_state_dict", "read_qwen1_state", "split_qkv", "weight_files"]

# Qwen-1 module path inside a block -> Qwen2 module path (c_attn is split, see split_qkv)
LAYER_RENAMES = {
    "ln_1": "input_layernorm",
    "ln_2": "post_attention_layernorm",
    "attn.c_proj": "self_attn.o_proj",
    "mlp.w1": "mlp.up_proj",
    "mlp.w2": "mlp.gate_proj",
    "mlp.c_proj": "mlp.down_proj",
}
QKV = ("q_proj", "k_proj", "v_proj")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_INV_FREQ = re.compile(r"(transformer\.)?(h\.\d+\.attn\.)?rotary_emb\.inv_freq")


def weight_files(directory: Path) -> list[Path]:
    """The weight shards of a checkpoint directory: an index's files, else every safetensors, else ``.bin``."""
    for index_name in _INDEXES:
        index = directory / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                names = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
                raise CheckpointError(f"{str(index)!r}: not a weight index ({error})") from error
            if any(Path(name).name != name for name in names):
                raise CheckpointError(f"{str(index)!r} names files outside its directory: {names[:3]}")
            return [directory / name for name in names]
    for pattern in ("*.safetensors", "pytorch_model*.bin"):
        found = sorted(directory.glob(pattern))
        if found:
            return found
    raise CheckpointError(
        f"{str(directory)!r} holds no weights (expected model*.safetensors, or legacy pytorch_model*.bin)"
    )


def read_qwen1_state(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint's shards (legacy ``.bin`` read with ``weights_only=True``)."""
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(directory):
        part = load_state_dict_file(file, key="model.lm.checkpoint")
        repeated = sorted(set(part) & set(state))
        if repeated:
            raise CheckpointError(f"{str(file)!r} repeats tensors of another shard: {repeated[:3]}")
        state.update(part)
    return state


def split_qkv(fused: torch.Tensor, hidden_size: int, what: str) -> tuple[torch.Tensor, ...]:
    """Split a fused ``c_attn`` tensor ``[3 * H, ...]`` into q, k, v ``[H, ...]`` (Qwen-1's output order)."""
    if fused.shape[0] != 3 * hidden_size:
        raise CheckpointError(f"{what} has shape {tuple(fused.shape)}; expected {3 * hidden_size} rows (q, k, v)")
    return tuple(fused.split(hidden_size, dim=0))  # 3 x [H, ...]


def qwen2_state_dict(
    qwen1: Mapping[str, torch.Tensor], *, num_layers: int, hidden_size: int, rope_base: float, tied: bool, where: str
) -> dict[str, torch.Tensor]:
    """Rename (and split) a Qwen-1 state dict onto ``Qwen2ForCausalLM``; every key must be used.

    Raises:
        CheckpointError: naming the missing Qwen-1 keys and the unused ones.
    """
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []

    def take(key: str) -> torch.Tensor | None:
        if key not in qwen1:
            missing.append(key)
            return None
        used.add(key)
        return qwen1[key]

    def put(name: str, key: str) -> None:
        value = take(key)
        if value is not None:
            out[name] = value

    put("model.embed_tokens.weight", "transformer.wte.weight")
    put("model.norm.weight", "transformer.ln_f.weight")
    for i in range(num_layers):
        old, new = f"transformer.h.{i}.", f"model.layers.{i}."
        for part, renamed in LAYER_RENAMES.items():
            put(f"{new}{renamed}.weight", f"{old}{part}.weight")
        for suffix in ("weight", "bias"):
            fused = take(f"{old}attn.c_attn.{suffix}")  # [3H, H] / [3H]
            if fused is not None:
                pieces = split_qkv(fused, hidden_size, f"{where}: {old}attn.c_attn.{suffix}")
                for name, piece in zip(QKV, pieces):
                    out[f"{new}self_attn.{name}.{suffix}"] = piece  # [H, H] / [H]
    if tied:  # the head is the embedding: a saved copy must be that copy
        head = qwen1.get("lm_head.weight")
        if head is not None:
            used.add("lm_head.weight")
            if not torch.equal(head, qwen1.get("transformer.wte.weight", head)):
                raise CheckpointError(f"{where}: tie_word_embeddings is true but lm_head.weight differs from wte")
    else:
        put("lm_head.weight", "lm_head.weight")
    _check_inv_freq(qwen1, used, rope_base, where)
    unused = sorted(set(qwen1) - used)
    if missing or unused:
        raise CheckpointError(
            f"{where}: the checkpoint does not match a {num_layers}-layer Qwen-1: missing {few(missing)}; "
            f"unused {few(unused)}"
        )
    return out


def _check_inv_freq(qwen1: Mapping[str, torch.Tensor], used: set[str], rope_base: float, where: str) -> None:
    for key, value in qwen1.items():
        if not _INV_FREQ.fullmatch(key):
            continue
        dim = 2 * value.numel()
        expected = 1.0 / (rope_base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        if not torch.allclose(value.double().flatten(), expected, rtol=1e-3):
            raise CheckpointError(f"{where}: {key} does not match rotary_emb_base = {rope_base} of config.json")
        used.add(key)
