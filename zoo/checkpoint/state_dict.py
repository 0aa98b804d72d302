"""State dicts in zoo's canonical naming, and strict loading of saved tensors into a module.

Checkpoints and the Llava export name tensors as the plain module does: peft's ``base_model.model.``
and ``.base_layer`` indirections removed, LoRA tensors left to peft, a tied tensor kept once.
:func:`load_state_into` is the strict inverse: every key must be there, with the module's shape and dtype;
:func:`load_lora_state` is the same for a peft LoRA adapter (zoo checkpoints and converted VLM-learning ones).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from zoo.errors import CheckpointError, few

__all__ = ["canonical_name", "canonical_state", "is_lora_key", "load_lora_state", "load_state_into"]

_LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora_embedding_A.", ".lora_embedding_B.", ".lora_magnitude_vector.")


def canonical_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` without peft's wrapping, ready for safetensors (CPU, contiguous).

    LoRA tensors are left out (the adapter is saved by peft), ``base_layer`` and ``base_model.model``
    indirections are removed so that the names are those of the plain module, and a tensor tied to an
    earlier one (tied embeddings) is kept once.
    """
    state: dict[str, torch.Tensor] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, tensor in module.state_dict().items():
        if is_lora_key(name):
            continue
        view = _view_key(tensor)
        if view in seen:
            continue  # tied to a tensor already kept
        seen[view] = name
        value = tensor.detach().cpu()
        pointer = value.untyped_storage().data_ptr()
        value = value.clone() if pointer in storages else value.contiguous()
        storages.add(pointer)
        state[canonical_name(name)] = value
    return state


def canonical_name(name: str) -> str:
    """A state-dict key without peft's indirections (``base_model.model.``, ``.base_layer``)."""
    name = re.sub(r"(^|\.)base_model\.model\.", r"\1", name, count=1)
    return name.replace(".base_layer.", ".")


def is_lora_key(name: str) -> bool:
    return any(marker in f".{name}." for marker in _LORA_MARKERS)


def _view_key(tensor: torch.Tensor) -> tuple:
    if tensor.device.type == "meta":
        return (id(tensor),)
    return (
        tensor.device.type,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tuple(tensor.stride()),
        tensor.dtype,
    )


def load_state_into(
    module: nn.Module, tensors: Mapping[str, torch.Tensor], label: str, *, assign: bool = False
) -> None:
    """Copy ``tensors`` (canonical names, see :func:`canonical_state`) into ``module``, strictly.

    A key of the module is satisfied by itself or by a tensor tied to it; any missing, unexpected or
    mis-shaped key is a CheckpointError naming ``label`` and the keys. With ``assign`` the loaded tensors
    become the parameters (the module was built with parameters on ``meta``), and ties are restored.
    """
    targets: dict[str, torch.Tensor] = {}
    groups: dict[tuple, list[str]] = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if is_lora_key(name):
            continue
        key = canonical_name(name)
        targets[key] = tensor
        groups.setdefault(_view_key(tensor), []).append(key)
    unexpected = sorted(set(tensors) - set(targets))
    missing = sorted(key for members in groups.values() if not any(m in tensors for m in members) for key in members)
    if missing or unexpected:
        raise CheckpointError(
            f"{label}: the saved tensors do not fit the rebuilt module: missing {few(missing)}; "
            f"unexpected {few(unexpected)}"
        )
    wrong = [
        f"{k} (saved {tuple(v.shape)}, model {tuple(targets[k].shape)})"
        for k, v in tensors.items()
        if tuple(v.shape) != tuple(targets[k].shape)
    ]
    if wrong:
        raise CheckpointError(f"{label}: tensors of the wrong shape: {few(wrong)}")
    mistyped = [
        f"{k} (saved {str(v.dtype).removeprefix('torch.')}, model {str(targets[k].dtype).removeprefix('torch.')})"
        for k, v in tensors.items()
        if v.dtype != targets[k].dtype
    ]
    if mistyped:
        raise CheckpointError(f"{label}: tensors of the wrong dtype: {few(mistyped)}")
    if assign:
        _assign_state(module, tensors, [members for members in groups.values()])
        return
    with torch.no_grad():
        for name, value in tensors.items():
            targets[name].copy_(value)


def _assign_state(module: nn.Module, tensors: Mapping[str, torch.Tensor], tied: list[list[str]]) -> None:
    """Make the loaded tensors the module's parameters and buffers; members of a tie share one."""
    state = {}
    for members in tied:
        source = next(tensors[m] for m in members if m in tensors)
        state.update(dict.fromkeys(members, source))
    module.load_state_dict(state, strict=True, assign=True)
    for members in tied:
        first = members[0]
        if len(members) > 1 and first in dict(module.named_parameters()):
            shared = module.get_parameter(first)
            for other in members[1:]:
                owner, _, attr = other.rpartition(".")
                setattr(module.get_submodule(owner), attr, shared)


def load_lora_state(peft_model: nn.Module, tensors: Mapping[str, torch.Tensor], label: str, *, hint: str = "") -> None:
    """Load LoRA ``tensors`` (peft's adapter naming) into ``peft_model`` after checking that they fit exactly.

    Raises:
        CheckpointError: naming ``label`` and the missing, unexpected or mis-shaped tensors (``hint`` is appended
            to the first kind of message: what a mismatch probably means for this source).
    """
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    wanted = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    missing, unexpected = sorted(set(wanted) - set(tensors)), sorted(set(tensors) - set(wanted))
    if missing or unexpected:
        raise CheckpointError(
            f"{label}: the LoRA adapter does not fit the rebuilt LM: missing {few(missing)}; "
            f"unexpected {few(unexpected)}{hint}"
        )
    wrong = [
        f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in wanted.items() if v.shape != tensors[k].shape
    ]
    if wrong:
        raise CheckpointError(f"{label}: LoRA tensors of the wrong shape: {few(wrong)}")
    set_peft_model_state_dict(peft_model, {k: v.to(wanted[k].dtype) for k, v in tensors.items()})
