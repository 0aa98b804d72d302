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
      lm_base/, vision_base/        self-contained only: the base checkpoints' non-weight files
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
  in full), so it needs ``bases`` too; a missing base is a clear error at load, naming every base to pass.
- ``zoo.save(model, DIR, self_contained=True)``: a component built from a base checkpoint is saved with its
  base inside instead: every weight in ``<slot>.safetensors`` and the base directory's other files (its
  config, tokenizer and generation config; none of its weight files) in ``<slot>_base/``, recorded as
  ``components.<slot>.base`` (``dir``, and ``from``: where the base was). Loading builds the component from
  a temporary copy of those files with its parameters on ``meta`` (the factory reads no weight file, see
  :func:`zoo.sdk.weights.weights_assigned_later`), assigns the saved weights, and only then applies the
  training policy (a LoRA adapter goes onto the real weights); no ``bases`` needed.

The LM's generation settings (its ``generation_config``: what its directory's ``generation_config.json``
gave, and changes made in Python) are recorded in the manifest field ``generation_config`` and applied on
load (:mod:`zoo.sdk.generation_config`); a checkpoint without the field keeps the rebuilt LM's settings.

Loading treats the directory as data from others (see ``README.md``, "Checkpoint guarantees"): it
never imports a plugin the manifest names (a component whose plugin is not installed is an error
naming the plugin and its package), never turns ``trust_remote_code`` on by itself (only the caller's
``trust_remote_code=True``), and reads only files inside the directory that the validated manifest
lists (:mod:`zoo.checkpoint.manifest`, :mod:`zoo.sdk.safe_paths`), all pinned up front so that one load sees one save
(:mod:`zoo.checkpoint.snapshot`). ``verify=True`` (or ``zoo verify DIR``) checks every file's sha256.

Loading rebuilds the composition through :func:`zoo.core.builder.plan` (a ``meta`` pass that reads no
weight) and checks the stored component configs and contract against it, then builds for real exactly
once and loads the saved tensors strictly (a missing or unexpected key is an error naming the
component). No pickle is involved anywhere: tensors are safetensors, metadata is JSON.

Saving (:mod:`zoo.checkpoint.saving`) is atomic and owner-aware (:mod:`zoo.checkpoint.atomic`): the new directory is
written beside the old one, fsynced and swapped in, so a crash at any point leaves the previous
checkpoint loadable; files zoo did not write are kept; concurrent saves queue on a lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch

from zoo.checkpoint.manifest import MANIFEST, SLOTS, TOKENIZER_DIR
from zoo.checkpoint.saving import (
    PATH_OPTIONS,
    absolute_paths_in_config,
    differences,
    file_fingerprint,
    jsonable,
)
from zoo.checkpoint.snapshot import Snapshot, check_snapshot
from zoo.checkpoint.state_dict import canonical_name, load_lora_state, load_state_into
from zoo.core.prompt import end_token_from_record, system_prompt_from_record
from zoo.errors import CheckpointError, PluginError, UnknownNameError, ZooError

if TYPE_CHECKING:
    from peft import LoraConfig

    from zoo.core.config import ModelConfig
    from zoo.core.multimodal import MultiModal
    from zoo.sdk.interfaces import LanguageModel

__all__ = ["RECORDED", "load", "load_weights", "read_manifest"]

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
    from zoo.core.builder import build, plan
    from zoo.core.config import parse_model_config

    with Snapshot.open(directory) as snapshot, contextlib.ExitStack() as stack, contextlib.ExitStack() as kept:
        manifest, where = snapshot.manifest, snapshot.where
        if verify:
            check_snapshot(snapshot)
        references = _references(manifest, bases or {}, where)
        _check_references(manifest, references, where)
        inside = _unpack_bases(snapshot, kept)  # bases saved inside (self-contained): {slot: their files}
        data = _config_for_load(snapshot, {**references, **inside}, bases == RECORDED, trust_remote_code)
        try:
            composition = parse_model_config(data, source=f"{where}: {MANIFEST}")
        except ZooError as error:
            raise CheckpointError(
                f"{where}: the manifest's model section is not a valid composition: {error}"
            ) from error
        config = _with_saved_tokenizer(composition, snapshot, stack)
        _check_plugins(config, manifest, where, plugins)
        try:
            checked = plan(config)
        except ZooError as error:
            raise CheckpointError(f"{where}: the stored composition no longer builds: {error}") from error
        _check_plan(checked, manifest, where)
        records = manifest["components"]
        assignable = [kind for kind in SLOTS if _fully_saved(records[kind])]
        contained = {
            kind: _prebuild(checked, kind, records[kind], snapshot, where) for kind in SLOTS if "base" in records[kind]
        }
        # the one real build; no random init where all is saved
        model = build(checked, empty_weights=assignable, prebuilt=contained)
        _check_image_token(model, manifest, where)
        for kind in SLOTS:
            _load_component(
                model, kind, records[kind], snapshot, where, assign=kind in assignable, prebuilt=kind in contained
            )
        _apply_generation_config(model, manifest, where)
        model.contained_bases = {kind: str(records[kind]["base"].get("from") or "") for kind in contained}
        for path in inside.values():  # the rebuilt components read them again (a re-save, a processor)
            weakref.finalize(model, shutil.rmtree, str(path), True)
        kept.pop_all()
        # the model records the composition as stored, not the temporary copy its tokenizer was read from:
        # what zoo.load returns, zoo.save accepts, and the manifest it writes names no temporary path
        model.composition = composition
        model.system_prompt = system_prompt_from_record(manifest.get("prompt"))
        model.end_token = end_token_from_record(manifest.get("prompt"))
        model.component_configs = {kind: _without_tokenizer_path(c) for kind, c in model.component_configs.items()}
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
        contract = jsonable(model.contract.to_dict())
        if saved != now or manifest["contract"] != contract:
            changes = differences(saved, now) if saved != now else differences(manifest["contract"], contract)
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
        if "base" in record:  # saved self-contained: its base is inside the directory
            continue
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
    if missing:  # every base the caller must name, not only the first
        first, *others = missing
        built = f"its {first} is built from {str(needed[first])[:200]!r}" + "".join(
            f" and its {kind} from {str(needed[kind])[:200]!r}" for kind in others
        )
        python = ", ".join(f"{kind!r}: PATH" for kind in missing)
        flags = " ".join(f"--base {kind}=PATH" for kind in missing)
        raise CheckpointError(
            f"{where}: {built}, outside the checkpoint directory, and zoo reads outside a checkpoint only where you "
            f"say: pass bases={{{python}}} to zoo.load or {flags} on the command line (each PATH: where that base "
            "checkpoint is now; bases='recorded' / --base recorded: the paths the manifest records, if you trust "
            "it); a checkpoint saved with zoo.save(..., self_contained=True) or 'zoo convert --self-contained' "
            "holds its bases and needs none"
        )
    return {kind: Path(os.fspath(path)).expanduser().absolute() for kind, path in bases.items()}


def _unpack_bases(snapshot: Snapshot, kept: contextlib.ExitStack) -> dict[str, Path]:
    """A temporary copy of each base saved inside the checkpoint (its config, tokenizer... files; no weights),
    for the component's factory to read; removed with the loaded model (``kept`` removes them on failure)."""
    inside = {}
    for kind in SLOTS:
        base = snapshot.manifest["components"][kind].get("base")
        if base is not None and base.get("dir") is not None:
            path = Path(tempfile.mkdtemp(prefix=f"zoo-{kind}-base-"))
            kept.callback(shutil.rmtree, str(path), True)
            inside[kind] = snapshot.copy_tree(base["dir"], path)
    return inside


def _prebuild(checked: Any, kind: str, record: Mapping[str, Any], snapshot: Snapshot, where: str) -> Any:
    """A component saved self-contained, built from its base's files with every weight assigned from the
    checkpoint, before the training policy wraps it (a LoRA adapter goes onto the real weights)."""
    from zoo.core.builder import call_factory
    from zoo.sdk.weights import weights_assigned_later

    label = f"{where}: {kind} {str(record.get('name'))[:100]!r}"
    with weights_assigned_later():  # the factory reads configs only: the weights are in the checkpoint
        module = call_factory(checked.specs[kind], checked.configs[kind], key=f"model.{kind}", source=where, empty=True)
    tensors = snapshot.tensors(record["weights"]["file"], f"{label} weights")
    if kind == "lm":
        _fit_vocabulary(cast("LanguageModel", module), tensors)
    load_state_into(module, tensors, label, assign=True)
    return module


def _fit_vocabulary(lm: LanguageModel, tensors: Mapping[str, torch.Tensor]) -> None:
    """Grow the (still empty) embeddings to the saved rows: tokens zoo added, the image token among them."""
    weight = lm.model.get_input_embeddings().weight
    name = next(canonical_name(n) for n, t in lm.state_dict(keep_vars=True).items() if t is weight)
    rows = tensors[name].shape[0] if name in tensors else lm.vocab_size
    if rows != lm.vocab_size:
        lm.model.resize_token_embeddings(rows, mean_resizing=False)  # on meta: nothing allocated


def _apply_generation_config(model: MultiModal, manifest: Mapping[str, Any], where: str) -> None:
    """The LM's generation settings as saved (checkpoints that predate the field keep the rebuilt LM's)."""
    from zoo.sdk.generation_config import apply_generation_settings, check_generation_settings

    saved = manifest.get("generation_config")
    config = getattr(model.lm.model, "generation_config", None)
    if saved is not None and config is not None:
        label = f"{where}: manifest field generation_config"
        apply_generation_settings(
            config, check_generation_settings(saved, label, vocab_size=model.lm.vocab_size, keep_none=True)
        )


def _check_references(manifest: Mapping[str, Any], references: Mapping[str, Path], where: str) -> None:
    for kind, reference in references.items():
        if not reference.exists():
            raise CheckpointError(f"{where}: bases[{kind!r}] = {str(reference)!r} does not exist")
        weights = manifest["components"][kind]["weights"]
        if weights["mode"] != "referenced":
            continue
        now = file_fingerprint(reference)
        if now != weights.get("fingerprint", now):
            warnings.warn(
                f"{where}: the {kind} base at {str(reference)!r} differs from the one the checkpoint was saved "
                "with (file names or sizes); logits may differ from the saved model's",
                stacklevel=3,
            )


def _config_for_load(
    snapshot: Snapshot, references: Mapping[str, Path], recorded: bool, trust_remote_code: bool
) -> dict[str, Any]:
    """The stored composition as the caller allows it: no plugins, the caller's paths and trust."""
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
    return data


def _with_saved_tokenizer(composition: ModelConfig, snapshot: Snapshot, stack: contextlib.ExitStack) -> ModelConfig:
    """The composition to build: its LM reads the tokenizer saved in the checkpoint, through links to the pinned
    files (nothing is copied; the links go with the snapshot, once the LM has read them)."""
    tokenizer = snapshot.manifest.get("tokenizer") or {}
    if not tokenizer.get("saved"):
        return composition
    links = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zoo-tokenizer-")))
    path = str(stack.enter_context(snapshot.linked_tree(tokenizer.get("dir", TOKENIZER_DIR), links)))
    lm = dataclasses.replace(composition.lm, options={**composition.lm.options, "tokenizer": path})
    return dataclasses.replace(composition, lm=lm)


def _without_tokenizer_path(config: Any) -> Any:
    """A component config whose tokenizer came from the checkpoint: no path (the copy is gone after the load)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type) and getattr(config, "tokenizer", None):
        return dataclasses.replace(config, tokenizer=None)
    return config


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
    from zoo.core.registry import KIND_TITLES, get_registry

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
        now = absolute_paths_in_config(jsonable(dataclasses.asdict(checked.configs[kind])))
        if isinstance(stored, dict):  # paths are where the caller put things now; contents are fingerprinted
            stored = {k: v for k, v in stored.items() if k not in _PATHS_ARE_OURS}
            now = {k: v for k, v in now.items() if k not in _PATHS_ARE_OURS}
        if stored is not None and stored != now:
            changes = differences(stored, now)
            raise CheckpointError(
                f"{where}: the {kind} {record.get('name')!r} (plugin {record.get('plugin')!r} then, "
                f"{checked.specs[kind].plugin!r} now) resolves to a different config than when it was saved: "
                f"{changes}; the plugin's preset changed; load with the plugin version that saved it"
            )
    stored_contract = manifest["contract"]
    now_contract = jsonable(checked.contract.to_dict())
    if stored_contract != now_contract:
        raise CheckpointError(
            f"{where}: the composition's contract changed since it was saved: {differences(stored_contract, now_contract)}"
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
    return record["weights"]["mode"] == "saved" and not record.get("lora") and not _names_a_checkpoint(config)


def _names_a_checkpoint(config: Mapping[str, Any]) -> bool:
    """A ``checkpoint`` option at any depth (a fused tower's sub-tower reads its base while it is built)."""
    return any(key == "checkpoint" and container[key] for _, container, key in _options(dict(config), "config"))


def _load_component(
    model: MultiModal,
    kind: str,
    record: Mapping[str, Any],
    snapshot: Snapshot,
    where: str,
    *,
    assign: bool = False,
    prebuilt: bool = False,
) -> None:
    module = getattr(model, kind)
    weights = record["weights"]
    label = f"{where}: {kind} {str(record.get('name'))[:100]!r}"
    if weights["mode"] == "saved" and not prebuilt:  # prebuilt: assigned by _prebuild
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

    if not isinstance(lm.model, PeftModel):
        raise CheckpointError(f"{label}: the manifest has a LoRA adapter but the rebuilt LM is not trained with LoRA")
    current = cast("LoraConfig", lm.model.peft_config["default"])  # zoo's adapters are LoRA (zoo.core.train_policy)
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
        raise CheckpointError(f"{label}: the saved LoRA adapter does not fit: {differences(found, expected)}")
    file = f"{directory}/adapter_model.safetensors"
    if not snapshot.has(file):
        raise CheckpointError(f"{label}: the checkpoint has no {file}")
    load_lora_state(lm.model, snapshot.tensors(file, f"{label} LoRA adapter"), label)
