"""Self-describing checkpoints: a directory with ``manifest.json`` plus safetensors per component.

Layout (every name below is listed in the manifest; loading reads the manifest, never guesses)::

    ckpt/
      manifest.json                 format, versions, the composition, each component's spec, config,
                                    contract, training policy and where its weights are
      vision.safetensors            a component's state dict (when it is saved, see below)
      projector.safetensors         always: the projector is always trained
      lm.safetensors                or lm.added_rows.safetensors (rows of added tokens only)
      lm_adapter/                   peft's own adapter directory (adapter_model.safetensors,
                                    adapter_config.json) when the LM is trained with LoRA
      tokenizer/                    the LM tokenizer with the image token added

Which weights are saved:

- everything trained: the projector (always), a component with ``train: full`` in full, the LoRA
  adapter of a ``train: lora`` LM through ``PeftModel.save_pretrained``;
- every component whose weights came from nowhere reproducible (no ``checkpoint:``, i.e. random init
  such as the ``tiny-*`` presets), so that loading reproduces the same logits;
- a frozen component built from a ``checkpoint:`` path is *referenced*: the manifest records the
  absolute path and a fingerprint (file names and sizes), and loading rebuilds it from there. This keeps
  a LoRA checkpoint of a 7B model at adapter + projector size, like the reference design. If the LM's
  vocabulary grew (the image token was added past the checkpoint's embedding rows), the new rows are
  saved in ``lm.added_rows.safetensors``. A component built from a ``checkpoint:`` path reads its
  architecture (``config.json``) from that path at load time even when its weights are saved (trained
  in full), so such paths must stay where they were; a missing one is a clear error at load.

Loading rebuilds the composition through :func:`zoo.builder.plan` (a ``meta`` pass that reads no
weight) and checks the stored component configs and contract against it, then builds for real exactly
once and loads the saved tensors strictly (a missing or unexpected key is an error naming the
component). No pickle is involved anywhere: tensors are safetensors, metadata is JSON.

Saving is atomic: everything is written into a temporary sibling directory and fsynced, then swapped
with the old directory (``renameat2(RENAME_EXCHANGE)`` on Linux, else rename-aside), so a crash at any
point leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from zoo.atomic import atomic_directory
from zoo.errors import CheckpointError, PluginError, UnknownNameError, ZooError

if TYPE_CHECKING:
    from peft import LoraConfig

    from zoo.interfaces import LanguageModel
    from zoo.multimodal import MultiModal

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "canonical_state",
    "load",
    "load_state_into",
    "load_weights",
    "read_manifest",
    "save",
]

FORMAT = "zoo.checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
ADAPTER_DIR = "lm_adapter"
SLOTS = ("vision", "projector", "lm")
_PATH_OPTIONS = ("checkpoint", "tokenizer")
_LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora_embedding_A.", ".lora_embedding_B.", ".lora_magnitude_vector.")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


# -- saving -----------------------------------------------------------------------------------------
def save(model: MultiModal, directory: str | os.PathLike) -> Path:
    """Save ``model`` (a ``MultiModal``) as a self-describing checkpoint directory, atomically.

    Args:
        model: the composed model.
        directory: where to write; an existing zoo checkpoint there is replaced only once the new one
            is complete. Any other non-empty directory is refused.

    Returns:
        The checkpoint directory.

    Example:
        >>> zoo.checkpoint.save(model, "runs/ckpt")          # or model.save("runs/ckpt")
        >>> same = zoo.load("runs/ckpt")
    """
    from zoo.builder import plan

    target = Path(directory)
    checked = plan(model.composition)  # specs, plugins and the LM's vocabulary before tokens were added (meta)
    config_data = _absolute_paths(model.composition.to_dict())
    components: dict[str, Any] = {}
    with atomic_directory(target, replaceable=_is_checkpoint, what="zoo checkpoint") as tmp:
        for kind in SLOTS:
            components[kind] = _save_component(model, kind, checked, tmp)
        tokenizer = _save_tokenizer(model, tmp)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "zoo_version": _zoo_version(),
            "versions": _versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": config_data,
            "dtype": model.composition.dtype,
            "image_token": model.image_token,
            "image_token_id": model.image_token_id,
            "tokens_per_image": model.tokens_per_image,
            "contract": _jsonable(model.contract.to_dict()),
            "components": components,
            "tokenizer": tokenizer,
            "files": {},
        }
        manifest["files"] = {
            str(path.relative_to(tmp)): path.stat().st_size for path in sorted(tmp.rglob("*")) if path.is_file()
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return target


def _save_component(model: MultiModal, kind: str, checked: Any, tmp: Path) -> dict[str, Any]:
    module = getattr(model, kind)
    spec = checked.specs[kind]
    config = model.component_configs.get(kind, checked.configs[kind])
    choice = model.composition.slot(kind)
    checkpoint = getattr(config, "checkpoint", None)
    params = list(module.parameters())
    record: dict[str, Any] = {
        "name": choice.name,
        "spec": spec.name,
        "plugin": spec.plugin,
        "source": spec.source,
        "class": f"{type(module).__module__}.{type(module).__qualname__}",
        "config": _absolute_paths_in_config(_jsonable(dataclasses.asdict(config))),
        "contract": _jsonable(module.contract()) if hasattr(module, "contract") else {},
        "train": choice.train,
        "params": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }
    lora = kind == "lm" and choice.train == "lora"
    if kind == "projector" or choice.train == "full" or checkpoint is None:
        reason = "trained" if kind == "projector" or choice.train == "full" else "random init (no checkpoint)"
        file = f"{kind}.safetensors"
        tensors = canonical_state(module)
        _write_safetensors(tensors, tmp / file)
        record["weights"] = {"mode": "saved", "file": file, "tensors": len(tensors), "why": reason}
    else:
        path = Path(checkpoint).expanduser().resolve()
        record["weights"] = {"mode": "referenced", "checkpoint": str(path), "fingerprint": _fingerprint(path)}
        if kind == "lm":
            record["added_rows"] = _save_added_rows(module, checked.meta_modules["lm"].vocab_size, tmp)
    if lora:
        record["lora"] = _save_adapter(module, tmp)
    return record


def _save_added_rows(lm: LanguageModel, base_vocab: int, tmp: Path) -> dict[str, Any] | None:
    """Embedding rows past the checkpoint's vocabulary (tokens zoo added), input and output side."""
    if lm.vocab_size <= base_vocab:
        return None
    file = "lm.added_rows.safetensors"
    inner = lm.model
    tensors = {"input_embeddings": inner.get_input_embeddings().weight[base_vocab:].detach().clone()}
    output = inner.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != inner.get_input_embeddings().weight.data_ptr():
        tensors["output_embeddings"] = output.weight[base_vocab:].detach().clone()
    _write_safetensors(tensors, tmp / file)
    return {"file": file, "from": base_vocab, "to": lm.vocab_size}


def _save_adapter(lm: LanguageModel, tmp: Path) -> dict[str, Any]:
    from peft import PeftModel

    if not isinstance(lm.model, PeftModel):
        raise CheckpointError("the language model is configured with train: lora but holds no peft adapter")
    lm.model.save_pretrained(str(tmp / ADAPTER_DIR), safe_serialization=True, save_embedding_layers=False)
    adapter = cast("LoraConfig", lm.model.peft_config["default"])  # zoo's adapters are LoRA (zoo.training)
    return {
        "dir": ADAPTER_DIR,
        "r": adapter.r,
        "alpha": adapter.lora_alpha,
        "dropout": adapter.lora_dropout,
        "targets": sorted(cast("set[str]", adapter.target_modules)),  # peft keeps zoo's list as a set
    }


def _save_tokenizer(model: MultiModal, tmp: Path) -> dict[str, Any]:
    if not model.lm.has_tokenizer:
        return {"saved": False}
    tokenizer = model.lm.tokenizer
    tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
    return {"saved": True, "dir": TOKENIZER_DIR, "size": len(tokenizer)}


def _write_safetensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(dict(tensors), str(path), metadata={"format": "pt", "writer": FORMAT})


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
        if _is_lora_key(name):
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


def _is_lora_key(name: str) -> bool:
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


# -- loading ----------------------------------------------------------------------------------------
def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a checkpoint directory, with clear errors when it is not one."""
    path = Path(directory)
    if not path.exists():
        leftover = _interrupted_swap(path)
        hint = (
            f"; an interrupted save left the previous checkpoint at {str(leftover)!r}: rename it back to {path.name!r}"
            if leftover
            else ""
        )
        raise CheckpointError(f"checkpoint {str(path)!r}: no such directory{hint}")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a file; a zoo checkpoint is a directory with {MANIFEST}")
    file = path / MANIFEST
    if not file.is_file():
        hint = ""
        if (path / "config.json").is_file():
            hint = (
                " (it has a config.json: if it is a transformers LlavaForConditionalGeneration directory, import it "
                "with zoo.from_hf_llava(DIR) or 'zoo convert --from-hf-llava DIR OUT')"
            )
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no {MANIFEST}: it is not a zoo checkpoint (save one with model.save(DIR) "
            f"or 'zoo build ... --save DIR'){hint}"
        )
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{file}: cannot read the manifest: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f'{file}: not a zoo checkpoint manifest (expected "format": {FORMAT!r})')
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{file}: format_version {version!r} is newer than this zoo reads ({FORMAT_VERSION}); "
            f"it was written by zoo {manifest.get('zoo_version')!r}: upgrade zoo"
        )
    for key in ("model", "components", "contract"):
        if not isinstance(manifest.get(key), dict):
            raise CheckpointError(f"{file}: the manifest has no {key!r} section")
    for kind in SLOTS:
        if not isinstance(manifest["components"].get(kind), dict):
            raise CheckpointError(f"{file}: the manifest describes no {kind!r} component")
    return manifest


def load(directory: str | os.PathLike, device: str | torch.device | None = None) -> MultiModal:
    """Load a checkpoint written by :func:`save`; the model comes back in eval mode.

    The composition is rebuilt through the registry from the manifest (plugins it names are loaded),
    the stored component configs and contract are checked against the rebuilt plan, each component is
    built once, and the saved tensors are loaded strictly.

    Args:
        directory: the checkpoint directory.
        device: where to put the model (default CPU).

    Raises:
        CheckpointError: no manifest, a component whose plugin is not loaded, a changed contract or
            config, a missing referenced path, missing / unexpected / mis-shaped tensors.

    Example:
        >>> model = zoo.load("runs/ckpt")
    """
    from zoo.builder import build, plan
    from zoo.config import parse_model_config

    path = Path(directory)
    manifest = read_manifest(path)
    where = f"checkpoint {str(path)!r}"
    _check_files(path, manifest, where)
    _check_references(manifest, where)
    data = _config_for_load(manifest, path)
    try:
        config = parse_model_config(data, source=f"{path / MANIFEST}")
    except ZooError as error:
        raise CheckpointError(f"{where}: the manifest's model section is not a valid composition: {error}") from error
    _check_plugins(config, manifest, where)
    try:
        checked = plan(config)
    except ZooError as error:
        raise CheckpointError(f"{where}: the stored composition no longer builds: {error}") from error
    _check_plan(checked, manifest, where)
    records = manifest["components"]
    assignable = [kind for kind in SLOTS if _fully_saved(records[kind])]
    model = build(checked, empty_weights=assignable)  # the one real build; no random init where all is saved
    _check_image_token(model, manifest, where)
    for kind in SLOTS:
        _load_component(model, kind, records[kind], path, where, assign=kind in assignable)
    model.eval()
    if device is not None:
        model.to(device)
    return model


def load_weights(model: MultiModal, directory: str | os.PathLike) -> None:
    """Copy a checkpoint's weights into ``model``, an already built model of the same composition.

    What resuming a training run needs: the model is built (and perhaps about to be wrapped for DDP or
    FSDP) and its trained weights, adapter included, come from the checkpoint, in place.

    Raises:
        CheckpointError: not a checkpoint, incomplete, another composition or contract, tensors that do
            not fit.
    """
    path = Path(directory)
    manifest = read_manifest(path)
    where = f"checkpoint {str(path)!r}"
    _check_files(path, manifest, where)
    saved = {kind: manifest["model"].get("model", {}).get(kind, {}).get("name") for kind in SLOTS}
    now = {kind: model.composition.slot(kind).name for kind in SLOTS}
    contract = _jsonable(model.contract.to_dict())
    if saved != now or manifest["contract"] != contract:
        changes = _differences(saved, now) if saved != now else _differences(manifest["contract"], contract)
        raise CheckpointError(f"{where} holds another composition than the model it is loaded into: {changes}")
    _check_image_token(model, manifest, where)
    for kind in SLOTS:
        _load_component(model, kind, manifest["components"][kind], path, where)


def _config_for_load(manifest: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The stored composition, with the LM reading the tokenizer saved in the checkpoint."""
    data = json.loads(json.dumps(manifest["model"]))
    tokenizer = manifest.get("tokenizer") or {}
    lm_config = manifest["components"]["lm"].get("config", {})
    if tokenizer.get("saved") and "tokenizer" in lm_config:
        lm = data.get("model", {}).get("lm")
        if isinstance(lm, dict):
            lm["tokenizer"] = str((path / tokenizer.get("dir", TOKENIZER_DIR)).resolve())
    return data


def _check_files(path: Path, manifest: Mapping[str, Any], where: str) -> None:
    problems = []
    for name, size in (manifest.get("files") or {}).items():
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif name.endswith(".safetensors") and file.stat().st_size != size:
            problems.append(f"{name} has {file.stat().st_size} bytes, the manifest says {size}")
    if problems:
        raise CheckpointError(f"{where} is incomplete: {'; '.join(problems[:5])}")


def _check_references(manifest: Mapping[str, Any], where: str) -> None:
    for kind in SLOTS:
        weights = manifest["components"][kind].get("weights") or {}
        if weights.get("mode") != "referenced":
            continue
        reference = Path(weights.get("checkpoint", ""))
        if not reference.exists():
            raise CheckpointError(
                f"{where}: the {kind} weights are not in the checkpoint but referenced at {str(reference)!r} "
                f"(model.{kind}.checkpoint when it was saved), which does not exist; restore that path"
            )
        now = _fingerprint(reference)
        if now != weights.get("fingerprint", now):
            warnings.warn(
                f"{where}: the {kind} weights referenced at {str(reference)!r} changed since the checkpoint "
                "was saved (file names or sizes differ); logits may differ from the saved model's",
                stacklevel=3,
            )


def _check_plugins(config: Any, manifest: Mapping[str, Any], where: str) -> None:
    from zoo.registry import KIND_TITLES, get_registry

    registry = get_registry(config.plugins)
    for kind in SLOTS:
        record = manifest["components"][kind]
        name = config.slot(kind).name
        try:
            registry.resolve(kind, name)
        except (UnknownNameError, PluginError) as error:
            plugin = record.get("plugin") or "?"
            raise CheckpointError(
                f"{where}: its {KIND_TITLES[kind]} {name!r} was registered by plugin {plugin!r} when it was "
                f"saved, and no loaded plugin registers it now; install or load that plugin (a config's "
                f"'plugins:' list, --plugin, ZOO_PLUGINS, or an entry point of group 'zoo') and load again "
                f"({error})"
            ) from error


def _check_plan(checked: Any, manifest: Mapping[str, Any], where: str) -> None:
    """The rebuilt plan must give the same component configs and contract as the saved model."""
    for kind in SLOTS:
        record = manifest["components"][kind]
        stored = record.get("config")
        now = _absolute_paths_in_config(_jsonable(dataclasses.asdict(checked.configs[kind])))
        if kind == "lm" and isinstance(stored, dict):
            stored = {k: v for k, v in stored.items() if k != "tokenizer"}
            now = {k: v for k, v in now.items() if k != "tokenizer"}
        if stored is not None and stored != now:
            changes = _differences(stored, now)
            raise CheckpointError(
                f"{where}: the {kind} {record.get('name')!r} (plugin {record.get('plugin')!r} then, "
                f"{checked.specs[kind].plugin!r} now) resolves to a different config than when it was saved: "
                f"{changes}; the plugin's preset changed; load with the plugin version that saved it"
            )
    stored_contract = manifest["contract"]
    now_contract = _jsonable(checked.contract.to_dict())
    if stored_contract != now_contract:
        raise CheckpointError(
            f"{where}: the composition's contract changed since it was saved: {_differences(stored_contract, now_contract)}"
        )


def _check_image_token(model: MultiModal, manifest: Mapping[str, Any], where: str) -> None:
    expected = manifest.get("image_token_id")
    if model.image_token_id != expected:
        raise CheckpointError(
            f"{where}: the image token {manifest.get('image_token')!r} has id {model.image_token_id} in the rebuilt "
            f"model but {expected} in the saved one; the tokenizer changed"
        )


def _fully_saved(record: Mapping[str, Any]) -> bool:
    """Every parameter of this component is in the checkpoint: build it without random init."""
    weights = record.get("weights") or {}
    config = record.get("config") or {}
    return weights.get("mode") == "saved" and not record.get("lora") and not config.get("checkpoint")


def _load_component(
    model: MultiModal, kind: str, record: Mapping[str, Any], path: Path, where: str, *, assign: bool = False
) -> None:
    from zoo.weights import load_state_dict_file

    module = getattr(model, kind)
    weights = record.get("weights") or {}
    label = f"{where}: {kind} {record.get('name')!r}"
    if weights.get("mode") == "saved":
        tensors = load_state_dict_file(path / weights["file"], key=f"{kind} weights")
        load_state_into(module, tensors, label, assign=assign)
    elif weights.get("mode") != "referenced":
        raise CheckpointError(f"{label}: unknown weights mode {weights.get('mode')!r} in the manifest")
    rows = record.get("added_rows")
    if rows:
        _load_added_rows(module, path / rows["file"], rows["from"], label)
    adapter = record.get("lora")
    if adapter:
        _load_adapter(module, path / adapter["dir"], adapter, label)


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
        if _is_lora_key(name):
            continue
        key = canonical_name(name)
        targets[key] = tensor
        groups.setdefault(_view_key(tensor), []).append(key)
    unexpected = sorted(set(tensors) - set(targets))
    missing = sorted(key for members in groups.values() if not any(m in tensors for m in members) for key in members)
    if missing or unexpected:
        raise CheckpointError(
            f"{label}: the saved tensors do not fit the rebuilt module: missing {_few(missing)}; "
            f"unexpected {_few(unexpected)}"
        )
    wrong = [
        f"{k} (saved {tuple(v.shape)}, model {tuple(targets[k].shape)})"
        for k, v in tensors.items()
        if tuple(v.shape) != tuple(targets[k].shape)
    ]
    if wrong:
        raise CheckpointError(f"{label}: tensors of the wrong shape: {_few(wrong)}")
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


def _load_added_rows(lm: LanguageModel, file: Path, start: int, label: str) -> None:
    from zoo.weights import load_state_dict_file

    rows = load_state_dict_file(file, key="lm added rows")
    inner = lm.model
    pairs = [("input_embeddings", inner.get_input_embeddings())]
    if "output_embeddings" in rows:
        pairs.append(("output_embeddings", inner.get_output_embeddings()))
    with torch.no_grad():
        for name, layer in pairs:
            if name not in rows:
                raise CheckpointError(f"{label}: {file.name} has no {name!r}")
            value = rows[name]
            if layer.weight.shape[0] != start + value.shape[0] or layer.weight.shape[1:] != value.shape[1:]:
                raise CheckpointError(
                    f"{label}: {file.name} holds {name} rows {start}..{start + value.shape[0]} but the rebuilt "
                    f"embedding has shape {tuple(layer.weight.shape)}"
                )
            layer.weight[start:].copy_(value)


def _load_adapter(lm: LanguageModel, directory: Path, record: Mapping[str, Any], label: str) -> None:
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    from zoo.weights import load_state_dict_file

    if not isinstance(lm.model, PeftModel):
        raise CheckpointError(f"{label}: the manifest has a LoRA adapter but the rebuilt LM is not trained with LoRA")
    current = cast("LoraConfig", lm.model.peft_config["default"])  # zoo's adapters are LoRA (zoo.training)
    saved_config = _read_json(directory / "adapter_config.json", label)
    targets = cast("set[str]", current.target_modules)  # peft keeps zoo's list as a set
    expected = {"r": current.r, "lora_alpha": current.lora_alpha, "target_modules": sorted(targets)}
    found = {
        "r": saved_config.get("r"),
        "lora_alpha": saved_config.get("lora_alpha"),
        "target_modules": sorted(saved_config.get("target_modules") or []),
    }
    if expected != found:
        raise CheckpointError(f"{label}: the saved LoRA adapter does not fit: {_differences(found, expected)}")
    files = [directory / "adapter_model.safetensors", directory / "adapter_model.bin"]
    file = next((f for f in files if f.is_file()), None)
    if file is None:
        raise CheckpointError(f"{label}: {directory} has no adapter_model.safetensors")
    tensors = load_state_dict_file(file, key="LoRA adapter")
    wanted = set(get_peft_model_state_dict(lm.model, save_embedding_layers=False))
    missing, unexpected = sorted(wanted - set(tensors)), sorted(set(tensors) - wanted)
    if missing or unexpected:
        raise CheckpointError(
            f"{label}: the LoRA adapter does not fit the rebuilt LM: missing {_few(missing)}; "
            f"unexpected {_few(unexpected)}"
        )
    set_peft_model_state_dict(lm.model, tensors)


# -- checkpoint-specific swap helpers -----------------------------------------------------------
def _is_checkpoint(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def _interrupted_swap(target: Path) -> Path | None:
    if not target.parent.is_dir():
        return None
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.old-\d+-")
    for sibling in sorted(target.parent.iterdir()):
        if pattern.match(sibling.name) and (sibling / MANIFEST).is_file():
            return sibling
    return None


# -- small helpers ----------------------------------------------------------------------------------
def _fingerprint(path: Path) -> dict[str, int]:
    """Weight and config files of a referenced checkpoint with their sizes (cheap change detection)."""
    if path.is_file():
        return {path.name: path.stat().st_size}
    if not path.is_dir():
        return {}
    return {
        str(f.relative_to(path)): f.stat().st_size
        for f in sorted(path.rglob("*"))
        if f.is_file() and (f.suffix in _WEIGHT_SUFFIXES or f.name == "config.json")
    }


def _absolute_paths(config_data: dict[str, Any]) -> dict[str, Any]:
    """The composition with relative ``checkpoint`` / ``tokenizer`` / plugin file paths made absolute."""
    data = json.loads(json.dumps(config_data))
    for kind in SLOTS:
        slot = data.get("model", {}).get(kind)
        if isinstance(slot, dict):
            _absolute_paths_in_config(slot, in_place=True)
    if data.get("plugins"):
        data["plugins"] = [str(Path(p).resolve()) if p.endswith(".py") else p for p in data["plugins"]]
    return data


def _absolute_paths_in_config(values: dict[str, Any], in_place: bool = False) -> dict[str, Any]:
    result = values if in_place else dict(values)
    for key in _PATH_OPTIONS:
        if isinstance(result.get(key), str):
            result[key] = str(Path(result[key]).expanduser().resolve())
    return result


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _differences(stored: Mapping[str, Any], now: Mapping[str, Any], limit: int = 4) -> str:
    keys = sorted(set(stored) | set(now))
    changes = [f"{k}: saved {stored.get(k)!r}, now {now.get(k)!r}" for k in keys if stored.get(k) != now.get(k)]
    more = f" (and {len(changes) - limit} more)" if len(changes) > limit else ""
    return "; ".join(changes[:limit]) + more


def _few(keys: list[str], limit: int = 4) -> str:
    if not keys:
        return "none"
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _read_json(file: Path, label: str) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{label}: cannot read {file}: {error}") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{label}: {file} is not a JSON object")
    return data


def _zoo_version() -> str:
    import zoo

    return zoo.__version__


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("transformers", "peft", "safetensors", "timm", "open_clip"):
        module = sys.modules.get(package)
        if module is None and package in ("transformers", "peft", "safetensors"):
            with contextlib.suppress(ImportError):
                module = __import__(package)
        versions[package] = getattr(module, "__version__", None) if module is not None else None
    return versions
