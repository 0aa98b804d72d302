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
  absolute path and a fingerprint (file names and sizes), and loading rebuilds it from the path the
  caller gives (``zoo.load(DIR, bases={"lm": PATH})`` or ``bases="recorded"``; ``--base lm=PATH``):
  a checkpoint never makes zoo read outside its own directory by itself. This keeps a LoRA
  checkpoint of a 7B model at adapter + projector size, like the reference design. If the LM's
  vocabulary grew (the image token was added past the checkpoint's embedding rows), the new rows are
  saved in ``lm.added_rows.safetensors``. A component built from a ``checkpoint:`` path reads its
  architecture (``config.json``) from its base at load time even when its weights are saved (trained
  in full), so it needs ``bases`` too; a missing base is a clear error at load.

Loading treats the directory as data from others (see ``README.md``, "Checkpoint guarantees"): it
never imports a plugin the manifest names (a component whose plugin is not installed is an error
naming the plugin and its package), never turns ``trust_remote_code`` on by itself (only the caller's
``trust_remote_code=True``), and reads only files inside the directory that the validated manifest
lists (:mod:`zoo.manifest`, :mod:`zoo.safe_paths`), all pinned up front so that one load sees one save
(:mod:`zoo.snapshot`). ``verify=True`` (or ``zoo verify DIR``) checks every file's sha256.

Loading rebuilds the composition through :func:`zoo.builder.plan` (a ``meta`` pass that reads no
weight) and checks the stored component configs and contract against it, then builds for real exactly
once and loads the saved tensors strictly (a missing or unexpected key is an error naming the
component). No pickle is involved anywhere: tensors are safetensors, metadata is JSON.

Saving (:mod:`zoo.checkpoint_save`) is atomic and owner-aware (:mod:`zoo.atomic`): the new directory is
written beside the old one, fsynced and swapped in, so a crash at any point leaves the previous
checkpoint loadable; files zoo did not write are kept; concurrent saves queue on a lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch

from zoo.checkpoint_save import (
    PATH_OPTIONS,
    _absolute_paths_in_config,
    _differences,
    _few,
    _fingerprint,
    _jsonable,
    save,
)
from zoo.errors import CheckpointError, PluginError, UnknownNameError, ZooError
from zoo.manifest import ADAPTER_DIR, FORMAT, FORMAT_VERSION, MANIFEST, SLOTS, TOKENIZER_DIR
from zoo.snapshot import Snapshot, check_snapshot, verify
from zoo.state_dict import canonical_name, canonical_state, is_lora_key, load_state_into

if TYPE_CHECKING:
    from peft import LoraConfig

    from zoo.interfaces import LanguageModel
    from zoo.multimodal import MultiModal

__all__ = [
    "ADAPTER_DIR",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "TOKENIZER_DIR",
    "canonical_name",
    "canonical_state",
    "is_lora_key",
    "load",
    "load_state_into",
    "load_weights",
    "read_manifest",
    "save",
    "verify",
]

_PATHS_ARE_OURS = PATH_OPTIONS  # the slot options that hold filesystem paths
RECORDED = "recorded"  # bases=RECORDED: read the base checkpoints where the manifest says they are


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The validated ``manifest.json`` of a checkpoint directory, with clear errors when it is not one."""
    with Snapshot.open(directory) as snapshot:
        return snapshot.manifest


def load(
    directory: str | os.PathLike,
    device: str | torch.device | None = None,
    *,
    trust_remote_code: bool = False,
    verify: bool = False,
    plugins: Sequence[str] = (),
    bases: Mapping[str, str | os.PathLike] | Literal["recorded"] | None = None,
) -> MultiModal:
    """Load a checkpoint written by :func:`save`; the model comes back in eval mode.

    The checkpoint is data: plugins it names are never imported (load them yourself with ``plugins``),
    ``trust_remote_code`` comes only from this call, and only files inside ``directory`` are read,
    except the component checkpoints the caller points to with ``bases``. One load reads one save,
    even while another process re-saves the directory.

    Args:
        directory: the checkpoint directory.
        device: where to put the model (default CPU).
        trust_remote_code: allow a component whose saved config asks for ``trust_remote_code`` to run
            the modeling code shipped with its own checkpoint (read that code first).
        verify: check every file's sha256 against the manifest before reading it.
        plugins: plugin modules or ``.py`` files to load first (yours, not the checkpoint's).
        bases: ``{slot: path}`` for components built from a base checkpoint (a frozen ``checkpoint:``
            LM saved by reference, for instance): where that base is now. ``"recorded"``: trust the
            paths the manifest records (your own checkpoints), nested ones (fused towers) included.

    Raises:
        CheckpointError: no manifest, a malformed manifest (naming the field), a path outside the
            directory, a component whose plugin is not installed, a changed contract or config, a
            missing base, missing / unexpected / mis-shaped / mis-typed tensors, a hash mismatch.

    Example:
        >>> model = zoo.load("runs/ckpt")
        >>> lora = zoo.load("runs/lora", bases={"lm": "/models/qwen2-7b"})
    """
    from zoo.builder import build, plan
    from zoo.config import parse_model_config

    with Snapshot.open(directory) as snapshot, contextlib.ExitStack() as stack:
        manifest, where = snapshot.manifest, snapshot.where
        if verify:
            check_snapshot(snapshot)
        references = _references(manifest, bases or {}, where)
        _check_references(manifest, references, where)
        data = _config_for_load(snapshot, references, bases == RECORDED, trust_remote_code, stack)
        try:
            config = parse_model_config(data, source=f"{where}: {MANIFEST}")
        except ZooError as error:
            raise CheckpointError(
                f"{where}: the manifest's model section is not a valid composition: {error}"
            ) from error
        _check_plugins(config, manifest, where, plugins)
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
            _load_component(model, kind, records[kind], snapshot, where, assign=kind in assignable)
    model.eval()
    if device is not None:
        model.to(device)
    return model


def load_weights(model: MultiModal, directory: str | os.PathLike) -> None:
    """Copy a checkpoint's weights into ``model``, an already built model of the same composition.

    What resuming a training run needs: the model is built (and perhaps about to be wrapped for DDP or
    FSDP) and its trained weights, adapter included, come from the checkpoint, in place. Reads only the
    files inside ``directory``; builds nothing.

    Raises:
        CheckpointError: not a checkpoint, another composition or contract, tensors that do not fit.
    """
    with Snapshot.open(directory) as snapshot:
        manifest, where = snapshot.manifest, snapshot.where
        saved = {kind: manifest["components"][kind].get("name") for kind in SLOTS}
        now = {kind: model.composition.slot(kind).name for kind in SLOTS}
        contract = _jsonable(model.contract.to_dict())
        if saved != now or manifest["contract"] != contract:
            changes = _differences(saved, now) if saved != now else _differences(manifest["contract"], contract)
            raise CheckpointError(f"{where} holds another composition than the model it is loaded into: {changes}")
        _check_image_token(model, manifest, where)
        for kind in SLOTS:
            _load_component(model, kind, manifest["components"][kind], snapshot, where)


def _references(manifest: Mapping[str, Any], bases: Mapping[str, Any] | str, where: str) -> dict[str, Path]:
    """The caller's paths for the slots built from a base checkpoint outside the directory."""
    needed = {}
    for kind in SLOTS:
        record = manifest["components"][kind]
        config = record.get("config") or {}
        if record["weights"]["mode"] == "referenced":
            needed[kind] = record["weights"]["checkpoint"]
        elif isinstance(config.get("checkpoint"), str):
            needed[kind] = config["checkpoint"]
    if bases == RECORDED:
        bases = needed
    elif isinstance(bases, str):
        raise CheckpointError(f"bases = {bases[:80]!r}: expected {{slot: path}} or {RECORDED!r}")
    unknown = sorted(set(bases) - set(needed))
    if unknown:
        raise CheckpointError(
            f"{where}: bases names {', '.join(map(repr, unknown))}, but only "
            f"{', '.join(map(repr, sorted(needed))) or 'no slot'} of this checkpoint is built from a base checkpoint"
        )
    missing = sorted(set(needed) - set(bases))
    if missing:
        kind = missing[0]
        raise CheckpointError(
            f"{where}: its {kind} is built from {str(needed[kind])[:200]!r}, outside the checkpoint directory, and "
            f"zoo reads outside a checkpoint only where you say: pass bases={{{kind!r}: PATH}} to zoo.load or "
            f"--base {kind}=PATH on the command line (PATH: where that base checkpoint is now; bases='recorded' / "
            "--base recorded: the paths the manifest records, if you trust it)"
        )
    return {kind: Path(os.fspath(path)).expanduser().absolute() for kind, path in bases.items()}


def _check_references(manifest: Mapping[str, Any], references: Mapping[str, Path], where: str) -> None:
    for kind, reference in references.items():
        if not reference.exists():
            raise CheckpointError(f"{where}: bases[{kind!r}] = {str(reference)!r} does not exist")
        weights = manifest["components"][kind]["weights"]
        if weights["mode"] != "referenced":
            continue
        now = _fingerprint(reference)
        if now != weights.get("fingerprint", now):
            warnings.warn(
                f"{where}: the {kind} base at {str(reference)!r} differs from the one the checkpoint was saved "
                "with (file names or sizes); logits may differ from the saved model's",
                stacklevel=3,
            )


def _config_for_load(
    snapshot: Snapshot,
    references: Mapping[str, Path],
    recorded: bool,
    trust_remote_code: bool,
    stack: contextlib.ExitStack,
) -> dict[str, Any]:
    """The stored composition as the caller allows it: no plugins, caller's paths and trust, pinned tokenizer."""
    manifest, where = snapshot.manifest, snapshot.where
    data = json.loads(json.dumps(manifest["model"]))
    data.pop("plugins", None)  # a checkpoint never names code zoo imports
    model = data.get("model")
    slots = model if isinstance(model, dict) else {}
    for kind in SLOTS:
        slot = slots.get(kind)
        if not isinstance(slot, dict):
            continue
        for key in _PATHS_ARE_OURS:  # the slot's own base: the caller's path
            if key in slot and slot[key] is not None:
                slot[key] = str(references[kind]) if key == "checkpoint" and kind in references else None
        for field, container, key in _options(slot, f"model.{kind}"):
            value = container[key]
            if key == "trust_remote_code" and value and not trust_remote_code:
                raise CheckpointError(
                    f"{where}: its {kind} asks for trust_remote_code ({field} = true): running the code shipped "
                    "with its checkpoint is the caller's decision, never the checkpoint's; read that code, then "
                    "pass trust_remote_code=True to zoo.load or --trust-remote-code on the command line"
                )
            if key == "offline" and value is False:
                raise CheckpointError(
                    f"{where}: its {kind} asks to reach a model hub ({field} = false); a checkpoint loads from its "
                    "own directory and the bases you pass"
                )
            if key in _PATHS_ARE_OURS and value is not None and field.count(".") > 2 and not recorded:
                raise CheckpointError(
                    f"{where}: {field} = {str(value)[:200]!r} names a path outside the checkpoint directory; zoo "
                    "reads it only if you trust the paths the manifest records: bases='recorded' / --base recorded"
                )
    tokenizer = manifest.get("tokenizer") or {}
    lm = slots.get("lm")
    if tokenizer.get("saved") and isinstance(lm, dict):
        copy = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zoo-tokenizer-")))
        lm["tokenizer"] = str(snapshot.copy_tree(tokenizer.get("dir", TOKENIZER_DIR), copy))
    return data


def _options(node: Any, field: str, depth: int = 0) -> Iterator[tuple[str, Any, Any]]:
    """``(field path, container, key)`` of every option at any depth of a slot (fused towers nest slots)."""
    if depth > 32:
        raise CheckpointError(f"{field}: nested more than 32 levels")
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{field}.{key}", node, key
            yield from _options(value, f"{field}.{key}", depth + 1)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _options(value, f"{field}[{index}]", depth + 1)


def _check_plugins(config: Any, manifest: Mapping[str, Any], where: str, plugins: Sequence[str]) -> None:
    from zoo.registry import KIND_TITLES, get_registry

    registry = get_registry(tuple(plugins))
    for kind in SLOTS:
        record = manifest["components"][kind]
        name = config.slot(kind).name
        try:
            registry.resolve(kind, name)
        except (UnknownNameError, PluginError) as error:
            plugin = str(record.get("plugin") or "?")[:200]
            package = f" (package {str(record['package'])[:100]!r})" if record.get("package") else ""
            raise CheckpointError(
                f"{where}: its {KIND_TITLES[kind]} {name[:100]!r} was registered by plugin {plugin!r}{package} when "
                f"it was saved, and no loaded plugin registers it now; install or load that plugin yourself "
                f"(zoo.load(..., plugins=[...]), --plugin, ZOO_PLUGINS, or an entry point of group 'zoo') and load "
                f"again; zoo never imports a plugin a checkpoint names ({str(error)[:300]})"
            ) from error


def _check_plan(checked: Any, manifest: Mapping[str, Any], where: str) -> None:
    """The rebuilt plan must give the same component configs and contract as the saved model."""
    for kind in SLOTS:
        record = manifest["components"][kind]
        stored = record.get("config")
        now = _absolute_paths_in_config(_jsonable(dataclasses.asdict(checked.configs[kind])))
        if isinstance(stored, dict):  # paths are where the caller put things now; contents are fingerprinted
            stored = {k: v for k, v in stored.items() if k not in _PATHS_ARE_OURS}
            now = {k: v for k, v in now.items() if k not in _PATHS_ARE_OURS}
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
            f"{where}: the image token {str(manifest.get('image_token'))[:40]!r} has id {model.image_token_id} in "
            f"the rebuilt model but {expected} in the saved one; the tokenizer changed"
        )


def _fully_saved(record: Mapping[str, Any]) -> bool:
    """Every parameter of this component is in the checkpoint: build it without random init."""
    config = record.get("config") or {}
    return record["weights"]["mode"] == "saved" and not record.get("lora") and not config.get("checkpoint")


def _load_component(
    model: MultiModal, kind: str, record: Mapping[str, Any], snapshot: Snapshot, where: str, *, assign: bool = False
) -> None:
    module = getattr(model, kind)
    weights = record["weights"]
    label = f"{where}: {kind} {str(record.get('name'))[:100]!r}"
    if weights["mode"] == "saved":
        tensors = snapshot.tensors(weights["file"], f"{label} weights")
        load_state_into(module, tensors, label, assign=assign)
    rows = record.get("added_rows")
    if rows:
        _load_added_rows(module, snapshot, rows["file"], rows["from"], label)
    adapter = record.get("lora")
    if adapter:
        _load_adapter(module, snapshot, adapter["dir"], label)


def _load_added_rows(lm: LanguageModel, snapshot: Snapshot, file: str, start: int, label: str) -> None:
    rows = snapshot.tensors(file, f"{label} added rows")
    inner = lm.model
    pairs = [("input_embeddings", inner.get_input_embeddings())]
    if "output_embeddings" in rows:
        pairs.append(("output_embeddings", inner.get_output_embeddings()))
    with torch.no_grad():
        for name, layer in pairs:
            if name not in rows:
                raise CheckpointError(f"{label}: {file} has no {name!r}")
            value = rows[name]
            if layer.weight.shape[0] != start + value.shape[0] or layer.weight.shape[1:] != value.shape[1:]:
                raise CheckpointError(
                    f"{label}: {file} holds {name} rows {start}..{start + value.shape[0]} but the rebuilt "
                    f"embedding has shape {tuple(layer.weight.shape)}"
                )
            if value.dtype != layer.weight.dtype:
                raise CheckpointError(
                    f"{label}: {file} holds {name} as {value.dtype}, the model uses {layer.weight.dtype}"
                )
            layer.weight[start:].copy_(value)


def _load_adapter(lm: LanguageModel, snapshot: Snapshot, directory: str, label: str) -> None:
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    if not isinstance(lm.model, PeftModel):
        raise CheckpointError(f"{label}: the manifest has a LoRA adapter but the rebuilt LM is not trained with LoRA")
    current = cast("LoraConfig", lm.model.peft_config["default"])  # zoo's adapters are LoRA (zoo.training)
    saved_config = snapshot.read_json(f"{directory}/adapter_config.json", label)
    targets = cast("set[str]", current.target_modules)  # peft keeps zoo's list as a set
    saved_targets = saved_config.get("target_modules") or []
    expected = {"r": current.r, "lora_alpha": current.lora_alpha, "target_modules": sorted(targets)}
    found = {
        "r": saved_config.get("r"),
        "lora_alpha": saved_config.get("lora_alpha"),
        "target_modules": sorted(map(str, saved_targets)) if isinstance(saved_targets, list) else saved_targets,
    }
    if expected != found:
        raise CheckpointError(f"{label}: the saved LoRA adapter does not fit: {_differences(found, expected)}")
    file = f"{directory}/adapter_model.safetensors"
    if not snapshot.has(file):
        raise CheckpointError(f"{label}: the checkpoint has no {file}")
    tensors = snapshot.tensors(file, f"{label} LoRA adapter")
    wanted = get_peft_model_state_dict(lm.model, save_embedding_layers=False)
    missing, unexpected = sorted(set(wanted) - set(tensors)), sorted(set(tensors) - set(wanted))
    if missing or unexpected:
        raise CheckpointError(
            f"{label}: the LoRA adapter does not fit the rebuilt LM: missing {_few(missing)}; "
            f"unexpected {_few(unexpected)}"
        )
    wrong = [k for k in wanted if tuple(wanted[k].shape) != tuple(tensors[k].shape)]
    if wrong:
        raise CheckpointError(f"{label}: LoRA tensors of the wrong shape: {_few(wrong)}")
    set_peft_model_state_dict(lm.model, tensors)


_is_lora_key = is_lora_key  # the name zoo.hf_llava imports
