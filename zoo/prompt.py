"""The one prompt renderer: chat messages -> the text a model is trained on and prompted with.

Training (``zoo train``), evaluation (``zoo eval``), ``zoo generate`` / ``zoo chat`` / ``zoo demo``, the
lmms-eval model and the Python API (``processor.apply_chat_template``) all render through
:func:`render_messages`, with the system prompt the model was trained with (``data.system_prompt``,
recorded in the checkpoint as ``MultiModal.system_prompt``), so no option is repeated at inference.

The system prompt has three states:

- :data:`TEMPLATE_DEFAULT` (``data.system_prompt`` absent): the tokenizer template decides; ChatML
  templates such as Qwen2's write "You are a helpful assistant." when the messages hold no system turn;
- ``None`` (``data.system_prompt: null``): no system turn, even where the template would write its
  default one (the template's default turn is rendered with a marker and cut off);
- a string: a system turn with that text.

A system message in the conversation itself always wins over the model's setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from zoo.errors import ConfigError, ZooError
from zoo.limits import brief

__all__ = [
    "MAX_SYSTEM_PROMPT_CHARS",
    "TEMPLATE_DEFAULT",
    "SystemPrompt",
    "describe_system_prompt",
    "parse_system_prompt",
    "render_messages",
    "require_chat_template",
    "system_prompt_from_record",
    "system_prompt_record",
]


class _TemplateDefault:
    """The marker for "the tokenizer template's own default system turn" (``data.system_prompt`` absent)."""

    _instance: _TemplateDefault | None = None

    def __new__(cls) -> _TemplateDefault:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "TEMPLATE_DEFAULT"

    def __reduce__(self) -> str:  # pickles (DataLoader workers) as the same marker
        return "TEMPLATE_DEFAULT"


TEMPLATE_DEFAULT: Final = _TemplateDefault()
SystemPrompt = str | None | _TemplateDefault
_MARKER = "\u2063zoo-system-marker\u2063"  # invisible separator: never in real text
MAX_SYSTEM_PROMPT_CHARS = 64 * 1024


def parse_system_prompt(value: Any, *, key: str = "data.system_prompt", source: str = "<config>") -> SystemPrompt:
    """Validate a ``system_prompt`` value from YAML or an argument: a string or ``None``."""
    if value is None or value is TEMPLATE_DEFAULT:
        return value
    if not isinstance(value, str):
        raise ConfigError(
            f"{source}: {key} = {brief(value)} has the wrong type; expected a string, or null for no system turn "
            "(leave the key out for the tokenizer template's default)"
        )
    if len(value) > MAX_SYSTEM_PROMPT_CHARS:
        raise ConfigError(
            f"{source}: {key} is {len(value):,} characters long; the limit is {MAX_SYSTEM_PROMPT_CHARS:,}"
        )
    return value


def describe_system_prompt(system_prompt: SystemPrompt) -> str:
    """A short human description (for ``zoo show`` / the demo's model card)."""
    if isinstance(system_prompt, _TemplateDefault):
        return "the chat template's default"
    if system_prompt is None:
        return "none"
    return repr(system_prompt[:80] + ("..." if len(system_prompt) > 80 else ""))


def system_prompt_record(system_prompt: SystemPrompt) -> dict[str, Any]:
    """The manifest's ``prompt`` entry: ``{"system": "default" | "none" | "text", "system_prompt"?}``."""
    if system_prompt is TEMPLATE_DEFAULT:
        return {"system": "default"}
    if system_prompt is None:
        return {"system": "none"}
    return {"system": "text", "system_prompt": system_prompt}


def system_prompt_from_record(record: Mapping[str, Any] | None) -> SystemPrompt:
    """Inverse of :func:`system_prompt_record` (a checkpoint without the entry: the template default)."""
    if not record:
        return TEMPLATE_DEFAULT
    mode = record.get("system")
    if mode == "none":
        return None
    if mode == "text":
        return str(record.get("system_prompt", ""))
    return TEMPLATE_DEFAULT


def render_messages(
    tokenizer: Any,
    messages: Sequence[Mapping[str, str]],
    *,
    system_prompt: SystemPrompt = TEMPLATE_DEFAULT,
    add_generation_prompt: bool = False,
) -> str:
    """The chat template's text for ``messages`` under ``system_prompt`` (see the module docstring).

    Example:
        >>> render_messages(tok, [{"role": "user", "content": "hi"}], system_prompt=None, add_generation_prompt=True)
        '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    turns = [dict(m) for m in messages]
    require_chat_template(tokenizer)
    has_system = bool(turns) and turns[0].get("role") == "system"
    if has_system or isinstance(system_prompt, _TemplateDefault):
        return _apply(tokenizer, turns, add_generation_prompt)
    if isinstance(system_prompt, str):
        return _apply(tokenizer, [{"role": "system", "content": system_prompt}, *turns], add_generation_prompt)
    return _without_system_turn(tokenizer, turns, add_generation_prompt)


def require_chat_template(tokenizer: Any) -> None:
    """Raise a ``ZooError`` when ``tokenizer`` has no chat template to render messages with."""
    if not getattr(tokenizer, "chat_template", None):
        raise ZooError(
            f"the tokenizer {type(tokenizer).__name__} has no chat template; chat messages need one "
            "(use an instruct/chat tokenizer or set tokenizer.chat_template)"
        )


def _apply(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _without_system_turn(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """Render with no system turn: a template that writes a default one gets a marked turn, then cut."""
    probe = [{"role": "user", "content": "x"}]
    marked_alone = _apply(tokenizer, [{"role": "system", "content": _MARKER}], False)
    header = marked_alone[: marked_alone.find(_MARKER)]  # what opens a system turn ("<|im_start|>system\n")
    if not header or not _apply(tokenizer, probe, False).startswith(header):
        return _apply(tokenizer, messages, add_generation_prompt)  # the template writes no default system turn
    full = _apply(tokenizer, [{"role": "system", "content": _MARKER}, *messages], add_generation_prompt)
    if not full.startswith(marked_alone):
        raise ZooError(
            "data.system_prompt = null: the tokenizer's chat template writes a default system turn that zoo cannot "
            "cut off (the system turn is not a prefix of the conversation); give a system_prompt string instead"
        )
    bos = getattr(tokenizer, "bos_token", None)
    lead = bos if isinstance(bos, str) and bos and marked_alone.startswith(bos) else ""  # keep the sequence start
    return lead + full[len(marked_alone) :]
