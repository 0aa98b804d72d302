"""Generation settings of a model directory (``generation_config.json``): read safely, checked, applied.

A chat model's directory carries its sampling settings in ``generation_config.json`` (Qwen-7B-Chat:
``do_sample``, ``top_p 0.8``, ``top_k 0``, ``repetition_penalty 1.1``, ``max_new_tokens 512`` and its
``eos_token_id``). transformers reads that file without checking a value (``"top_p": "abc"`` is kept and
fails, or is silently ignored, at generation time) and keeps any key it does not know. zoo reads it here
instead: a regular file of at most :data:`MAX_GENERATION_CONFIG_BYTES`, a JSON object, of which only the
:data:`FIELDS` below are kept (other keys, such as Qwen-1's ``chat_format`` or ``max_window_size``, are
dropped) and each kept value is checked, a bad one refused with a ``CheckpointError`` naming the file and
the field. The settings become the LM's ``generation_config`` (the defaults of ``model.generate`` and of
every command that generates); an explicit option or keyword argument overrides each of them.

Where they come from and go to: an LM's ``model.lm.checkpoint`` directory (transformers layout or a
Qwen-1 directory), a Llava / LLaVA-NeXT directory on import; zoo's checkpoint records the LM's settings in
the manifest field ``generation_config`` and applies them on load; a Llava export writes them as its
``generation_config.json``.

No torch here: plain data checks, so that the manifest validator can use them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError, ConfigError
from zoo.sdk.limits import MAX_CONFIG_INT, brief

__all__ = [
    "FIELDS",
    "GENERATION_CONFIG",
    "MAX_GENERATION_CONFIG_BYTES",
    "apply_generation_settings",
    "check_generation_settings",
    "default_options",
    "generation_settings",
    "read_generation_config",
]

GENERATION_CONFIG = "generation_config.json"
MAX_GENERATION_CONFIG_BYTES = 1024 * 1024
_MAX_EOS_IDS = 64


def _integer(low: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_CONFIG_INT
        return None if ok else f"an integer >= {low}"

    return check


def _number(low: float | None, high: float | None, *, low_open: bool = False) -> Callable[[Any], str | None]:
    left = "(" if low_open else "["
    text = "a finite number" if low is None else f"a number in {left}{low:g}, {'inf' if high is None else f'{high:g}'}]"

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return text
        if low is not None and (value < low or (low_open and value == low)):
            return text
        if high is not None and value > high:
            return text
        return None

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _token_ids(value: Any) -> str | None:
    expected = f"a token id (an integer >= 0) or a list of 1 to {_MAX_EOS_IDS} of them"
    ids = value if isinstance(value, list) else [value]
    if not ids or len(ids) > _MAX_EOS_IDS:
        return expected
    return None if all(_integer(0)(i) is None for i in ids) else expected


# the GenerationConfig fields zoo keeps, each with its check (None: the value is fine; else what is expected)
FIELDS: dict[str, Callable[[Any], str | None]] = {
    "max_new_tokens": _integer(1),
    "min_new_tokens": _integer(0),
    "max_length": _integer(1),
    "min_length": _integer(0),
    "do_sample": _boolean,
    "num_beams": _integer(1),
    "temperature": _number(0.0, None),
    "top_k": _integer(0),
    "top_p": _number(0.0, 1.0, low_open=True),
    "min_p": _number(0.0, 1.0),
    "typical_p": _number(0.0, 1.0, low_open=True),
    "repetition_penalty": _number(0.0, None, low_open=True),
    "length_penalty": _number(None, None),
    "no_repeat_ngram_size": _integer(0),
    "bos_token_id": _integer(0),
    "pad_token_id": _integer(0),
    "eos_token_id": _token_ids,
}
_TOKEN_FIELDS = ("bos_token_id", "pad_token_id", "eos_token_id")


def check_generation_settings(
    data: Mapping[str, Any], where: str, *, vocab_size: int | None = None, keep_none: bool = False
) -> dict[str, Any]:
    """The known fields of ``data`` (a parsed ``generation_config.json``), each checked.

    Args:
        data: the JSON object.
        where: what to name in an error (``'DIR/generation_config.json'``, ``'manifest field generation_config'``).
        vocab_size: when known, token ids must be below it.
        keep_none: keep fields whose value is ``null`` (a manifest records unset fields as ``null``).

    Raises:
        CheckpointError: ``{where}: {field} = {value}: expected ...``.
    """
    settings: dict[str, Any] = {}
    for field, check in FIELDS.items():
        if field not in data:
            continue
        value = data[field]
        if value is None:
            if keep_none:
                settings[field] = None
            continue
        problem = check(value)
        if problem is None and field in _TOKEN_FIELDS and vocab_size is not None:
            ids = value if isinstance(value, list) else [value]
            if any(i >= vocab_size for i in ids):
                problem = f"token ids below the vocabulary size {vocab_size}"
        if problem is not None:
            raise CheckpointError(f"{where}: {field} = {brief(value)}: expected {problem}")
        settings[field] = list(value) if isinstance(value, list) else value
    if settings.get("do_sample") and settings.get("temperature") == 0:
        raise CheckpointError(f"{where}: temperature = 0 with do_sample = true: sampling needs a temperature > 0")
    return settings


def read_generation_config(
    directory: str | os.PathLike, *, where: str | None = None, vocab_size: int | None = None
) -> dict[str, Any]:
    """The checked settings of ``directory/generation_config.json`` (``{}`` when there is none).

    Example:
        >>> read_generation_config("Qwen-7B-Chat/")
        {'max_new_tokens': 512, 'do_sample': True, 'top_k': 0, 'top_p': 0.8, 'repetition_penalty': 1.1, ...}
    """
    from zoo.sdk.yaml_io import read_text_file

    file = Path(directory) / GENERATION_CONFIG
    if not os.path.lexists(file):
        return {}
    label = f"{where}: {GENERATION_CONFIG}" if where else str(file)
    try:
        text = read_text_file(file, what="generation config", limit=MAX_GENERATION_CONFIG_BYTES)
    except ConfigError as error:
        raise CheckpointError(str(error)) from error
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{label} is not valid JSON: {str(error)[:200]}") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"{label} is a JSON {type(data).__name__}, not an object")
    return check_generation_settings(data, label, vocab_size=vocab_size)


def generation_settings(generation_config: Any) -> dict[str, Any]:
    """Every known field of a transformers ``GenerationConfig``, unset ones as ``None`` (what a checkpoint records)."""
    settings = {}
    for field in FIELDS:
        value = getattr(generation_config, field, None)
        settings[field] = list(value) if isinstance(value, list | tuple) else value
    return settings


def apply_generation_settings(generation_config: Any, settings: Mapping[str, Any]) -> None:
    """Set ``settings`` (checked ones) on a transformers ``GenerationConfig``, in place."""
    for field, value in settings.items():
        if field in FIELDS:
            setattr(generation_config, field, list(value) if isinstance(value, list) else value)
    if settings and hasattr(generation_config, "_from_model_config"):
        generation_config._from_model_config = False  # its own settings now, not the model config's defaults


def default_options(generation_config: Any, explicit: Mapping[str, Any], *, max_new_tokens: int) -> dict[str, Any]:
    """The keyword arguments of ``model.generate`` for a command: the options the user gave (not ``None``);
    the model's generation config supplies the rest, and ``max_new_tokens`` falls back to the command's
    own default when neither sets it.

    Example:
        >>> default_options(model.lm.model.generation_config, {"top_p": 0.5, "top_k": None}, max_new_tokens=32)
        {'top_p': 0.5, 'max_new_tokens': 32}
    """
    options = {key: value for key, value in explicit.items() if value is not None}
    if "max_new_tokens" not in options and getattr(generation_config, "max_new_tokens", None) is None:
        options["max_new_tokens"] = max_new_tokens
    return options
