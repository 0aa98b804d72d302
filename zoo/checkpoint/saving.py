"""Saving a ``MultiModal`` as a zoo checkpoint directory (see :mod:`zoo.checkpoint.loading` for the layout).

The directory is written through :func:`zoo.checkpoint.atomic.atomic_directory` (temporary sibling, fsync, swap;
user files kept; one writer at a time). Every file gets its size and sha256 in the manifest, computed
in the temporary directory right after the files are written and before anything is swapped in, and
every safetensors file carries the manifest's generation id in its metadata, so a reader can tell
that all the pieces it holds belong to one save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from zoo.checkpoint.atomic import atomic_directory, check_target
from zoo.checkpoint.manifest import (
    ADAPTER_DIR,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    SLOTS,
    TOKENIZER_DIR,
)
from zoo.checkpoint.snapshot import GENERATION_KEY
from zoo.checkpoint.state_dict import canonical_state
from zoo.core.prompt import system_prompt_record
from zoo.errors import CheckpointError

if TYPE_CHECKING:
    from peft import LoraConfig

    from zoo.core.multimodal import MultiModal
    from zoo.sdk.interfaces import LanguageModel

__all__ = [
    "PATH_OPTIONS",
    "absolute_paths_in_config",
    "check_save_target",
    "checkpoint_files",
    "differences",
    "file_fingerprint",
    "file_records",
    "jsonable",
    "save",
]

CHECKPOINT_WHAT = "zoo checkpoint"  # how messages about the directory name it

PATH_OPTIONS = ("checkpoint", "tokenizer")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# what a self-contained save does not copy from a base directory: weights in any format, and their indexes
_BASE_SKIPPED = (
    *_WEIGHT_SUFFIXES,
    ".h5",
    ".msgpack",
    ".onnx",
    ".gguf",
    ".pkl",
    ".npz",
    ".ot",
    ".tflite",
    ".index.json",
)
MAX_BASE_FILE_BYTES = 64 * 1024 * 1024


def save(
    model: MultiModal, directory: str | os.PathLike, *, overwrite: bool = False, self_contained: bool = False
) -> Path:
    """Save ``model`` (a ``MultiModal``) as a self-describing checkpoint directory, atomically.

    Args:
        model: the composed model.
        directory: where to write. A zoo checkpoint there is replaced once the new one is complete;
            files in it that zoo did not write are kept. Any other non-empty directory is refused.
        overwrite: write into a directory that is not a zoo checkpoint (its files are kept) and
            replace user files whose names the checkpoint uses (with a warning naming them).
        self_contained: also save the components built from a base checkpoint (``checkpoint:``, a frozen
            LM saved by reference otherwise) in full: their weights as ``<slot>.safetensors`` and their
            base directory's other files (config, tokenizer, generation config; no weight file) in
            ``<slot>_base/``, so that ``zoo.load(DIR)`` needs no ``bases``. A model loaded from such a
            checkpoint saves that way again.

    Returns:
        The checkpoint directory.

    Example:
        >>> zoo.checkpoint.saving.save(model, "runs/ckpt")           # or zoo.save(model, "runs/ckpt")
        >>> same = zoo.load("runs/ckpt")
    """
    from zoo.core.builder import plan

    target = Path(directory)
    checked = plan(model.composition)  # specs, plugins and the LM's vocabulary before tokens were added (meta)
    config_data = _absolute_paths(model.composition.to_dict())
    generation = uuid.uuid4().hex
    components: dict[str, Any] = {}
    inside = _bases_inside(model, checked, self_contained)
    with atomic_directory(target, owned_files=checkpoint_files, what=CHECKPOINT_WHAT, overwrite=overwrite) as tmp:
        for kind in SLOTS:
            if kind in inside:
                components[kind] = _save_contained(model, kind, checked, tmp, generation, inside[kind])
                config_data["model"][kind]["checkpoint"] = inside[kind]  # where it came from, never a temp copy
            else:
                components[kind] = _save_component(model, kind, checked, tmp, generation)
        tokenizer = _save_tokenizer(model, tmp)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "generation": generation,
            "zoo_version": _zoo_version(),
            "versions": _versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "model": config_data,
            "dtype": model.composition.dtype,
            "image_token": model.image_token,
            "image_token_id": model.image_token_id,
            "tokens_per_image": model.contract.image_tokens,  # per tile with model.vision.anyres
            "contract": jsonable(model.contract.to_dict()),
            "components": components,
            "tokenizer": tokenizer,
            # how prompts were rendered in training: the system prompt and the end token of assistant turns
            "prompt": system_prompt_record(model.system_prompt, getattr(model, "end_token", None)),
            **_generation_record(model),
            "files": file_records(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return target


def check_save_target(directory: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Refuse, before a model is loaded or built, a directory :func:`save` would refuse (see ``overwrite``)."""
    check_target(directory, owned_files=checkpoint_files, what=CHECKPOINT_WHAT, overwrite=overwrite)


def checkpoint_files(path: Path) -> set[str] | None:
    """The files a zoo checkpoint at ``path`` consists of (manifest included), or None if it is not one."""
    manifest = path / MANIFEST
    try:
        if not manifest.is_file() or manifest.is_symlink() or manifest.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
        return None
    return {str(name) for name in data["files"]} | {MANIFEST}


def file_records(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``root``, read back from the page cache."""
    records = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            records[path.relative_to(root).as_posix()] = {"size": path.stat().st_size, "sha256": digest.hexdigest()}
    return records


def _save_component(
    model: MultiModal, kind: str, checked: Any, tmp: Path, generation: str, *, full: bool = False
) -> dict[str, Any]:
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
        "package": _package_of(spec.plugin),
        "source": spec.source,
        "class": f"{type(module).__module__}.{type(module).__qualname__}",
        "config": absolute_paths_in_config(jsonable(dataclasses.asdict(config))),
        "contract": jsonable(module.contract()) if hasattr(module, "contract") else {},
        "train": choice.train,
        "params": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }
    lora = kind == "lm" and choice.train == "lora"
    if kind == "projector" or choice.train == "full" or checkpoint is None or full:
        reason = "trained" if kind == "projector" or choice.train == "full" else "random init (no checkpoint)"
        file = f"{kind}.safetensors"
        tensors = canonical_state(module)
        _write_safetensors(tensors, tmp / file, generation)
        record["weights"] = {"mode": "saved", "file": file, "tensors": len(tensors), "why": reason}
    else:
        path = Path(checkpoint).expanduser().resolve()
        record["weights"] = {"mode": "referenced", "checkpoint": str(path), "fingerprint": file_fingerprint(path)}
        if kind == "lm":
            record["added_rows"] = _save_added_rows(module, checked.meta_modules["lm"].vocab_size, tmp, generation)
    if lora:
        record["lora"] = _save_adapter(module, tmp)
    return record


def _bases_inside(model: MultiModal, checked: Any, self_contained: bool) -> dict[str, str]:
    """``{slot: the base checkpoint it was built from}`` for the slots saved with their base inside."""
    loaded = getattr(model, "contained_bases", {})  # slots loaded from a self-contained checkpoint
    inside = {}
    for kind in ("vision", "lm"):
        config = model.component_configs.get(kind, checked.configs[kind])
        checkpoint = getattr(config, "checkpoint", None)
        nested = _nested_paths(jsonable(dataclasses.asdict(config)), f"model.{kind}")
        if self_contained and nested:
            raise CheckpointError(
                f"self_contained: {nested[0]} names a base checkpoint inside a nested option (a fused tower's); zoo "
                "copies only a slot's own checkpoint into the directory; save this model without self_contained"
            )
        if checkpoint is not None and (self_contained or kind in loaded):
            inside[kind] = str(loaded.get(kind) or Path(checkpoint).expanduser().resolve())
    return inside


def _nested_paths(values: Any, field: str, depth: int = 0) -> list[str]:
    """Path options (``checkpoint``, ``tokenizer``) below a slot's own level, by field path."""
    found: list[str] = []
    if isinstance(values, dict):
        for key, value in values.items():
            if depth > 0 and key in PATH_OPTIONS and isinstance(value, str):
                found.append(f"{field}.{key}")
            found += _nested_paths(value, f"{field}.{key}", depth + 1)
    elif isinstance(values, list):
        for index, value in enumerate(values):
            found += _nested_paths(value, f"{field}[{index}]", depth + 1)
    return found


def _save_contained(
    model: MultiModal, kind: str, checked: Any, tmp: Path, generation: str, origin: str
) -> dict[str, Any]:
    """A component built from a base checkpoint, saved with that base inside the directory: every weight in
    ``<slot>.safetensors`` (the LoRA adapter beside it as usual) and the base's other files in ``<slot>_base/``."""
    from zoo.core.builder import call_factory

    config = model.component_configs.get(kind, checked.configs[kind])
    source = Path(config.checkpoint).expanduser()
    base_dir = None
    if source.is_dir():  # a weights-only file needs nothing besides the composition's arch
        base_dir = f"{kind}_base"
        _copy_base_files(source, tmp / base_dir, f"model.{kind}.checkpoint = {origin!r}")
    try:  # what a load will do, on meta: rebuild the component from those files alone
        call_factory(
            checked.specs[kind], dataclasses.replace(config, checkpoint=str(tmp / base_dir) if base_dir else None),
            key=f"model.{kind}", source="self_contained", meta=True,
        )  # fmt: skip
    except Exception as error:
        raise CheckpointError(
            f"self_contained: the {kind} {model.composition.slot(kind).name!r} cannot be rebuilt from the non-weight "
            f"files of its base {origin!r} ({str(error)[:300]}); save it without self_contained (by reference)"
        ) from error
    record = _save_component(model, kind, checked, tmp, generation, full=True)
    record["config"]["checkpoint"] = origin
    record["weights"]["why"] = "self-contained: built from a base checkpoint, every weight saved"
    record["base"] = {"dir": base_dir, "from": origin}
    return record


def _copy_base_files(source: Path, target: Path, where: str) -> None:
    """The files of a base checkpoint directory that are not weights (top level, not hidden), bounded in size."""
    target.mkdir()
    for entry in sorted(source.iterdir()):
        name = entry.name
        if name.startswith(".") or not entry.is_file() or name.endswith(_BASE_SKIPPED):
            continue
        size = entry.stat().st_size
        if size > MAX_BASE_FILE_BYTES:
            raise CheckpointError(
                f"self_contained: {where} holds {name!r} ({size:,} bytes), neither a known weight file "
                f"({', '.join(_BASE_SKIPPED)}) nor a small one (<= {MAX_BASE_FILE_BYTES:,} bytes); zoo does not copy it"
            )
        shutil.copyfile(entry, target / name)


def _generation_record(model: MultiModal) -> dict[str, Any]:
    """The LM's generation settings (``generation_config`` in the manifest), when it has a generation config."""
    from zoo.sdk.generation_config import generation_settings

    config = getattr(model.lm.model, "generation_config", None)
    return {"generation_config": jsonable(generation_settings(config))} if config is not None else {}


def _save_added_rows(lm: LanguageModel, base_vocab: int, tmp: Path, generation: str) -> dict[str, Any] | None:
    """Embedding rows past the checkpoint's vocabulary (tokens zoo added), input and output side."""
    if lm.vocab_size <= base_vocab:
        return None
    file = "lm.added_rows.safetensors"
    inner = lm.model
    tensors = {"input_embeddings": inner.get_input_embeddings().weight[base_vocab:].detach().clone()}
    output = inner.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != inner.get_input_embeddings().weight.data_ptr():
        tensors["output_embeddings"] = output.weight[base_vocab:].detach().clone()
    _write_safetensors(tensors, tmp / file, generation)
    return {"file": file, "from": base_vocab, "to": lm.vocab_size}


def _save_adapter(lm: LanguageModel, tmp: Path) -> dict[str, Any]:
    from peft import PeftModel

    if not isinstance(lm.model, PeftModel):
        raise CheckpointError("the language model is configured with train: lora but holds no peft adapter")
    lm.model.save_pretrained(str(tmp / ADAPTER_DIR), safe_serialization=True, save_embedding_layers=False)
    adapter = cast("LoraConfig", lm.model.peft_config["default"])  # zoo's adapters are LoRA (zoo.core.train_policy)
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


def _write_safetensors(tensors: Mapping[str, torch.Tensor], path: Path, generation: str) -> None:
    from safetensors.torch import save_file

    try:
        save_file(dict(tensors), str(path), metadata={"format": "pt", "writer": FORMAT, GENERATION_KEY: generation})
    except Exception as error:  # SafetensorError wraps a full disk or a file-size limit: an OSError to callers
        from zoo.sdk.weights import os_error_of

        failure = os_error_of(error, path)
        if failure is None:
            raise
        raise failure from error


def _package_of(plugin: str) -> str | None:
    """The pip distribution that installed ``plugin`` (an entry point), if the registry knows it."""
    from zoo.core.registry import loaded_registry

    registry = loaded_registry()
    if registry is None:
        return None
    return next((info.distribution for info in registry.host.loaded if info.name == plugin and info.distribution), None)


def file_fingerprint(path: Path) -> dict[str, int]:
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
            absolute_paths_in_config(slot, in_place=True)
    if data.get("plugins"):
        data["plugins"] = [str(Path(p).resolve()) if p.endswith(".py") else p for p in data["plugins"]]
    return data


def absolute_paths_in_config(values: dict[str, Any], in_place: bool = False) -> dict[str, Any]:
    result = values if in_place else dict(values)
    for key in PATH_OPTIONS:
        if isinstance(result.get(key), str):
            result[key] = str(Path(result[key]).expanduser().resolve())
    return result


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def differences(stored: Mapping[str, Any], now: Mapping[str, Any], limit: int = 4) -> str:
    keys = sorted(set(stored) | set(now))
    changes = [f"{k}: saved {stored.get(k)!r}, now {now.get(k)!r}" for k in keys if stored.get(k) != now.get(k)]
    more = f" (and {len(changes) - limit} more)" if len(changes) > limit else ""
    return "; ".join(changes[:limit]) + more


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
