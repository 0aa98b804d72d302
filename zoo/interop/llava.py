"""Interop with transformers' ``LlavaForConditionalGeneration`` layout: import, in-memory export, save.

transformers' Llava is one particular composition: a CLIP or SigLIP vision model (``vision_config``),
the hidden state ``vision_feature_layer`` with ``vision_feature_select_strategy`` (``default`` drops
the first token, ``full`` keeps all), a ``Linear-GELU-Linear`` projector with biases, and any causal
LM (``text_config``); each image is ``image_seq_length`` copies of ``image_token_index`` in
``input_ids``, which ``get_placeholder_mask`` counts and fills with a masked scatter, exactly like
``MultiModal``. The correspondence is therefore one to one:

    ==============================  ===================================================
    transformers Llava              zoo
    ==============================  ===================================================
    vision_config (CLIP / SigLIP)   a registered ``transformers`` tower preset + ``arch``
    vision_feature_layer            ``model.vision.select_layer``
    strategy default / full         ``select: patch`` (CLIP) / ``select: all``
                                    (SigLIP has no CLS: ``full`` is ``patch``)
    gelu + projector bias           ``mlp2x-gelu``
    text_config                     a registered LM preset of that ``model_type`` + ``arch``
    image_token_index               ``MultiModal.image_token_id`` (must be equal)
    ==============================  ===================================================

Importing (:func:`from_hf_llava`) goes through the registry: for each slot it picks the registered
preset whose architecture is closest to the HF sub-config, overrides the fields that differ in
``arch`` (so the composition YAML stays short), checks on ``meta`` that the rebuilt architecture
equals the HF one field by field, builds once and copies the weights strictly. The result has no
``checkpoint:`` paths, so ``zoo.save(model, DIR)`` stores every weight. The directory's
``generation_config.json`` (read and checked by :mod:`zoo.sdk.generation_config`) gives the LM's generation
defaults; an export writes the LM's generation config as its ``generation_config.json``. Peak memory is the HF model plus the
zoo model (the HF one is dropped at the end).

Exporting (:func:`to_hf_llava`) builds the Llava skeleton on ``meta`` and attaches the zoo model's own
parameters (shared storage, no copy); LoRA adapters are merged into fresh tensors first, the zoo model
is not modified. Anything that does not fit the layout raises a ``ZooError`` naming the part.

LLaVA-NeXT (``LlavaNextForConditionalGeneration``, ``model_type: llava_next``) goes through the same
entry points: importing dispatches on ``config.json``'s ``model_type`` and adds
``model.vision.anyres`` (``image_grid_pinpoints``, newline) to the composition; exporting an any-res
composition writes the LLaVA-NeXT layout and its ``LlavaNextProcessor`` (:mod:`zoo.interop.llava_next`).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import nn

from zoo.core.prompt import with_stop_id
from zoo.errors import CheckpointError, ZooError, few
from zoo.sdk.generation_config import apply_generation_settings, read_generation_config
from zoo.sdk.limits import brief
from zoo.sdk.specs import SLOTS

if TYPE_CHECKING:
    from transformers import LlavaForConditionalGeneration, PreTrainedModel

    from zoo.core.multimodal import MultiModal
    from zoo.sdk.interfaces import Projector, VisionTower

__all__ = [
    "check_export_target",
    "from_hf_llava",
    "hf_llava_composition",
    "published_key",
    "published_state_dict",
    "save_hf_llava",
    "to_hf_llava",
]

_VISION_TYPES = {"clip_vision_model": "CLIPVisionModel", "siglip_vision_model": "SiglipVisionModel"}
_PREFIX_TOKENS = {"clip_vision_model": 1, "siglip_vision_model": 0}
# fields of every transformers config that say nothing about the architecture
_GENERIC_FIELDS = {
    "architectures", "dtype", "torch_dtype", "transformers_version", "id2label", "label2id",
    "output_attentions", "output_hidden_states", "return_dict", "problem_type", "chunk_size_feed_forward",
    "is_encoder_decoder", "model_type", "use_cache", "tie_encoder_decoder", "torchscript",
    "auto_map",  # remote code: transformers ignores it for a model type it ships, and zoo never runs it
}  # fmt: skip
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# work a causal LM does between its text model and its head, which LlavaForConditionalGeneration skips:
# (config field, the value that means "none" or a test that says "there is some", what it does)
_HEAD_TRANSFORMS: tuple[tuple[str, Any, str], ...] = (
    ("dim_model_base", lambda c, v: c.hidden_size != v, "divides hidden states by hidden_size / dim_model_base"),
    ("final_logit_softcapping", None, "soft-caps its logits"),
    ("logit_scale", 1.0, "scales its logits"),
    ("logits_scaling", 1.0, "divides its logits"),
)
# transformers 5 module path -> llava-hf checkpoint key (transformers 4.x module path), by prefix
_PUBLISHED_PREFIXES = (
    ("model.vision_tower.", "vision_tower.vision_model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.image_newline", "image_newline"),  # LLaVA-NeXT
)


# -- import -----------------------------------------------------------------------------------------
def from_hf_llava(directory: str | os.PathLike, device: str | torch.device | None = None, *, dtype: str | None = None):
    """Import a transformers ``LlavaForConditionalGeneration`` (or ``LlavaNextForConditionalGeneration``,
    by ``model_type``) directory as a ``MultiModal``.

    Args:
        directory: a ``save_pretrained`` directory (``config.json`` + safetensors, and the tokenizer).
        device: where to put the model (default CPU).
        dtype: override the checkpoint's dtype (``float32``, ``bfloat16``...).

    Returns:
        The model in eval mode, with the same weights, image token id and logits as the HF model.

    Example:
        >>> model = zoo.from_hf_llava("llava-1.5-7b-hf/")
        >>> zoo.save(model, "zoo-llava/")
    """
    from zoo.sdk.foreign import confined_directory

    source = Path(directory)
    with confined_directory(source, what=f"transformers Llava directory {str(source)!r}") as path:
        model = _import(source, path, dtype)
    if device is not None:
        model.to(device)
    return model


def _import(source: Path, path: Path, dtype: str | None) -> MultiModal:
    """:func:`from_hf_llava` of the directory ``source``, read through its confined staging ``path``."""
    from zoo.core.builder import build, plan
    from zoo.core.config import parse_model_config, torch_dtype
    from zoo.sdk.hf import loading_problems

    hf_config = _read_llava_config(path)
    vocab = getattr(hf_config.text_config, "vocab_size", None)
    generation = read_generation_config(path, vocab_size=vocab)  # its settings become the LM's defaults
    hf_class = _hf_class(hf_config.model_type)
    data = _composition(source, path, dtype=dtype, hf_config=hf_config)
    checked = plan(parse_model_config(data, source=f"{source / 'config.json'}"))
    _check_rebuilt_architecture(checked, hf_config, path)
    _check_image_processor(path, hf_config, checked.meta_modules["vision"], checked.config.vision.name)
    # components are built with parameters on meta and given the HF tensors: no random init, one copy
    empty = [kind for kind in SLOTS if checked.config.slot(kind).train != "lora"]
    model = build(checked, empty_weights=empty)
    try:  # either key layout: llava-hf's (transformers 4.x, vLLM) or transformers 5's module paths
        loaded = hf_class.from_pretrained(
            path,
            local_files_only=True,
            dtype=torch_dtype(checked.config.dtype),
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported below with the key names, not raised
        )
        hf, info = cast("tuple[LlavaForConditionalGeneration, dict[str, Any]]", loaded)
    except ZooError:
        raise
    except Exception as error:  # a truncated safetensors file, a refused pickle: anything, from a stranger's files
        from zoo.sdk.weights import describe_load_error

        raise CheckpointError(
            f"{path}: transformers cannot load it as {hf_class.__name__}: {describe_load_error(error)}"
        ) from error
    problems = loading_problems(info)
    if problems:  # transformers would only log them and leave those weights random
        raise CheckpointError(f"{path}: {problems}")
    with torch.no_grad():
        for part, zoo_module, hf_module in _parts(model, hf, lm_inner=model.lm.model):
            _copy_strict(hf_module, zoo_module, part, path)
        if model.anyres is not None:
            from zoo.interop.llava_next import copy_newline

            copy_newline(hf, model)
    causal = model.lm.model.get_base_model() if hasattr(model.lm.model, "get_base_model") else model.lm.model
    if getattr(causal.config, "tie_word_embeddings", False):  # assignment gave the head its own parameter
        causal.get_output_embeddings().weight = causal.get_input_embeddings().weight
    index = int(hf_config.image_token_index)
    if model.image_token_id != index:
        raise ZooError(
            f"{path}: image_token_index is {index} but the tokenizer gives {model.image_token!r} the id "
            f"{model.image_token_id}; save the processor (tokenizer with the image token) into {path}"
        )
    lm_generation = getattr(model.lm.model, "generation_config", None)
    if generation and lm_generation is not None:  # zoo's checked read, not transformers' (which keeps anything)
        apply_generation_settings(lm_generation, generation)
    del hf
    return model.eval()


def hf_llava_composition(
    directory: str | os.PathLike, *, dtype: str | None = None, hf_config: Any | None = None
) -> dict[str, Any]:
    """The zoo composition (YAML data) that reproduces a transformers Llava directory's architecture.

    Example:
        >>> hf_llava_composition("llava-1.5-7b-hf/")["model"]["vision"]["name"]
        'clip-vit-l-14-336'
    """
    from zoo.sdk.foreign import confined_directory

    source = Path(directory)
    with confined_directory(source, what=f"transformers Llava directory {str(source)!r}") as path:
        return _composition(source, path, dtype=dtype, hf_config=hf_config)


def _composition(source: Path, path: Path, *, dtype: str | None, hf_config: Any | None) -> dict[str, Any]:
    """:func:`hf_llava_composition` of ``source``, read through its confined staging ``path``."""
    from zoo.core.config import DTYPES
    from zoo.core.registry import get_registry

    config = hf_config if hf_config is not None else _read_llava_config(path)
    vision_config, text_config = config.vision_config, config.text_config
    where = f"{path / 'config.json'}"
    if vision_config.model_type not in _VISION_TYPES:
        raise ZooError(
            f"{where}: vision_config.model_type = {vision_config.model_type!r} is not supported; zoo imports Llava "
            f"checkpoints with a CLIP or SigLIP tower ({', '.join(repr(t) for t in _VISION_TYPES)})"
        )
    layer = config.vision_feature_layer
    if not isinstance(layer, int):
        raise ZooError(
            f"{where}: vision_feature_layer = {layer!r} concatenates several layers; zoo towers select one layer"
        )
    select = _select_from_strategy(config.vision_feature_select_strategy, vision_config.model_type, where)
    if config.projector_hidden_act != "gelu" or not config.multimodal_projector_bias:
        raise ZooError(
            f"{where}: projector_hidden_act = {config.projector_hidden_act!r}, multimodal_projector_bias = "
            f"{config.multimodal_projector_bias!r}: zoo's 'mlp2x-gelu' is Linear-GELU-Linear with biases "
            "(projector_hidden_act 'gelu', multimodal_projector_bias true)"
        )
    registry = get_registry()
    vision_name, vision_arch = _closest_preset(registry, "vision", vision_config)
    lm_name, lm_arch = _closest_preset(registry, "lm", text_config)
    raw_dtype = dtype or _dtype_name(getattr(config, "dtype", None)) or _dtype_name(text_config.dtype) or "float32"
    canonical = DTYPES.get(str(raw_dtype).lower())
    if canonical is None:
        raise ZooError(f"{where}: dtype {raw_dtype!r} is not one zoo builds in; valid: {sorted(set(DTYPES.values()))}")
    lm: dict[str, Any] = {"name": lm_name}
    if lm_arch:
        lm["arch"] = lm_arch
    image_token = "<image>"
    model: dict[str, Any] = {}
    if _has_tokenizer(path):
        lm["tokenizer"] = str(source.resolve())  # the LM reads it confined too (zoo.sdk.foreign)
        image_token = _image_token(path, int(config.image_token_index), where)
    else:  # weights only: no tokenizer but the checkpoint's own; the config names the image token's id
        lm["tiny_tokenizer"] = False
        model["image_token_id"] = int(config.image_token_index)
    vision: dict[str, Any] = {"name": vision_name, "select_layer": layer, "select": select}
    if vision_arch:
        vision["arch"] = vision_arch
    if config.model_type == "llava_next":  # any-resolution tiling with LLaVA-NeXT's row newline
        from zoo.interop.llava_next import next_composition

        vision["anyres"] = next_composition(config, path / "config.json", select)
    return {
        "model": {
            "vision": vision,
            "projector": {"name": "mlp2x-gelu"},
            "lm": lm,
            "dtype": canonical,
            "image_token": image_token,
            **model,
        }
    }


def _read_llava_config(path: Path) -> Any:
    from transformers import LlavaConfig, LlavaNextConfig

    file = path / "config.json"
    if not file.is_file():
        raise CheckpointError(
            f"{path}: no config.json; expected a transformers LlavaForConditionalGeneration directory"
        )
    from zoo.sdk.foreign import read_json_file

    raw = read_json_file(file, what="Llava config")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file}: cannot read it: not a JSON object")
    model_type = raw.get("model_type")
    config_class: Any = {"llava": LlavaConfig, "llava_next": LlavaNextConfig}.get(str(model_type))
    if config_class is None:
        raise CheckpointError(
            f"{file}: model_type is {model_type!r}, not 'llava' or 'llava_next'; zoo imports "
            "LlavaForConditionalGeneration and LlavaNextForConditionalGeneration checkpoints (OneVision and "
            "video layouts are not supported)"
        )
    _check_sub_config_types(raw, file)
    _check_sizes(raw, file)
    try:
        return config_class.from_pretrained(path, local_files_only=True)
    except Exception as error:  # a hostile config.json makes transformers raise anything
        text = " ".join(str(error).split())
        raise CheckpointError(
            f"{file}: transformers cannot read it as a {config_class.__name__} (text_config.model_type "
            f"{_sub_type(raw, 'text_config')!r}, vision_config.model_type {_sub_type(raw, 'vision_config')!r}): "
            f"{text if len(text) <= 300 else text[:300] + '...'}"
        ) from error


def _check_sizes(raw: Mapping[str, Any], file: Path) -> None:
    """Sizes of the sub-configs and the any-res pinpoints, bounded before transformers builds a config of them."""
    from zoo.sdk.limits import MAX_PINPOINTS, InputLimitError, check_arch_sizes

    check_arch_sizes(dict(raw), str(file))
    pinpoints = raw.get("image_grid_pinpoints")
    if isinstance(pinpoints, list | tuple) and len(pinpoints) > MAX_PINPOINTS:
        raise InputLimitError(
            f"{file}: image_grid_pinpoints lists {len(pinpoints):,} resolutions; at most {MAX_PINPOINTS} are accepted"
        )


def _sub_type(raw: Mapping[str, Any], key: str) -> Any:
    sub = raw.get(key)
    return sub.get("model_type") if isinstance(sub, Mapping) else None


def _check_sub_config_types(raw: Mapping[str, Any], file: Path) -> None:
    """Sub-configs must name model types transformers ships: zoo never runs code a checkpoint names."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    from zoo.errors import suggest

    for key in ("text_config", "vision_config"):
        model_type = _sub_type(raw, key)
        if model_type is not None and model_type not in CONFIG_MAPPING_NAMES:
            word = str(model_type)[:100]
            raise CheckpointError(
                f"{file}: {key}.model_type = {brief(model_type)} is not a model type transformers ships; zoo reads "
                f"only those and never runs code a checkpoint names; {suggest(word, list(CONFIG_MAPPING_NAMES))}"
            )


def _hf_class(model_type: str) -> type[LlavaForConditionalGeneration]:
    """transformers' model class of a Llava ``model_type``."""
    from transformers import LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

    # LLaVA-NeXT has Llava's parts (vision_tower, multi_modal_projector, language_model, lm_head) and more
    if model_type == "llava_next":
        return cast("type[LlavaForConditionalGeneration]", LlavaNextForConditionalGeneration)
    return LlavaForConditionalGeneration


def _select_from_strategy(strategy: str, vision_type: str, where: str) -> str:
    if strategy == "full":
        return "all" if _PREFIX_TOKENS[vision_type] else "patch"
    if strategy == "default":
        if _PREFIX_TOKENS[vision_type] == 1:
            return "patch"
        raise ZooError(
            f"{where}: vision_feature_select_strategy = 'default' drops the first token, but a SigLIP tower has no "
            "CLS token: transformers would drop a real patch, which zoo does not reproduce; such a checkpoint "
            "should use 'full'"
        )
    raise ZooError(f"{where}: vision_feature_select_strategy = {strategy!r} is not 'default' or 'full'")


def _arch_fields(config: Any) -> dict[str, Any]:
    """A transformers config as plain data, without fields that say nothing about the architecture."""
    data = json.loads(json.dumps(config.to_dict(), default=str))
    return {k: v for k, v in data.items() if k not in _GENERIC_FIELDS and not k.startswith("_")}


def _closest_preset(registry: Any, kind: str, hf_config: Any) -> tuple[str, dict[str, Any]]:
    """The registered preset of ``kind`` closest to ``hf_config`` and the ``arch`` fields to override.

    Candidates are the registered ``transformers`` specs with an ``arch``, ranked by how many fields
    differ; the first whose meta-built module has the HF config's model type (and so the same classes)
    wins. Nothing but configs is read.
    """
    from transformers.utils import logging as hf_logging

    from zoo.core.builder import build_component

    target = _arch_fields(hf_config)
    config_cls = type(hf_config)
    ranked = []
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # other families' presets make odd configs of this class: no warnings
    try:
        for spec in registry.list(kind):
            arch = spec.defaults.get("arch")
            if spec.pattern or spec.source != "transformers" or not isinstance(arch, Mapping):
                continue
            if arch.get("model_type") not in (None, hf_config.model_type):
                continue
            try:
                base = _arch_fields(config_cls(**{k: v for k, v in arch.items() if k != "model_type"}))
            except (TypeError, ValueError):
                continue
            override = {k: v for k, v in target.items() if base.get(k) != v}
            ranked.append((len(override), spec.name, override))
    finally:
        hf_logging.set_verbosity(verbosity)
    for _, name, override in sorted(ranked, key=lambda item: (item[0], item[1])):
        options = {"arch": override} if override else {}
        try:
            module = build_component(kind, name, options, meta=True)
        except ZooError:
            continue
        if getattr(getattr(getattr(module, "model", None), "config", None), "model_type", None) == hf_config.model_type:
            return name, override
    what = "vision tower" if kind == "vision" else "language model"
    raise ZooError(
        f"no registered {what} builds transformers model_type {hf_config.model_type!r} from an arch; "
        f"register a preset for it (see 'zoo list {kind}')"
    )


def _check_rebuilt_architecture(checked: Any, hf_config: Any, path: Path) -> None:
    pairs = (
        ("vision", checked.meta_modules["vision"].model.config, hf_config.vision_config),
        ("lm", checked.meta_modules["lm"].model.config, hf_config.text_config),
    )
    for kind, rebuilt, wanted in pairs:
        ours, theirs = _arch_fields(rebuilt), _arch_fields(wanted)
        differing = sorted(k for k in theirs if ours.get(k) != theirs[k])
        if differing:
            shown = ", ".join(f"{k} ({ours.get(k)!r} vs {theirs[k]!r})" for k in differing[:4])
            raise ZooError(
                f"{path}: the zoo {kind} preset {checked.config.slot(kind).name!r} cannot reproduce the Llava "
                f"{'vision_config' if kind == 'vision' else 'text_config'}: {shown}"
            )


def _check_image_processor(path: Path, hf_config: Any, tower: Any, name: str) -> None:
    """The directory's image processor settings must be the ones zoo processes images with.

    transformers' processor counts tokens with its own ``image_grid_pinpoints`` and normalises with its
    own ``image_mean`` / ``image_std``; zoo uses the model's pinpoints and the tower's normalisation. A
    directory where they differ was trained (or would run in transformers) on other inputs.
    """
    for file, settings in _image_processor_settings(path):
        pairs = (("image_mean", tower.preprocessor.mean), ("image_std", tower.preprocessor.std))
        for field, ours in pairs:
            theirs = settings.get(field)
            if theirs is None:
                continue
            fits = isinstance(theirs, list) and len(theirs) == len(ours)
            if not fits or any(not isinstance(t, int | float) or abs(t - o) > 1e-4 for t, o in zip(theirs, ours)):
                raise CheckpointError(
                    f"{file}: {field} = {brief(theirs)} but vision tower {name!r} normalises with {list(ours)}; "
                    "zoo would feed the model other pixels than its processor does (no zoo tower preset has that "
                    "normalisation)"
                )
        theirs = settings.get("image_grid_pinpoints")
        if hf_config.model_type == "llava_next" and theirs is not None:
            ours = [list(p) for p in hf_config.image_grid_pinpoints]
            if theirs != ours:
                raise CheckpointError(
                    f"{file}: image_grid_pinpoints = {brief(theirs)} but config.json has {brief(ours)}; the processor "
                    "would count other image tokens than the model stitches (transformers fails on it too): make them equal"
                )


def _image_processor_settings(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(file, settings)`` of the image processor saved in ``path``: either layout transformers writes."""
    found = []
    for name, nested in (("preprocessor_config.json", False), ("processor_config.json", True)):
        file = path / name
        if not file.is_file():
            continue
        from zoo.sdk.foreign import read_json_file

        data = read_json_file(file, what="image processor config")
        settings = data.get("image_processor") if nested and isinstance(data, dict) else data
        if isinstance(settings, dict):
            found.append((file, settings))
    return found


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in _TOKENIZER_FILES)


def _image_token(path: Path, index: int, where: str) -> str:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except ZooError:
        raise
    except Exception as error:  # a malformed tokenizer.json makes the tokenizers library raise anything
        from zoo.sdk.weights import describe_load_error

        raise CheckpointError(f"{path}: cannot load its tokenizer: {describe_load_error(error)}") from error
    token = tokenizer.convert_ids_to_tokens(index) if 0 <= index < len(tokenizer) else None
    if not token:
        raise ZooError(
            f"{where}: image_token_index = {index} is not a token of the tokenizer in {path} "
            f"({len(tokenizer)} tokens); save the processor with its image token into the directory"
        )
    return cast(str, token)  # one id in, one token out


def _dtype_name(value: Any) -> str | None:
    if value is None:
        return None
    return str(value).replace("torch.", "")


# -- export -----------------------------------------------------------------------------------------
def to_hf_llava(model: MultiModal) -> LlavaForConditionalGeneration:
    """A transformers ``LlavaForConditionalGeneration`` computing the same function as ``model``.

    The returned model shares its parameters with ``model`` (the same ``nn.Parameter`` objects, no
    copy; LoRA-adapted weights are merged into new tensors instead). Moving or casting one therefore
    moves the other; use ``copy.deepcopy`` for an independent copy.

    Raises:
        ZooError: a part without a Llava layout (a timm / open_clip / DINOv2 tower, an interpolated
            image size, a projector other than ``mlp2x-gelu``, a non-transformers or remote-code LM,
            an LM with an embedding scale, no image token).

    Example:
        >>> hf = zoo.interop.llava.to_hf_llava(model).eval()
    """
    from transformers import LlavaConfig, LlavaNextConfig

    names = {kind: model.composition.slot(kind).name for kind in SLOTS}
    if any(p.device.type == "meta" for p in model.parameters()):
        raise ZooError("the model lives on the meta device (built with meta=True); build it for real to export it")
    vision_model, strategy = _exportable_vision(model.vision, names["vision"])
    _check_projector(_inner_projector(model), names["projector"])
    causal_lm = _exportable_lm(model, names["lm"])
    fields: dict[str, Any] = {
        "vision_config": copy.deepcopy(vision_model.config),
        "text_config": copy.deepcopy(causal_lm.config),
        "image_token_index": int(cast(int, model.image_token_id)),  # not None: _exportable_lm checked it
        "image_seq_length": int(model.contract.image_tokens),
        "projector_hidden_act": "gelu",
        "vision_feature_select_strategy": strategy,
        "vision_feature_layer": int(model.vision.select_layer),
        "multimodal_projector_bias": True,
        "tie_word_embeddings": bool(getattr(causal_lm.config, "tie_word_embeddings", False)),
    }
    if model.anyres is not None:
        from zoo.interop.llava_next import anyres_fields

        fields.update(anyres_fields(model, names))
    config: Any = (LlavaNextConfig if model.anyres is not None else LlavaConfig)(**fields)
    config.dtype = str(model.dtype).replace("torch.", "")
    with torch.device("meta"):
        hf = _hf_class(config.model_type)(config)
    for part, zoo_module, hf_module in _parts(model, hf, lm_inner=model.lm.model):
        _attach(hf_module, _named_tensors(zoo_module, merge_lora=True), part, names)
    if model.anyres is not None:
        hf.model.image_newline = model.projector.image_newline  # shared, like every other parameter
    leftover = [n for n, t in [*hf.named_parameters(), *hf.named_buffers()] if t.device.type == "meta"]
    if leftover:
        raise ZooError(f"internal error: the exported Llava has tensors without values: {leftover[:4]}")
    generation = getattr(causal_lm, "generation_config", None)
    if generation is not None:
        hf.generation_config = copy.deepcopy(generation)
        tokenizer = model.lm._tokenizer
        if getattr(model, "end_token", None) is not None and tokenizer is not None:  # trained to end answers there
            stops = hf.generation_config.eos_token_id
            end_id = tokenizer.convert_tokens_to_ids(model.end_token)
            hf.generation_config.eos_token_id = with_stop_id(
                stops if stops is not None else tokenizer.eos_token_id, end_id
            )
    return hf.train(model.training)


def save_hf_llava(model: MultiModal, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``model`` as a transformers Llava directory: weights, config, tokenizer and processor.

    An any-res composition (``model.vision.anyres``) is written as ``LlavaNextForConditionalGeneration``
    with a ``LlavaNextProcessor``.

    ``LlavaForConditionalGeneration.from_pretrained(directory)`` and ``LlavaProcessor.from_pretrained
    (directory)`` read it back; the processor expands each image token to the same number of ids as
    ``model.processor()``. The write is atomic (temporary sibling, then swap) and owner-aware: it
    replaces only an export zoo wrote (it leaves a ``.zoo-output.json`` marker) and keeps files there
    that zoo did not write; ``overwrite`` also writes into another directory, keeping its files.

    Example:
        >>> zoo.interop.llava.save_hf_llava(zoo.build("tiny-clip-mlp-qwen2"), "out/llava-tiny")
    """
    from zoo.checkpoint.atomic import atomic_directory, mark_output, marked_files

    hf = to_hf_llava(model)
    target = Path(directory)
    owned = marked_files(_EXPORT_KIND)
    with atomic_directory(target, owned_files=owned, what=_EXPORT_KIND, overwrite=overwrite) as tmp:
        # our keys, written as given: transformers 5 would write its own module paths (no ``vision_model.``)
        hf.save_pretrained(str(tmp), state_dict=published_state_dict(hf), save_original_format=False)
        processor = _llava_processor(model, hf.config)
        if processor is not None:
            processor.save_pretrained(str(tmp))
        elif model.lm.has_tokenizer:
            model.lm.tokenizer.save_pretrained(str(tmp))
        mark_output(tmp, _EXPORT_KIND)
    return target


def published_key(name: str) -> str:
    """The llava-hf checkpoint key of a transformers 5 ``LlavaForConditionalGeneration`` state-dict key.

    The published checkpoints (``llava-hf/*``) were written by transformers 4.x, whose modules nest the
    vision model one level deeper and the text model under the causal LM; vLLM, SGLang and transformers
    4.x read exactly that layout, and transformers 5 maps it back onto its own modules when loading
    (its ``llava`` and ``CLIPVisionModel`` checkpoint conversion mappings).

    Example:
        >>> published_key("model.vision_tower.encoder.layers.0.mlp.fc1.weight")
        'vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight'
    """
    for ours, published in _PUBLISHED_PREFIXES:
        if name.startswith(ours):
            return published + name[len(ours) :]
    raise ZooError(f"internal error: {name!r} is not a key of transformers' LlavaForConditionalGeneration")


def published_state_dict(hf: LlavaForConditionalGeneration) -> dict[str, torch.Tensor]:
    """``hf``'s weights under their llava-hf keys (:func:`published_key`); a tied LM head is left out."""
    tied = bool(getattr(hf.config.get_text_config(), "tie_word_embeddings", False))
    return {
        published_key(name): tensor
        for name, tensor in hf.state_dict().items()
        if not (tied and name == "lm_head.weight")
    }


_EXPORT_KIND = "transformers Llava directory"


def check_export_target(directory: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Refuse, before a model is loaded or built, a directory :func:`save_hf_llava` would refuse."""
    from zoo.checkpoint.atomic import check_target, marked_files

    check_target(directory, owned_files=marked_files(_EXPORT_KIND), what=_EXPORT_KIND, overwrite=overwrite)


def _llava_processor(model: MultiModal, config: Any) -> Any | None:
    """A ``LlavaProcessor`` (``LlavaNextProcessor`` for any-res) with the tower's image processing and the LM
    tokenizer (None if unavailable)."""
    import transformers

    tower = model.vision
    processor_class = getattr(tower, "processor_class", "")
    processor_kwargs = getattr(tower, "processor_kwargs", None)
    strategy = config.vision_feature_select_strategy
    if not model.lm.has_tokenizer or not processor_class or processor_kwargs is None:
        return None
    if model.anyres is not None:
        from zoo.interop.llava_next import next_processor

        return next_processor(model, config, processor_kwargs(tower.image_size))
    image_processor = getattr(transformers, processor_class)(**processor_kwargs(tower.image_size))
    tokenizer = model.lm.tokenizer
    return transformers.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=tower.patch_size,
        vision_feature_select_strategy=strategy,
        image_token=model.image_token,
        num_additional_image_tokens=tower.num_prefix_tokens,
        chat_template=getattr(tokenizer, "chat_template", None),
    )


def _exportable_vision(tower: VisionTower, name: str) -> tuple[PreTrainedModel, Literal["default", "full"]]:
    inner = getattr(tower, "model", None)
    model_type = getattr(getattr(inner, "config", None), "model_type", None)
    if inner is None or model_type not in _VISION_TYPES or type(inner).__name__ != _VISION_TYPES[model_type]:
        raise ZooError(
            f"model.vision = {name!r} ({type(tower).__name__}, source {getattr(tower, 'source', '?')!r}) does not fit "
            "the transformers Llava layout: LlavaForConditionalGeneration hosts a transformers CLIPVisionModel or "
            "SiglipVisionModel; timm, open_clip and DINOv2 towers cannot be exported"
        )
    if tower.image_size != inner.config.image_size:
        raise ZooError(
            f"model.vision.image_size = {tower.image_size} interpolates the position embeddings of {name!r} "
            f"(trained at {inner.config.image_size}); transformers' Llava does not interpolate: remove the override"
        )
    if tower.num_prefix_tokens != _PREFIX_TOKENS[model_type]:
        raise ZooError(f"model.vision = {name!r} declares {tower.num_prefix_tokens} prefix tokens; Llava expects "
                       f"{_PREFIX_TOKENS[model_type]} for {model_type!r}")  # fmt: skip
    if tower.num_prefix_tokens == 0:
        return inner, "full"
    return inner, "default" if tower.select == "patch" else "full"


def _check_projector(projector: Projector, name: str) -> None:
    keys = set(projector.state_dict())
    act = getattr(projector, "act", None)
    linear_1, linear_2 = getattr(projector, "linear_1", None), getattr(projector, "linear_2", None)
    fits = (
        keys == {"linear_1.weight", "linear_1.bias", "linear_2.weight", "linear_2.bias"}
        and isinstance(linear_1, nn.Linear)
        and isinstance(linear_2, nn.Linear)
        and isinstance(act, nn.GELU)
        and act.approximate == "none"
        and projector.num_output_tokens(7) == 7
    )
    if not fits:
        raise ZooError(
            f"model.projector = {name!r} ({type(projector).__name__}) does not fit the transformers Llava layout: "
            "LlavaMultiModalProjector is Linear-GELU-Linear with biases, token-wise (zoo 'mlp2x-gelu'); resamplers, "
            "Perceivers, pixel-shuffle, identity, linear and deeper MLPs have no Llava equivalent"
        )


def _exportable_lm(model: MultiModal, name: str) -> PreTrainedModel:
    from transformers import PreTrainedModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    lm = model.lm
    causal = lm.model.get_base_model() if hasattr(lm.model, "get_base_model") else lm.model
    model_type = getattr(getattr(causal, "config", None), "model_type", None)
    if not isinstance(causal, PreTrainedModel) or model_type not in MODEL_MAPPING_NAMES:
        raise ZooError(
            f"model.lm = {name!r} ({type(causal).__name__}, model_type {model_type!r}) does not fit the transformers "
            "Llava layout: its text model must be built into transformers (AutoModel.from_config); "
            "remote-code models cannot be exported"
        )
    if causal.base_model is causal or causal.get_output_embeddings() is None:
        raise ZooError(f"model.lm = {name!r} ({type(causal).__name__}) is not a causal LM with a base model and a head")
    if lm.embed_scale != 1.0:
        raise ZooError(
            f"model.lm = {name!r} scales its token embeddings by {lm.embed_scale} outside the embedding layer; "
            "transformers' Llava passes unscaled embeddings to the text model, so the export would differ"
        )
    config = causal.config
    for field, neutral, what in _HEAD_TRANSFORMS:
        value = getattr(config, field, None)
        if value is not None and (neutral(config, value) if callable(neutral) else value != neutral):
            raise ZooError(
                f"model.lm = {name!r} ({type(causal).__name__}) {what} ({field} = {value!r}); transformers' "
                "Llava applies its LM head to the text model's hidden states directly, so the export would differ"
            )
    if model.image_token_id is None:
        raise ZooError(
            f"model.lm = {name!r} has no tokenizer, so the model has no image token id for image_token_index; "
            "set model.lm.checkpoint or model.lm.tokenizer"
        )
    return causal


# -- weight plumbing ---------------------------------------------------------------------------------
def _parts(
    model: MultiModal, hf: LlavaForConditionalGeneration, *, lm_inner: Any
) -> list[tuple[str, nn.Module, nn.Module]]:
    """``(part, zoo module, HF module)`` pairs with identical parameter names (after peft unwrapping)."""
    causal = lm_inner.get_base_model() if hasattr(lm_inner, "get_base_model") else lm_inner
    return [
        ("vision tower", model.vision.model, hf.model.vision_tower),
        ("projector", _inner_projector(model), hf.model.multi_modal_projector),
        ("language model", causal.base_model, hf.model.language_model),
        ("LM head", causal.get_output_embeddings(), hf.lm_head),
    ]


def _inner_projector(model: MultiModal) -> Any:
    """The projector without any-res's newline holder (``zoo.core.anyres_projector``)."""
    return model.projector.inner if model.anyres is not None else model.projector


def _named_tensors(module: nn.Module, *, merge_lora: bool) -> dict[str, torch.Tensor]:
    """Parameters and buffers (persistent or not) by canonical name, LoRA deltas merged into new tensors."""
    from zoo.checkpoint.state_dict import canonical_name, is_lora_key

    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in [
        *module.named_parameters(remove_duplicate=False),
        *module.named_buffers(remove_duplicate=False),
    ]:
        if not is_lora_key(name):
            tensors[canonical_name(name)] = tensor
    if merge_lora:
        tensors.update(_merged_lora_weights(module))
    return tensors


def _merged_lora_weights(module: nn.Module) -> dict[str, nn.Parameter]:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return {}
    from zoo.checkpoint.state_dict import canonical_name

    merged = {}
    for name, layer in module.named_modules():
        if not isinstance(layer, LoraLayer) or layer.disable_adapters:
            continue
        adapters = [a for a in layer.active_adapters if a in layer.lora_A and a not in layer.merged_adapters]
        if any(layer.use_dora.get(a, False) for a in adapters):
            raise ZooError(f"LoRA layer {name!r} uses DoRA, which the Llava export does not merge")
        if not adapters:
            continue
        base = cast(torch.Tensor, layer.get_base_layer().weight)
        with torch.no_grad():
            # get_delta_weight is defined by LoraLayer's concrete subclasses (Linear, Embedding, Conv...)
            delta = cast(torch.Tensor, sum(layer.get_delta_weight(a) for a in adapters))  # type: ignore[attr-defined]
            weight = base + delta.to(base.dtype)
        merged[canonical_name(f"{name}.weight")] = nn.Parameter(weight, requires_grad=False)
    return merged


def _attach(hf_module: nn.Module, tensors: Mapping[str, torch.Tensor], part: str, names: Mapping[str, str]) -> None:
    """Point every parameter and buffer of the meta-built ``hf_module`` at the zoo tensor of that name."""
    wanted = {n for n, _ in hf_module.named_parameters(remove_duplicate=False)}
    wanted |= {n for n, _ in hf_module.named_buffers(remove_duplicate=False)}
    missing, unexpected = sorted(wanted - set(tensors)), sorted(set(tensors) - wanted)
    if missing or unexpected:
        raise ZooError(
            f"the {part} of {names} does not map onto transformers' Llava: HF names without a zoo tensor "
            f"{few(missing)}; zoo tensors without an HF name {few(unexpected)}"
        )
    for name in sorted(wanted):
        owner_path, _, leaf = name.rpartition(".")
        owner = hf_module.get_submodule(owner_path) if owner_path else hf_module
        value = tensors[name]
        expected = owner._parameters.get(leaf) if leaf in owner._parameters else owner._buffers.get(leaf)
        if expected is not None and tuple(expected.shape) != tuple(value.shape):
            raise ZooError(
                f"the {part}: {name} has shape {tuple(value.shape)} in zoo and {tuple(expected.shape)} in Llava"
            )
        if leaf in owner._parameters:
            setattr(owner, leaf, value if isinstance(value, nn.Parameter) else nn.Parameter(value, requires_grad=False))
        else:
            setattr(owner, leaf, value)


def _copy_strict(source: nn.Module, target: nn.Module, part: str, path: Path) -> None:
    """Copy the HF ``source`` state into the zoo ``target``; the key sets must be equal."""
    theirs, ours = source.state_dict(), target.state_dict()
    missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the {part} weights do not fit the rebuilt zoo module: missing {few(missing)}; "
            f"unexpected {few(unexpected)}"
        )
    for key, value in theirs.items():
        if ours[key].shape != value.shape:
            raise CheckpointError(
                f"{path}: the {part} weight {key} has shape {tuple(value.shape)}, zoo expects {tuple(ours[key].shape)}"
            )
    if any(tensor.is_meta for tensor in ours.values()):  # built with empty parameters: take the HF tensors
        target.load_state_dict(theirs, strict=True, assign=True)
        return
    for key, value in theirs.items():
        ours[key].copy_(value)
