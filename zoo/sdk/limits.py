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
    "ARCH_LIMITS",
    "MAX_CHAT_TEMPLATE_CHARS",
    "MAX_CONFIG_INT",
    "MAX_IMAGE_SIDE",
    "MAX_MODEL_PARAMS",
    "MAX_PINPOINTS",
    "MAX_RANDOM_INIT_BYTES",
    "MAX_RENDERED_PROMPT_CHARS",
    "MAX_TEMPLATE_SECONDS",
    "InputLimitError",
    "brief",
    "check_arch_sizes",
    "check_generation_options",
    "check_int_range",
    "check_positive_finite",
    "format_bytes",
]

MAX_CONFIG_INT = 2**31 - 1  # any integer option past this is a typo or an attack, never a setting
MAX_IMAGE_SIDE = 4096  # pixels; no registered tower has position embeddings for more
MAX_RANDOM_INIT_BYTES = 2 * 1024**3  # a build that would allocate more random weights needs --meta
MAX_PINPOINTS = 256  # any-res candidate resolutions (LLaVA-NeXT ships 5, OneVision 36)
MAX_CHAT_TEMPLATE_CHARS = 1024**2  # a chat template's source (published ones are a few KiB)
MAX_RENDERED_PROMPT_CHARS = 16 * 1024**2  # what one rendering of a chat template may produce
MAX_TEMPLATE_SECONDS = 10.0  # wall time one rendering of a chat template may take
MAX_MODEL_PARAMS = 10**13  # an architecture estimated past this is refused before anything is built

# Architecture sizes read from configs, manifests and config.json files, checked before any config object
# or module is built (a transformers config with a million layers takes seconds to construct, its model
# minutes on meta). Each group is the field names transformers, timm and open_clip use for that quantity;
# the bounds are far past every released model (<= 126 layers, width 16384, 128 heads, 262k tokens).
ARCH_LIMITS: dict[str, tuple[tuple[str, ...], int]] = {
    "layers": (("num_hidden_layers", "num_layers", "n_layer", "n_layers", "depth", "layers"), 1024),
    "width": (("hidden_size", "d_model", "n_embd", "embed_dim", "width", "kv_lora_rank", "q_lora_rank"), 65536),
    "ffn width": (("intermediate_size", "ffn_dim", "n_inner", "moe_intermediate_size", "mlp_dim"), 262144),
    "heads": (("num_attention_heads", "num_key_value_heads", "n_head", "num_heads", "heads"), 1024),
    "head width": (("head_dim", "head_width", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"), 4096),
    "vocabulary": (("vocab_size",), 2**22),
    "positions": (("max_position_embeddings", "n_positions", "context_length"), 2**24),
    "experts": (("num_experts", "num_local_experts", "n_routed_experts"), 1024),
    "image side": (("image_size", "img_size"), MAX_IMAGE_SIDE),
    "patch side": (("patch_size",), MAX_IMAGE_SIDE),
    "channels": (("num_channels", "in_chans"), 64),
}
_ARCH_FIELDS = {field: (group, limit) for group, (fields, limit) in ARCH_LIMITS.items() for field in fields}
_SUB_CONFIGS = ("text_config", "vision_config", "vision_cfg", "text_cfg")


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


def check_int_range(value: int, low: int, high: int, key: str, *, why: str = "", field: str | None = None) -> int:
    """``value`` if ``low <= value <= high``, else an ``InputLimitError`` naming ``key`` (``field``: the bare YAML
    key path, for ``zoo validate``, where ``key`` also names the file)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        tail = f" ({why})" if why else ""
        raise InputLimitError(
            f"{key} = {brief(value)} is out of range; expected an integer in [{low}, {high}]{tail}", key=field
        )
    return value


def check_positive_finite(value: float, key: str, *, field: str | None = None) -> float:
    """``value`` if it is a finite number > 0, else a ``ConfigError`` naming ``key`` (``field`` as above)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key} = {brief(value)} is not valid; expected a finite number > 0", key=field)
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


def check_arch_sizes(arch: Any, key: str, *, depth: int = 0) -> None:
    """Refuse architecture sizes past :data:`ARCH_LIMITS`, or heads that do not divide the width, before building.

    ``arch`` is a config as plain data (a YAML / manifest ``arch``, a ``config.json``) or a transformers
    config object (its attributes are read, nothing is serialised); sub-configs (``text_config``,
    ``vision_config``) are checked under their own key. Only the fields present are checked. A size out
    of range is an ``InputLimitError`` with an estimate of what the architecture would cost; heads that
    do not divide the width (and no ``head_dim``) a ``ConfigError`` naming both keys.

    Example:
        >>> check_arch_sizes({"num_hidden_layers": 1000000, "hidden_size": 64}, "model.lm.arch")
        Traceback (most recent call last):
        zoo.sdk.limits.InputLimitError: model.lm.arch.num_hidden_layers = 1000000 is out of range; ...
    """
    fields = arch if isinstance(arch, dict) else getattr(arch, "__dict__", {})
    if not isinstance(fields, dict):
        return
    for field, value in fields.items():
        bound = _ARCH_FIELDS.get(field) if isinstance(field, str) else None
        if bound is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue  # a wrong type is the library's to name; a tuple (open_clip's ResNet layers) is not a size
        group, limit = bound
        low = 0 if field in ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim") else 1
        if not low <= value <= limit:  # NaN fails too
            cost = _estimate(fields)
            tail = f"; as given it would be {cost}" if cost and value > limit else ""
            raise InputLimitError(
                f"{_join(key, field)} = {brief(value)} is out of range; expected an integer in [{low}, {limit:,}] "
                f"(a bound on {group} far past every released model){tail}"
            )
    _check_heads(fields, key)
    estimate = _parameters(fields)
    if estimate > MAX_MODEL_PARAMS:
        raise InputLimitError(
            f"{key}: this architecture would have about {_count(estimate)} parameters "
            f"({format_bytes(2 * estimate)} in bfloat16), past the limit of {_count(MAX_MODEL_PARAMS)}"
        )
    if depth < 2:
        for sub in _SUB_CONFIGS:
            if sub in fields and fields[sub] is not None:
                check_arch_sizes(fields[sub], _join(key, sub), depth=depth + 1)


def _join(key: str, field: str) -> str:
    """``model.lm.arch.hidden_size``, or ``dir/config.json: hidden_size`` for a file."""
    return f"{key}: {field}" if key.endswith(".json") else f"{key}.{field}"


def _check_heads(fields: dict[str, Any], key: str) -> None:
    def number(name: str | None) -> int | None:
        value = fields.get(name) if name else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    width = number("hidden_size") or number("embed_dim") or number("width")
    width_key = next(k for k in ("hidden_size", "embed_dim", "width", "") if not k or number(k))
    heads_key = next((k for k in ("num_attention_heads", "num_heads", "n_head") if number(k)), "")
    heads = number(heads_key)
    if width and heads and fields.get("head_dim") is None and "qk_nope_head_dim" not in fields and width % heads:
        raise ConfigError(
            f"{_join(key, width_key)} = {width} is not a multiple of {_join(key, heads_key)} = {heads}: each attention head "
            f"gets {width_key} / {heads_key} features; use a width such as {width - width % heads or heads} "
            "(or set head_dim where the model has one)"
        )
    kv = number("num_key_value_heads")
    if heads and kv and heads % kv:
        raise ConfigError(
            f"{_join(key, heads_key)} = {heads} is not a multiple of {_join(key, 'num_key_value_heads')} = {kv}: grouped-query "
            "attention shares each key/value head among a whole number of query heads"
        )


def _parameters(fields: dict[str, Any]) -> int:
    """A rough parameter count of a transformer of these sizes (0 when the sizes are not given)."""

    def number(*names: str, default: int = 0) -> int:
        for name in names:
            value = fields.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return default

    layers = number(*ARCH_LIMITS["layers"][0])
    width = number(*ARCH_LIMITS["width"][0][:5])
    if not layers or not width:
        return 0
    ffn = number(*ARCH_LIMITS["ffn width"][0], default=4 * width)
    experts = number(*ARCH_LIMITS["experts"][0], default=1)
    vocab = number("vocab_size")
    side, patch = number("image_size", "img_size"), number("patch_size", default=1)
    positions = (side // patch) ** 2 if side else 0
    return layers * (4 * width * width + 3 * width * ffn * experts) + (2 * vocab + positions) * width


def _estimate(fields: dict[str, Any]) -> str:
    count = _parameters(fields)
    return f"about {_count(count)} parameters ({format_bytes(2 * count)} in bfloat16)" if count else ""


def _count(value: int) -> str:
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6)):
        if value >= size:
            return f"{value / size:,.1f}{unit}"
    return f"{value:,}"


def format_bytes(count: float) -> str:
    """``count`` bytes as a short human string (``28.4 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:,.1f} TiB"
