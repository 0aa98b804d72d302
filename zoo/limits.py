"""Bounds on untrusted input: how large a value zoo accepts, and how much of one an error message shows.

Every message that quotes a user's value goes through :func:`brief`, so a value built to be huge (a
billion-laughs YAML, a 5000-digit integer, a megabyte string) can never make the message itself
expensive. The numeric limits here are the ones zoo enforces before it allocates anything.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

from zoo.errors import ConfigError

__all__ = [
    "MAX_CONFIG_INT",
    "MAX_IMAGE_SIDE",
    "MAX_RANDOM_INIT_BYTES",
    "InputLimitError",
    "brief",
    "check_generation_options",
    "check_int_range",
    "check_positive_finite",
    "format_bytes",
]

MAX_CONFIG_INT = 2**31 - 1  # any integer option past this is a typo or an attack, never a setting
MAX_IMAGE_SIDE = 4096  # pixels; no registered tower has position embeddings for more
MAX_RANDOM_INIT_BYTES = 2 * 1024**3  # a build that would allocate more random weights needs --meta


class InputLimitError(ConfigError):
    """An input is past a size, depth, count or range limit; refused before it is used."""


class _BoundedRepr(reprlib.Repr):
    """``reprlib`` with small caps, and integers shown by size once they are long."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = 60
        self.maxother = 60
        self.maxlong = 40
        for name in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
            setattr(self, name, 6)

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # str() of a huge int is itself slow (and refused past 4300 digits)
            return f"<integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_REPR = _BoundedRepr()


def brief(value: Any) -> str:
    """A ``repr`` of ``value`` bounded to about 80 characters whatever the value's size or nesting.

    Example:
        >>> brief("x" * 1000)[:12]
        "'xxxxxxxxxxx"
    """
    try:
        return _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not replace the real error
        return f"<{type(value).__name__}>"


def check_int_range(value: int, low: int, high: int, key: str, *, why: str = "") -> int:
    """``value`` if ``low <= value <= high``, else an ``InputLimitError`` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        tail = f" ({why})" if why else ""
        raise InputLimitError(f"{key} = {brief(value)} is out of range; expected an integer in [{low}, {high}]{tail}")
    return value


def check_positive_finite(value: float, key: str) -> float:
    """``value`` if it is a finite number > 0, else a ``ConfigError`` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} = {brief(value)} is not valid; expected a finite number > 0")
    return float(value)


def check_generation_options(
    *,
    max_new_tokens: int | None,
    temperature: float | None = None,
    top_p: float | None = None,
    context: int | None = None,
    prompt_tokens: int = 0,
    prefix: str = "--",
    top_k: int | None = None,
    repetition_penalty: float | None = None,
    eos_token_id: list[int] | None = None,
) -> None:
    """Refuse generation options that mean nothing, before any model runs.

    Args:
        max_new_tokens: at least 1; with ``context``, at most ``context - prompt_tokens`` (``None``: not given,
            the model's generation config decides).
        temperature: finite and > 0 (``None``: not used).
        top_p: in ``(0, 1]`` (``None``: not used).
        top_k: an integer >= 0, 0 turning top-k filtering off (``None``: not used).
        repetition_penalty: finite and > 0 (``None``: not used).
        eos_token_id: token ids >= 0 (``None``: not used).
        context: the LM's context length (``max_position_embeddings``), if known.
        prompt_tokens: tokens of the prompt, image positions included.
        prefix: ``--`` names options as CLI flags, ``""`` as keyword arguments.
    """

    def name(option: str) -> str:
        return prefix + option.replace("_", "-") if prefix else option

    if max_new_tokens is not None and (
        isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1
    ):
        raise ConfigError(f"{name('max_new_tokens')} = {brief(max_new_tokens)} is not valid; expected an integer >= 1")
    if max_new_tokens is not None and context is not None:
        room = context - prompt_tokens
        if room < 1:
            raise InputLimitError(
                f"the prompt is {prompt_tokens} tokens (image positions included) and the model's context is "
                f"{context}; nothing can be generated; shorten the prompt or use fewer images"
            )
        if max_new_tokens > room:
            raise InputLimitError(
                f"{name('max_new_tokens')} = {brief(max_new_tokens)} goes past the model's context: "
                f"{prompt_tokens} prompt tokens + {max_new_tokens} > {context}; use at most {room}"
            )
    if temperature is not None:
        if isinstance(temperature, bool) or not math.isfinite(temperature) or temperature <= 0:
            raise ConfigError(
                f"{name('temperature')} = {brief(temperature)} is not valid; expected a finite number > 0"
            )
    if top_p is not None:
        if isinstance(top_p, bool) or not (0 < top_p <= 1):  # NaN fails both comparisons
            raise ConfigError(f"{name('top_p')} = {brief(top_p)} is not valid; expected a number in (0, 1]")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ConfigError(f"{name('top_k')} = {brief(top_k)} is not valid; expected an integer >= 0 (0: no top-k)")
    if repetition_penalty is not None:
        check_positive_finite(repetition_penalty, name("repetition_penalty"))
    for token in eos_token_id or ():
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise ConfigError(f"{name('eos_token_id')} = {brief(token)} is not valid; expected a token id >= 0")


def format_bytes(count: float) -> str:
    """``count`` bytes as a short human string (``28.4 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GiB"
