"""The one factory behind every transformers causal-LM family (Qwen2/2.5/3, MiniCPM3, Llama, any local dir).

No checkpoint: ``AutoModelForCausalLM.from_config`` of the family's config class with the preset ``arch``
(random init, on the current default device, ``meta`` included). A checkpoint: a local directory in
transformers' layout, loaded with ``from_pretrained(local_files_only=True)``; on ``meta`` only its
``config.json`` is read. Its ``generation_config.json`` is read by :mod:`zoo.sdk.generation_config` (checked,
known fields only) and gives the LM's generation defaults. Code shipped inside a checkpoint runs only with
``model.lm.trust_remote_code: true``.

Public (plugins build their LMs with it through :func:`zoo.sdk.hf.lm_spec`); it imports torch, so
:mod:`zoo.sdk.hf` imports it only when a model is built.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from torch import nn

from zoo.errors import CheckpointError, ConfigError, ZooError
from zoo.sdk.foreign import read_json_file, unstage_name
from zoo.sdk.generation_config import apply_generation_settings, check_generation_settings, read_generation_config
from zoo.sdk.hf_config import (
    Family,
    check_arch_fields,
    lm_directories,
    loading_problems,
    make_hf_config,
    tiny_tokenizer_path,
)
from zoo.sdk.interfaces import LanguageModel
from zoo.sdk.limits import check_arch_sizes
from zoo.sdk.specs import LanguageModelConfig
from zoo.sdk.weights import building_on_meta, describe_load_error, torch_dtype_of

__all__ = ["build_language_model", "infer_lora_targets"]

KEY = "model.lm"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_STRUCTURE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")


def build_language_model(
    config: LanguageModelConfig, *, name: str, family: Family, requires_checkpoint: bool = False
) -> LanguageModel:
    """Build the LM of preset ``name`` from ``config`` (see the module docstring).

    The checkpoint and tokenizer directories are read confined (:mod:`zoo.sdk.foreign`): nothing outside them.
    """
    with contextlib.ExitStack() as stack:
        checkpoint, tokenizer = lm_directories(config, stack, key=KEY)
        return _build(config, name, family, requires_checkpoint, checkpoint, tokenizer)


def _build(
    config: LanguageModelConfig,
    name: str,
    family: Family,
    requires_checkpoint: bool,
    checkpoint: Path | None,
    tokenizer: Path | None,
) -> LanguageModel:
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch_dtype_of(config.dtype)}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    trust = config.trust_remote_code
    config_cls = getattr(transformers, family.config_class) if family.config_class else None
    if config_cls is not None:  # a misspelt key would otherwise be stored as an attribute and ignored
        check_arch_fields(config_cls, config.arch, f"{KEY}.arch")
    generation: dict[str, Any] = {}
    if checkpoint is not None:
        _check_checkpoint_config(checkpoint, config, name, family)
        where = f"{KEY}.checkpoint = {config.checkpoint!r}"
        generation = read_generation_config(checkpoint, where=where)
        try:
            if building_on_meta():  # config.json only: never a weight file on meta
                hf_config = AutoConfig.from_pretrained(checkpoint, local_files_only=True, trust_remote_code=trust)
                model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=trust, **kwargs)
            else:
                loaded: Any = AutoModelForCausalLM.from_pretrained(
                    checkpoint,
                    local_files_only=True,
                    trust_remote_code=trust,
                    output_loading_info=True,
                    ignore_mismatched_sizes=True,  # reported below with the key names, not raised
                    **kwargs,
                )
                model, info = loaded  # (model, loading info) with output_loading_info
                problems = loading_problems(info)
                if problems:  # transformers only logs them and initialises those weights at random
                    raise CheckpointError(f"{where}: {problems}")
        except (ZooError, MemoryError):
            raise
        except Exception as error:  # SafetensorError, a refused pickle, a malformed config: a stranger's files
            raise CheckpointError(f"{where}: transformers cannot load it: {describe_load_error(error)}") from error
    elif requires_checkpoint or config_cls is None:
        raise ConfigError(
            f"{KEY}.checkpoint is required for {name!r}: set it to a local directory in transformers layout "
            "(config.json + *.safetensors, as written by save_pretrained)"
        )
    else:
        model = AutoModelForCausalLM.from_config(make_hf_config(config_cls, config.arch, f"{KEY}.arch"), **kwargs)
    if checkpoint is not None:
        _use_generation_config(model, generation, f"{KEY}.checkpoint = {config.checkpoint!r}")
    if checkpoint is not None and config.checkpoint is not None:  # peft records it: the user's path, not the staging
        unstage_name(model, checkpoint, Path(config.checkpoint).expanduser())
    layer_class = _decoder_layer_class(model, family.decoder_layer)
    targets = config.lora_targets or family.lora_targets or infer_lora_targets(model, layer_class)
    return LanguageModel(
        model,
        _load_tokenizer(config, checkpoint, tokenizer, name),
        lora_targets=targets,
        decoder_layer_class=layer_class,
        embed_scale=_embed_scale(model),
        name=name,
    )


def _use_generation_config(model: Any, settings: dict[str, Any], where: str) -> None:
    """The checkpoint's ``generation_config.json`` as zoo read and checked it (transformers keeps any value and
    any key), over the defaults of the model's config: the LM's generation defaults."""
    from transformers import GenerationConfig

    if settings:
        vocab = getattr(model.config, "vocab_size", None)
        settings = check_generation_settings(settings, f"{where}: generation_config.json", vocab_size=vocab)
        model.generation_config = GenerationConfig.from_model_config(model.config)
        apply_generation_settings(model.generation_config, settings)


def _check_checkpoint_config(directory: Path, config: LanguageModelConfig, name: str, family: Family) -> None:
    """Refuse checkpoint code without opt-in, and a checkpoint of another family or size than the preset."""
    from transformers import CONFIG_MAPPING, __version__

    data = read_json_file(directory / "config.json", what=f"{KEY}.checkpoint config")
    if not isinstance(data, dict):
        raise CheckpointError(f"{KEY}.checkpoint = {str(directory)!r}: config.json is not a JSON object")
    check_arch_sizes(data, str(directory / "config.json"))  # before transformers builds anything of it
    model_type = data.get("model_type")
    if model_type not in CONFIG_MAPPING and not config.trust_remote_code:
        if "auto_map" in data:
            raise ConfigError(
                f"{KEY}.checkpoint = {str(directory)!r} needs the modeling code shipped inside it (config.json has "
                f"an auto_map and model_type {model_type!r} is not built into transformers {__version__}); zoo "
                f"runs such code only if you set `{KEY}.trust_remote_code: true` (read its .py files first)"
            )
        raise CheckpointError(
            f"{KEY}.checkpoint = {str(directory)!r}: model_type {model_type!r} is not known to transformers "
            f"{__version__} and the checkpoint ships no code (no auto_map in config.json)"
        )
    if family.model_types and model_type not in family.model_types:
        raise ConfigError(
            f"{KEY}.checkpoint = {str(directory)!r} holds a {model_type!r} model, but {name!r} expects "
            f"{' or '.join(repr(t) for t in family.model_types)}; pick the matching preset or use name: hf-causal-lm"
        )
    for field in _STRUCTURE:
        if field in config.arch and field in data and config.arch[field] != data[field]:
            raise ConfigError(
                f"{KEY}.checkpoint = {str(directory)!r} has {field} = {data[field]}, but {name!r} has "
                f"{field} = {config.arch[field]}; pick the preset of that size or use name: hf-causal-lm"
            )


def _load_tokenizer(
    config: LanguageModelConfig, checkpoint: Path | None, tokenizer: Path | None, name: str
) -> Any | None:
    """``model.lm.tokenizer``, else the checkpoint's, else the shipped tiny one for ``tiny-*`` (unless
    ``tiny_tokenizer: false``), else ``None``; ``checkpoint`` and ``tokenizer`` are confined stagings."""
    from transformers import AutoTokenizer

    original: str | None = None  # the user's directory behind a staging
    if tokenizer is not None:
        source, key, original = tokenizer, f"{KEY}.tokenizer", config.tokenizer
    elif checkpoint is not None and any((checkpoint / f).is_file() for f in _TOKENIZER_FILES):
        source, key, original = checkpoint, f"{KEY}.checkpoint", config.checkpoint
    elif name.startswith("tiny-") and config.tiny_tokenizer:
        source, key = tiny_tokenizer_path(), "the shipped tiny tokenizer"
    else:
        return None
    try:
        loaded = AutoTokenizer.from_pretrained(
            str(source), local_files_only=True, trust_remote_code=config.trust_remote_code
        )
    except ZooError:
        raise
    except Exception as error:  # a malformed tokenizer.json makes the tokenizers library raise anything
        raise CheckpointError(
            f"{key} = {str(source)!r}: cannot load a tokenizer from it: {describe_load_error(error)}"
        ) from error
    return loaded if original is None else unstage_name(loaded, source, Path(original).expanduser())


def _decoder_layer_class(model: nn.Module, wanted: str | None) -> type[nn.Module] | None:
    names = [n for n in (wanted, *(getattr(model, "_no_split_modules", None) or ())) if n]
    found = {type(m).__name__: type(m) for m in model.modules() if type(m).__name__ in names}
    return next((found[n] for n in names if n in found), None)


def infer_lora_targets(model: nn.Module, layer_class: type[nn.Module] | None) -> tuple[str, ...]:
    """Leaf names of every ``nn.Linear`` inside the decoder layers (``q_proj``, ``down_proj``...)."""
    if layer_class is None:
        return ()
    names = {
        child_name.rsplit(".", 1)[-1]
        for layer in model.modules()
        if isinstance(layer, layer_class)
        for child_name, child in layer.named_modules()
        if isinstance(child, nn.Linear)
    }
    return tuple(sorted(names))


def _embed_scale(model: Any) -> float:
    """The embedding scale the model applies on its ``input_ids`` path but not to ``inputs_embeds``.

    MiniCPM's remote code multiplies ``embed_tokens(ids)`` by ``config.scale_emb`` in its forward; native
    transformers MiniCPM3 does it inside its embedding module (which has ``embed_scale``), so nothing is left.
    """
    scale = getattr(model.config, "scale_emb", None)
    if scale is None or hasattr(model.get_input_embeddings(), "embed_scale"):
        return 1.0
    return float(scale)
