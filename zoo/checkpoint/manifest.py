"""The checkpoint manifest: its constants, and a validator that turns any malformed field into one error.

A manifest comes from others, so :func:`validate_manifest` checks every field the loader reads (types,
ranges, relative paths confined to the checkpoint, every weight file listed with its size and hash)
before anything acts on it. Each problem is one :class:`~zoo.errors.CheckpointError` naming the field
by its path (``components.lm.weights.file``), the bad value (shortened) and what is expected. Parsing
is bounded: a manifest larger than :data:`MAX_MANIFEST_BYTES` or nested deeper than
:data:`MAX_DEPTH` is refused before ``json.loads`` can exhaust memory or the stack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from zoo.core.prompt import MAX_END_TOKEN_CHARS, MAX_SYSTEM_PROMPT_CHARS
from zoo.errors import CheckpointError
from zoo.sdk.generation_config import check_generation_settings
from zoo.sdk.safe_paths import member_name
from zoo.sdk.specs import SLOTS

__all__ = [
    "ADAPTER_DIR",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "MAX_DEPTH",
    "MAX_MANIFEST_BYTES",
    "SLOTS",
    "TOKENIZER_DIR",
    "parse_manifest",
    "validate_manifest",
]

FORMAT = "zoo.checkpoint"  # data, not a module path: every checkpoint since 0.1.0 says this
FORMAT_VERSION = 2  # 2: generation id, sha256 per file; 1 (sizes only) is still read
MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
ADAPTER_DIR = "lm_adapter"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GENERATION = re.compile(r"[0-9a-f]{8,64}")


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """Decode and validate manifest bytes; every failure is one CheckpointError naming ``where``."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise CheckpointError(f"{where}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes; not a zoo manifest")
    depth = _max_depth(data)
    if depth > MAX_DEPTH:
        raise CheckpointError(f"{where}: the manifest nests {depth} levels deep (at most {MAX_DEPTH})")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{where}: the manifest is not valid JSON: {str(error)[:200]}") from error
    return validate_manifest(manifest, where)


def _max_depth(data: bytes) -> int:
    """Bracket depth of JSON text, ignoring brackets inside strings (cheap, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


class _Checker:
    """Typed access to a manifest, raising one CheckpointError naming the field path."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, value: Any, expected: str) -> CheckpointError:
        text = repr(value)
        text = text if len(text) <= 80 else text[:77] + "..."
        return CheckpointError(f"{self.where}: manifest field {field} = {text}: expected {expected}")

    def get(self, data: Mapping[str, Any], key: str, field: str, kind: Any, expected: str, *, optional=False) -> Any:
        if key not in data:
            if optional:
                return None
            raise CheckpointError(f"{self.where}: manifest field {field} is missing (expected {expected})")
        value = data[key]
        if optional and value is None:
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
            raise self.fail(field, value, expected)
        return value

    def integer(self, data: Mapping[str, Any], key: str, field: str, *, low: int = 0, optional=False) -> int | None:
        value = self.get(data, key, field, int, f"an integer >= {low}", optional=optional)
        if value is not None and value < low:
            raise self.fail(field, value, f"an integer >= {low}")
        return value

    def text(self, data: Mapping[str, Any], key: str, field: str, *, optional=False) -> str | None:
        return self.get(data, key, field, str, "a string", optional=optional)

    def mapping(self, data: Mapping[str, Any], key: str, field: str, *, optional=False) -> dict[str, Any] | None:
        return self.get(data, key, field, dict, "a JSON object", optional=optional)

    def member(self, data: Mapping[str, Any], key: str, field: str) -> str:
        return member_name(self.get(data, key, field, str, "a relative file name"), field, self.where)


def validate_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """Check every field the loader reads; return the manifest unchanged or raise one CheckpointError."""
    check = _Checker(where)
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{where}: the manifest is a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f'{where}: not a zoo checkpoint manifest (expected "format": {FORMAT!r})')
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise check.fail("format_version", version, f"an integer from 1 to {FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: format_version {version} is newer than the newest this zoo reads ({FORMAT_VERSION}); it "
            f"was written by zoo {str(manifest.get('zoo_version'))[:40]!r}: upgrade zoo to load it"
        )
    generation = check.text(manifest, "generation", "generation", optional=version < 2)
    if generation is not None and not _GENERATION.fullmatch(generation):
        raise check.fail("generation", generation, "a hexadecimal id")
    check.mapping(manifest, "model", "model")
    check.mapping(manifest, "contract", "contract")
    check.text(manifest, "image_token", "image_token", optional=True)
    check.integer(manifest, "image_token_id", "image_token_id", optional=True)
    check.integer(manifest, "tokens_per_image", "tokens_per_image", optional=True)
    files = _files(check, manifest, version)
    components = check.mapping(manifest, "components", "components") or {}
    needed: list[tuple[str, str]] = []
    for kind in SLOTS:
        record = check.mapping(components, kind, f"components.{kind}") or {}
        needed += _component(check, record, f"components.{kind}")
    prompt = check.mapping(manifest, "prompt", "prompt", optional=True) or {}
    system = check.text(prompt, "system", "prompt.system", optional=True)
    if system is not None and system not in ("default", "none", "text"):
        raise check.fail("prompt.system", system, "'default', 'none' or 'text'")
    text = check.text(prompt, "system_prompt", "prompt.system_prompt", optional=system != "text")
    if text is not None and len(text) > MAX_SYSTEM_PROMPT_CHARS:
        raise check.fail("prompt.system_prompt", text, f"at most {MAX_SYSTEM_PROMPT_CHARS:,} characters")
    generation_config = check.mapping(manifest, "generation_config", "generation_config", optional=True)
    if generation_config is not None:
        check_generation_settings(generation_config, f"{where}: manifest field generation_config", keep_none=True)
    end_token = check.text(prompt, "end_token", "prompt.end_token", optional=True)
    if end_token is not None and not (end_token.strip() and len(end_token) <= MAX_END_TOKEN_CHARS):
        raise check.fail("prompt.end_token", end_token, f"a token of at most {MAX_END_TOKEN_CHARS} characters")
    tokenizer = check.mapping(manifest, "tokenizer", "tokenizer", optional=True) or {}
    if check.get(tokenizer, "saved", "tokenizer.saved", bool, "true or false", optional=True):
        needed.append(("tokenizer.dir", check.member(tokenizer, "dir", "tokenizer.dir") + "/"))
    for field, name in needed:
        present = any(f.startswith(name) for f in files) if name.endswith("/") else name in files
        if not present:
            raise CheckpointError(f"{where}: manifest field {field} = {name.rstrip('/')!r} is not listed in 'files'")
    return manifest


def _files(check: _Checker, manifest: Mapping[str, Any], version: int) -> dict[str, Any]:
    files = check.mapping(manifest, "files", "files") or {}
    for name, entry in files.items():
        field = f"files[{name[:60]!r}]"
        member_name(name, "files", check.where)
        if name == MANIFEST:
            raise check.fail(field, entry, "no entry for the manifest itself")
        if version < 2 and isinstance(entry, int) and not isinstance(entry, bool):
            entry = {"size": entry}
        if not isinstance(entry, dict):
            raise check.fail(field, entry, '{"size": bytes, "sha256": hex digest}')
        check.integer(entry, "size", f"{field}.size")
        digest = check.text(entry, "sha256", f"{field}.sha256", optional=version < 2)
        if digest is not None and not _SHA256.fullmatch(digest):
            raise check.fail(f"{field}.sha256", digest, "64 lowercase hexadecimal digits")
    return files


def _component(check: _Checker, record: Mapping[str, Any], field: str) -> list[tuple[str, str]]:
    """Validate one component record; the files it needs, with the field naming each."""
    for key in ("name", "spec", "plugin"):
        check.text(record, key, f"{field}.{key}", optional=key != "name")
    check.text(record, "package", f"{field}.package", optional=True)
    check.text(record, "train", f"{field}.train", optional=True)
    check.mapping(record, "config", f"{field}.config", optional=True)
    check.mapping(record, "contract", f"{field}.contract", optional=True)
    weights = check.mapping(record, "weights", f"{field}.weights") or {}
    mode = weights.get("mode")
    needed = []
    if mode == "saved":
        needed.append((f"{field}.weights.file", check.member(weights, "file", f"{field}.weights.file")))
        check.integer(weights, "tensors", f"{field}.weights.tensors", optional=True)
    elif mode == "referenced":
        check.text(weights, "checkpoint", f"{field}.weights.checkpoint")
        fingerprint = check.mapping(weights, "fingerprint", f"{field}.weights.fingerprint", optional=True) or {}
        for name in fingerprint:
            check.integer(fingerprint, name, f"{field}.weights.fingerprint[{name[:60]!r}]")
    else:
        raise check.fail(f"{field}.weights.mode", mode, "'saved' or 'referenced'")
    base = check.mapping(record, "base", f"{field}.base", optional=True)
    if base is not None:  # saved self-contained: the base's non-weight files inside, every weight saved
        if mode != "saved":
            raise check.fail(f"{field}.weights.mode", mode, "'saved' (the component has its base inside)")
        check.text(base, "from", f"{field}.base.from", optional=True)
        if base.get("dir") is not None:
            needed.append((f"{field}.base.dir", check.member(base, "dir", f"{field}.base.dir") + "/"))
    rows = check.mapping(record, "added_rows", f"{field}.added_rows", optional=True)
    if rows is not None:
        needed.append((f"{field}.added_rows.file", check.member(rows, "file", f"{field}.added_rows.file")))
        start = check.integer(rows, "from", f"{field}.added_rows.from") or 0
        check.integer(rows, "to", f"{field}.added_rows.to", low=start + 1)
    lora = check.mapping(record, "lora", f"{field}.lora", optional=True)
    if lora is not None:
        directory = check.member(lora, "dir", f"{field}.lora.dir")
        needed.append((f"{field}.lora.dir", directory + "/"))
        check.integer(lora, "r", f"{field}.lora.r", low=1)
        targets = check.get(lora, "targets", f"{field}.lora.targets", list, "a list of module names", optional=True)
        if targets is not None and not all(isinstance(t, str) for t in targets):
            raise check.fail(f"{field}.lora.targets", targets, "a list of module names")
    return needed
