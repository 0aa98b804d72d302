"""The factory of the Qwen-1 presets: a ``Qwen2ForCausalLM`` from a preset or from a Qwen-1 checkpoint dir.

No checkpoint: random init from the preset's ``arch`` (``Qwen2Config`` fields). A checkpoint: a Qwen-1
directory as published (``config.json`` with ``model_type: qwen``, weight shards, ``qwen.tiktoken``, and
``generation_config.json``, whose settings become the LM's generation defaults); the
architecture comes from its ``config.json`` (through :func:`._qwen1_config.qwen2_arch`, checked against the
preset's sizes), the model is built with parameters on ``meta`` and given the renamed checkpoint tensors
(no random init, no second copy), and the tokenizer is converted from ``qwen.tiktoken``. The checkpoint's
own Python code is never imported. On ``meta`` only ``config.json`` and the vocabulary are read.

Private module: imports torch and transformers.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from zoo.errors import CheckpointError, ConfigError
from zoo.sdk import (
    LLAMA_LORA_TARGETS,
    LanguageModel,
    LanguageModelConfig,
    apply_generation_settings,
    building_on_meta,
    check_arch_fields,
    check_arch_sizes,
    lm_directories,
    make_hf_config,
    read_generation_config,
    read_json_file,
    tiny_tokenizer_path,
    torch_dtype_of,
)

from ._qwen1_config import QWEN1_MODEL_TYPE, STRUCTURE, qwen2_arch
from ._qwen1_tokenizer import ENDOFTEXT, IM_END, TIKTOKEN_FILE, load_qwen1_tokenizer
from ._qwen1_weights import qwen2_state_dict, read_qwen1_state

__all__ = ["build_qwen1", "read_qwen1_config"]

KEY = "model.lm"


def build_qwen1(config: LanguageModelConfig, *, name: str) -> LanguageModel:
    """Build preset ``name`` (see the module docstring); its directories are read confined (``zoo.sdk.foreign``)."""
    with contextlib.ExitStack() as stack:
        directory, tokenizer = lm_directories(config, stack, key=KEY, example="Qwen/Qwen-7B", layout="a Qwen-1")
        return _build(config, name, directory, tokenizer)


def _build(config: LanguageModelConfig, name: str, directory: Path | None, tokenizer_dir: Path | None) -> LanguageModel:
    from transformers import AutoModelForCausalLM, Qwen2Config

    family = config.arch.get("model_type", QWEN1_MODEL_TYPE)
    if family != QWEN1_MODEL_TYPE:
        raise ConfigError(f"{KEY}.arch.model_type = {family!r}: the Qwen-1 presets are model_type {QWEN1_MODEL_TYPE!r}")
    preset = {k: v for k, v in config.arch.items() if k != "model_type"}  # the rest are Qwen2Config fields
    check_arch_fields(Qwen2Config, preset, f"{KEY}.arch")
    dtype = torch_dtype_of(config.dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    arch = dict(preset)
    if directory is not None:
        arch = _checkpoint_arch(directory, preset, name)
    tokenizer = _load_tokenizer(config, directory, tokenizer_dir, name)
    if directory is not None and tokenizer is not None:
        arch["bos_token_id"] = arch["eos_token_id"] = arch["pad_token_id"] = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    hf_config = make_hf_config(Qwen2Config, arch, f"{KEY}.arch")
    if directory is None or building_on_meta():
        model = AutoModelForCausalLM.from_config(hf_config, **kwargs)
    else:
        model = _load_weights(AutoModelForCausalLM, hf_config, kwargs, directory, dtype)
    settings = {}
    if directory is not None:  # the directory's generation_config.json: the defaults of every generate
        where = f"{KEY}.checkpoint = {str(directory)!r}"
        settings = read_generation_config(directory, where=where, vocab_size=hf_config.vocab_size)
    if "eos_token_id" not in settings and tokenizer is not None and IM_END in tokenizer.get_vocab():
        # no generation config naming its eos: Qwen-1 stops at <|endoftext|> and, in ChatML, at <|im_end|>
        # (its chat() adds it as a stop word)
        eos = tokenizer.convert_tokens_to_ids([ENDOFTEXT, IM_END]) if directory else [hf_config.eos_token_id]
        model.generation_config.eos_token_id = eos
        model.generation_config.pad_token_id = eos[0]
    if settings:  # as the reference generates: the generation config's eos only, its sampling settings
        eos = settings.get("eos_token_id", model.generation_config.eos_token_id)
        first = eos[0] if isinstance(eos, list) else eos
        apply_generation_settings(model.generation_config, {"pad_token_id": first, **settings})
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    return LanguageModel(
        model,
        tokenizer,
        lora_targets=config.lora_targets or LLAMA_LORA_TARGETS,
        decoder_layer_class=Qwen2DecoderLayer,
        name=name,
    )


def read_qwen1_config(directory: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a Qwen-1 checkpoint directory."""
    data = read_json_file(directory / "config.json", what=f"{KEY}.checkpoint config")
    if not isinstance(data, dict):
        raise CheckpointError(f"{KEY}.checkpoint = {str(directory)!r}: config.json is not a JSON object")
    check_arch_sizes(data, str(directory / "config.json"))
    return data


def _checkpoint_arch(directory: Path, preset: dict[str, Any], name: str) -> dict[str, Any]:
    """``Qwen2Config`` fields from the checkpoint's ``config.json``, which must fit the preset's sizes."""
    data = read_qwen1_config(directory)
    where = f"{KEY}.checkpoint = {str(directory)!r}"
    if data.get("model_type") != QWEN1_MODEL_TYPE:
        hint = "; for Qwen2/2.5 use the qwen2-* presets" if str(data.get("model_type")).startswith("qwen") else ""
        raise ConfigError(
            f"{where} holds a {data.get('model_type')!r} model, but {name!r} expects first-generation Qwen "
            f"(model_type {QWEN1_MODEL_TYPE!r}){hint}"
        )
    arch = qwen2_arch(data, where)
    for field in STRUCTURE:
        if field in preset and preset[field] != arch[field]:
            mine = "intermediate_size (one SwiGLU half)" if field == "intermediate_size" else field
            raise ConfigError(
                f"{where} has {mine} = {arch[field]}, but {name!r} has {preset[field]}; pick the Qwen-1 preset of "
                "that size (zoo list lm 'qwen-*')"
            )
    return arch


def _load_weights(
    auto: Any, hf_config: Any, kwargs: dict[str, Any], directory: Path, dtype: torch.dtype
) -> torch.nn.Module:
    """Build with parameters on ``meta`` and assign the renamed checkpoint tensors (cast to ``dtype``)."""
    where = f"{KEY}.checkpoint = {str(directory)!r}"
    state = qwen2_state_dict(
        read_qwen1_state(directory),
        num_layers=hf_config.num_hidden_layers,
        hidden_size=hf_config.hidden_size,
        rope_base=float(hf_config.rope_parameters["rope_theta"]),
        tied=bool(hf_config.tie_word_embeddings),
        where=where,
    )
    with torch.device("meta"):
        model = auto.from_config(hf_config, **kwargs)
    expected = model.state_dict()
    wrong = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(f"{where}: tensors of the wrong shape for config.json: {', '.join(wrong[:4])}")
    if hf_config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    if hf_config.tie_word_embeddings:
        model.tie_weights()
    # non-persistent buffers (the rotary inverse frequencies) were created on meta: compute them for real
    rotary = model.model.rotary_emb
    model.model.rotary_emb = type(rotary)(config=hf_config)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if leftover:
        raise CheckpointError(f"{where}: no value for {', '.join(leftover[:4])} after loading")
    return model


def _load_tokenizer(
    config: LanguageModelConfig, directory: Path | None, tokenizer_dir: Path | None, name: str
) -> Any | None:
    """``model.lm.tokenizer``, else the checkpoint's ``qwen.tiktoken``, else the tiny one for ``tiny-*``
    (``directory`` and ``tokenizer_dir``: confined stagings)."""
    from transformers import AutoTokenizer

    if tokenizer_dir is not None:
        source = tokenizer_dir
        if (source / TIKTOKEN_FILE).is_file():
            return load_qwen1_tokenizer(source)
        where = f"{KEY}.tokenizer = {config.tokenizer!r}"
    elif directory is not None:
        return load_qwen1_tokenizer(directory)
    elif name.startswith("tiny-"):
        source, where = tiny_tokenizer_path(), "the shipped tiny tokenizer"
    else:
        return None
    try:  # a saved fast tokenizer (tokenizer.json): never code from the directory
        return AutoTokenizer.from_pretrained(str(source), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{where}: cannot load a tokenizer from it: {error}") from error
