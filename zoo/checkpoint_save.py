"""Saving a ``MultiModal`` as a zoo checkpoint directory (see :mod:`zoo.checkpoint` for the layout).

The directory is written through :func:`zoo.atomic.atomic_directory` (temporary sibling, fsync, swap;
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
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from zoo.atomic import atomic_directory
from zoo.errors import CheckpointError
from zoo.manifest import ADAPTER_DIR, FORMAT, FORMAT_VERSION, MANIFEST, MAX_MANIFEST_BYTES, SLOTS, TOKENIZER_DIR
from zoo.snapshot import GENERATION_KEY
from zoo.state_dict import canonical_state

if TYPE_CHECKING:
    from peft import LoraConfig

    from zoo.interfaces import LanguageModel
    from zoo.multimodal import MultiModal

__all__ = ["checkpoint_files", "file_records", "save"]

PATH_OPTIONS = ("checkpoint", "tokenizer")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def save(model: MultiModal, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save ``model`` (a ``MultiModal``) as a self-describing checkpoint directory, atomically.

    Args:
        model: the composed model.
        directory: where to write. A zoo checkpoint there is replaced once the new one is complete;
            files in it that zoo did not write are kept. Any other non-empty directory is refused.
        overwrite: write into a directory that is not a zoo checkpoint (its files are kept) and
            replace user files whose names the checkpoint uses (with a warning naming them).

    Returns:
        The checkpoint directory.

    Example:
        >>> zoo.checkpoint.save(model, "runs/ckpt")          # or zoo.save(model, "runs/ckpt")
        >>> same = zoo.load("runs/ckpt")
    """
    from zoo.builder import plan

    target = Path(directory)
    checked = plan(model.composition)  # specs, plugins and the LM's vocabulary before tokens were added (meta)
    config_data = _absolute_paths(model.composition.to_dict())
    generation = uuid.uuid4().hex
    components: dict[str, Any] = {}
    with atomic_directory(target, owned_files=checkpoint_files, what="zoo checkpoint", overwrite=overwrite) as tmp:
        for kind in SLOTS:
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
            "contract": _jsonable(model.contract.to_dict()),
            "components": components,
            "tokenizer": tokenizer,
            "files": file_records(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return target


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


def _save_component(model: MultiModal, kind: str, checked: Any, tmp: Path, generation: str) -> dict[str, Any]:
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
        _write_safetensors(tensors, tmp / file, generation)
        record["weights"] = {"mode": "saved", "file": file, "tensors": len(tensors), "why": reason}
    else:
        path = Path(checkpoint).expanduser().resolve()
        record["weights"] = {"mode": "referenced", "checkpoint": str(path), "fingerprint": _fingerprint(path)}
        if kind == "lm":
            record["added_rows"] = _save_added_rows(module, checked.meta_modules["lm"].vocab_size, tmp, generation)
    if lora:
        record["lora"] = _save_adapter(module, tmp)
    return record


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


def _write_safetensors(tensors: Mapping[str, torch.Tensor], path: Path, generation: str) -> None:
    from safetensors.torch import save_file

    try:
        save_file(dict(tensors), str(path), metadata={"format": "pt", "writer": FORMAT, GENERATION_KEY: generation})
    except Exception as error:  # SafetensorError wraps a full disk or a file-size limit: an OSError to callers
        from zoo.weights import os_error_of

        failure = os_error_of(error, path)
        if failure is None:
            raise
        raise failure from error


def _package_of(plugin: str) -> str | None:
    """The pip distribution that installed ``plugin`` (an entry point), if the registry knows it."""
    from zoo.registry import loaded_registry

    registry = loaded_registry()
    if registry is None:
        return None
    return next((info.distribution for info in registry.host.loaded if info.name == plugin and info.distribution), None)


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
    for key in PATH_OPTIONS:
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
