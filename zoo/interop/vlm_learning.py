"""Import checkpoints of the VLM-learning reference design (``MMultiModal``) into zoo.

The reference trains CLIP ViT-L/14 (last layer, CLS dropped) + a ``Linear-GELU-Linear`` projector
(``feature_proj``) + Qwen-7B (first-generation Qwen, remote code) with peft LoRA, and saves::

    SRC/
      adapter_config.json           peft LoRA settings (r, lora_alpha, lora_dropout, target_modules)
      adapter_model.safetensors     or adapter_model.bin: base_model.model.transformer.h.N.<module>.lora_{A,B}.weight
      other_params.bin              feature_proj's state dict: 0.weight, 0.bias, 2.weight, 2.bias (pickle)

:func:`from_vlm_learning` rebuilds that model as a zoo composition (``vlm-learning-qwen-7b`` by default)
with the LM read from the original Qwen-1 directory, then converts exactly:

- projector ``0.*`` / ``2.*`` -> ``mlp2x-gelu``'s ``linear_1.*`` / ``linear_2.*``;
- LoRA on Qwen-1 modules -> LoRA on their Qwen2 equivalents. The fused ``c_attn`` (q, k, v stacked by rows)
  becomes three adapters with the same ``A`` and ``B`` split by rows: ``[Bq; Bk; Bv] A x`` is
  ``(Bq A x, Bk A x, Bv A x)``, so the update is identical; ``w1`` -> ``up_proj``, ``w2`` -> ``gate_proj``,
  ``attn.c_proj`` -> ``o_proj``, ``mlp.c_proj`` -> ``down_proj``;
- r, alpha and dropout are kept (peft's scaling ``alpha / r`` is unchanged). Dropout draws one mask per
  adapter, so q/k/v see different masks in training; inference is unaffected.

Pickles are read only with ``torch.load(weights_only=True)``; any key, setting or object that has no exact
counterpart is a CheckpointError naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zoo.checkpoint.kinds import ADAPTER_CONFIG, OTHER_PARAMS, is_vlm_learning_dir, not_a_zoo_checkpoint_hint
from zoo.errors import CheckpointError, ZooError

if TYPE_CHECKING:
    from zoo.core.config import ModelConfig
    from zoo.core.multimodal import MultiModal

__all__ = [
    "ADAPTER_CONFIG",
    "DEFAULT_COMPOSITION",
    "OTHER_PARAMS",
    "convert_lora_state",
    "from_vlm_learning",
    "is_vlm_learning_dir",
    "not_a_zoo_checkpoint_hint",
]

DEFAULT_COMPOSITION = "vlm-learning-qwen-7b"
_ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PROJECTOR_KEYS = {"0.weight": "linear_1.weight", "0.bias": "linear_1.bias",
                  "2.weight": "linear_2.weight", "2.bias": "linear_2.bias"}  # fmt: skip
# Qwen-1 module inside a block -> its Qwen2 module(s); c_attn's B is split by rows in this order
MODULES = {
    "attn.c_attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attn.c_proj": ("self_attn.o_proj",),
    "mlp.w1": ("mlp.up_proj",),
    "mlp.w2": ("mlp.gate_proj",),
    "mlp.c_proj": ("mlp.down_proj",),
}
_LORA_KEY = re.compile(
    r"base_model\.model\.transformer\.h\.(?P<layer>\d+)\.(?P<module>attn\.c_attn|attn\.c_proj|mlp\.w1|mlp\.w2|mlp\.c_proj)"
    r"\.lora_(?P<part>[AB])(?:\.default)?\.weight"
)
# adapter_config.json settings with no exact zoo counterpart: only their neutral values convert
_UNSUPPORTED = ("bias", "use_rslora", "use_dora", "fan_in_fan_out", "modules_to_save", "rank_pattern", "alpha_pattern",
                "layers_to_transform", "layer_replication", "lora_bias")  # fmt: skip
_NEUTRAL: tuple[Any, ...] = (None, False, "none", [], {})


def from_vlm_learning(
    source: str | os.PathLike,
    lm_checkpoint: str | os.PathLike,
    *,
    model: str | os.PathLike | Mapping[str, Any] | ModelConfig = DEFAULT_COMPOSITION,
    vision_checkpoint: str | os.PathLike | None = None,
    dtype: str | None = None,
    plugins: Sequence[str] = (),
) -> MultiModal:
    """Rebuild a reference checkpoint as a zoo ``MultiModal`` (LoRA kept as a peft adapter).

    Args:
        source: the reference's output directory (see the module docstring).
        lm_checkpoint: the Qwen-1 directory the adapter was trained on (``model.lm.checkpoint``).
        model: the composition to build (default ``vlm-learning-qwen-7b``); its LM must be a Qwen-1 preset
            and its projector ``mlp2x-gelu``.
        vision_checkpoint: the CLIP directory (``model.vision.checkpoint``); without it the composition's
            own setting is used (random init if it has none).
        dtype: build in this dtype instead of the composition's.
        plugins: extra plugin modules to load.

    Example:
        >>> model = zoo.from_vlm_learning("output/", "Qwen-7B/", vision_checkpoint="clip-vit-large-patch14/")
        >>> zoo.save(model, "zoo-ckpt/")                       # loads with bases={"lm": ..., "vision": ...}
        >>> zoo.save(model, "zoo-ckpt/", self_contained=True)  # or: the bases inside, a plain zoo.load
    """
    from zoo.checkpoint.state_dict import load_state_into
    from zoo.core.builder import build
    from zoo.core.config import ModelConfig, load_model_config, parse_model_config, torch_dtype
    from zoo.sdk.foreign import confined_directory

    src = Path(source)
    if not src.is_dir():
        raise CheckpointError(f"VLM-learning checkpoint {str(src)!r}: no such directory")
    with confined_directory(src, what=f"VLM-learning checkpoint {str(src)!r}") as staged:  # nothing outside it
        _check_source(staged)
        settings = _read_adapter_config(staged / ADAPTER_CONFIG)
        converted, targets = convert_lora_state(_read_adapter(staged), where=str(staged))
        projector = _read_projector(staged / OTHER_PARAMS)
    base = (
        model
        if isinstance(model, ModelConfig)
        else load_model_config(model if isinstance(model, Mapping) else str(model))
    )
    data = base.to_dict()
    lm = data["model"]["lm"]
    lm.update(checkpoint=str(Path(lm_checkpoint).expanduser().resolve()), train="lora")
    lm["lora"] = {"r": settings["r"], "alpha": settings["alpha"], "dropout": settings["dropout"], "targets": targets}
    if vision_checkpoint is not None:
        data["model"]["vision"]["checkpoint"] = str(Path(vision_checkpoint).expanduser().resolve())
    if dtype is not None:
        data["model"]["dtype"] = str(torch_dtype(dtype, key="--dtype")).removeprefix("torch.")
    config = parse_model_config(data, source=f"{base.source} (from VLM-learning {str(src)!r})")
    result = build(config, plugins=plugins)
    if _fused_rows(converted) not in (0, 3 * result.lm.hidden_size):  # 0: no LoRA on c_attn
        raise CheckpointError(
            f"{str(src)!r}: the adapter's c_attn has {_fused_rows(converted)} rows but the LM "
            f"{config.lm.name!r} has hidden size {result.lm.hidden_size} (3 x {result.lm.hidden_size} expected)"
        )
    label = f"{str(src / OTHER_PARAMS)!r} -> projector {config.projector.name!r}"
    load_state_into(
        result.projector, {PROJECTOR_KEYS[k]: v.to(_dtype_of(result.projector)) for k, v in projector.items()}, label
    )
    _load_lora(result, converted, str(src))
    return result.eval()


def convert_lora_state(
    adapter: Mapping[str, torch.Tensor], *, where: str = "adapter"
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Qwen-1 LoRA tensors -> Qwen2 LoRA tensors (peft names, no adapter name) and the zoo target leaves.

    Raises:
        CheckpointError: a key that is not LoRA on a Qwen-1 block module, or an ``A`` without its ``B``.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = [key for key in adapter if not _LORA_KEY.fullmatch(key)]
    if unknown:
        raise CheckpointError(
            f"{where}: adapter tensors that are not LoRA on a Qwen-1 block (c_attn, c_proj, w1, w2): "
            f"{', '.join(sorted(unknown)[:4])}"
        )
    found = {_LORA_KEY.fullmatch(key): value for key, value in adapter.items()}
    pairs = {(m["layer"], m["module"]) for m in found if m is not None}
    for layer, module in sorted(pairs):
        parts = {
            m["part"]: v for m, v in found.items() if m is not None and (m["layer"], m["module"]) == (layer, module)
        }
        if set(parts) != {"A", "B"}:
            raise CheckpointError(f"{where}: transformer.h.{layer}.{module} has lora_{''.join(parts)} without its pair")
        names = MODULES[module]
        if len(parts["B"]) % len(names):
            raise CheckpointError(
                f"{where}: {module} lora_B has {len(parts['B'])} rows, not a multiple of {len(names)}"
            )
        pieces = parts["B"].split(len(parts["B"]) // len(names), dim=0)  # c_attn: [3H, r] -> 3 x [H, r]
        for name, piece in zip(names, pieces):
            prefix = f"base_model.model.model.layers.{layer}.{name}"
            out[f"{prefix}.lora_A.weight"] = parts["A"]  # [r, in], shared by q, k and v
            out[f"{prefix}.lora_B.weight"] = piece.contiguous()
    targets = sorted({name.rsplit(".", 1)[-1] for _, module in pairs for name in MODULES[module]})
    if not targets:
        raise CheckpointError(f"{where}: the adapter holds no LoRA tensors")
    return out, targets


# -- reading the reference's files -------------------------------------------------------------------
def _check_source(src: Path) -> None:
    if not src.is_dir():
        raise CheckpointError(f"VLM-learning checkpoint {str(src)!r}: no such directory")
    absent = [name for name in (ADAPTER_CONFIG, OTHER_PARAMS) if not (src / name).is_file()]
    if not any((src / name).is_file() for name in _ADAPTER_FILES):
        absent.append(" or ".join(_ADAPTER_FILES))
    if absent:
        raise CheckpointError(
            f"VLM-learning checkpoint {str(src)!r} lacks {', '.join(absent)} (expected the peft adapter directory "
            f"the reference saves, with {OTHER_PARAMS})"
        )


def _read_adapter_config(file: Path) -> dict[str, Any]:
    from zoo.sdk.foreign import read_json_file

    data = read_json_file(file, what="adapter config")
    if not isinstance(data, dict) or data.get("peft_type") != "LORA":
        raise CheckpointError(f"{str(file)!r}: peft_type = {data.get('peft_type')!r}; only LoRA adapters convert")
    for key in _UNSUPPORTED:
        if data.get(key) not in _NEUTRAL:
            raise CheckpointError(
                f"{str(file)!r}: {key} = {data.get(key)!r} has no exact zoo counterpart; cannot convert"
            )
    r, alpha, dropout = data.get("r"), data.get("lora_alpha"), data.get("lora_dropout", 0.0)
    if not isinstance(r, int) or r < 1:
        raise CheckpointError(f"{str(file)!r}: r = {r!r}: expected a positive integer")
    if not isinstance(alpha, int | float) or alpha <= 0 or float(alpha) != int(alpha):
        raise CheckpointError(f"{str(file)!r}: lora_alpha = {alpha!r}: expected a positive integer")
    if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise CheckpointError(f"{str(file)!r}: lora_dropout = {dropout!r}: expected a number in [0, 1)")
    return {"r": r, "alpha": int(alpha), "dropout": float(dropout)}


def _read_adapter(src: Path) -> dict[str, torch.Tensor]:
    from zoo.sdk.weights import load_state_dict_file

    file = next(src / name for name in _ADAPTER_FILES if (src / name).is_file())
    return _tensors_only(load_state_dict_file(file, key="adapter weights"), file)


def _read_projector(file: Path) -> dict[str, torch.Tensor]:
    from zoo.sdk.weights import load_state_dict_file

    state = _tensors_only(load_state_dict_file(file, key=OTHER_PARAMS), file)  # weights_only=True inside
    if set(state) != set(PROJECTOR_KEYS):
        extra, absent = sorted(set(state) - set(PROJECTOR_KEYS)), sorted(set(PROJECTOR_KEYS) - set(state))
        raise CheckpointError(
            f"{str(file)!r}: expected exactly the projector's {sorted(PROJECTOR_KEYS)} (feature_proj: Linear, GELU, "
            f"Linear); unexpected {extra or 'none'}, missing {absent or 'none'}"
        )
    return state


def _tensors_only(state: Mapping[str, Any], file: Path) -> dict[str, torch.Tensor]:
    other = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if other:
        raise CheckpointError(f"{str(file)!r}: entries that are not tensors: {', '.join(other[:4])}")
    return dict(state)


# -- building ----------------------------------------------------------------------------------------
def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _fused_rows(converted: Mapping[str, torch.Tensor]) -> int:
    rows = [v.shape[0] for k, v in converted.items() if ".self_attn.q_proj.lora_B." in k]
    return 3 * rows[0] if rows else 0


def _load_lora(model: MultiModal, converted: Mapping[str, torch.Tensor], where: str) -> None:
    from peft import PeftModel

    from zoo.checkpoint.state_dict import load_lora_state

    inner = model.lm.model
    if not isinstance(inner, PeftModel):
        raise ZooError(f"{where}: the rebuilt LM carries no LoRA adapter (model.lm.train is not 'lora')")
    load_lora_state(inner, converted, where, hint=" (the adapter covers other layers than the LM has?)")
