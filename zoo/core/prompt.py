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

The end token (``data.end_token``, recorded as ``MultiModal.end_token``) decides how an assistant turn
ends. ``None`` (the key absent): as the template writes it (``<|im_end|>`` and a newline for ChatML). A
token string such as ``<|endoftext|>``: every assistant turn is its content followed directly by that
token, which replaces what the template writes after the content (its end-of-turn marker and the
whitespace after it). That is how the VLM-learning reference trains (answer + ``<|endoftext|>``); the
same rendering applies to the assistant turns of a chat history at inference, and generation stops
at the token (``MultiModal.generate``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from zoo.errors import ConfigError, ZooError, suggest
from zoo.sdk.limits import brief

__all__ = [
    "MAX_END_TOKEN_CHARS",
    "MAX_SYSTEM_PROMPT_CHARS",
    "TEMPLATE_DEFAULT",
    "Rendered",
    "SystemPrompt",
    "check_end_token",
    "describe_system_prompt",
    "end_token_from_record",
    "parse_end_token",
    "parse_system_prompt",
    "render_conversation",
    "render_messages",
    "require_chat_template",
    "system_prompt_from_record",
    "system_prompt_record",
    "with_stop_id",
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
MAX_END_TOKEN_CHARS = 256


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


def parse_end_token(value: Any, *, key: str = "data.end_token", source: str = "<config>") -> str | None:
    """Validate an ``end_token`` value from YAML or a manifest: a token string, or ``None`` (the template's)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{source}: {key} = {brief(value)} is not valid; expected a token of the tokenizer such as "
            "'<|endoftext|>' (leave the key out for the template's end-of-turn marker)"
        )
    if len(value) > MAX_END_TOKEN_CHARS:
        raise ConfigError(f"{source}: {key} is {len(value):,} characters long; the limit is {MAX_END_TOKEN_CHARS}")
    return value


def check_end_token(tokenizer: Any, end_token: str | None, *, key: str = "data.end_token") -> int | None:
    """The id of ``end_token`` in ``tokenizer`` (``None`` for ``None``); a ``ConfigError`` when it is not one token.

    The token must be in the vocabulary and the text must encode to exactly that id, so that the rendered
    turn ends with it (a special token such as ``<|endoftext|>`` does; a word split by the BPE does not).
    """
    if end_token is None:
        return None
    vocabulary = tokenizer.get_vocab()
    token_id = vocabulary.get(end_token)
    encoded = tokenizer(end_token, add_special_tokens=False)["input_ids"] if token_id is not None else []
    if token_id is None or list(encoded) != [token_id]:
        specials = [str(t) for t in getattr(tokenizer, "all_special_tokens", [])]
        specials += [str(t) for t in getattr(tokenizer, "get_added_vocab", dict)()]
        problem = (
            "is not a token of" if token_id is None else f"is token {token_id} but encodes as {list(encoded)[:8]} by"
        )
        raise ConfigError(
            f"{key} = {brief(end_token)} {problem} the tokenizer {type(tokenizer).__name__}; "
            f"{suggest(end_token, specials or vocabulary)}"
        )
    return int(token_id)


def with_stop_id(stops: int | Sequence[int] | None, token_id: int) -> list[int]:
    """Generation stop ids ``stops`` (one, several or none) with ``token_id`` (the end token's) added once."""
    ids = [] if stops is None else [int(stops)] if isinstance(stops, int) else [int(i) for i in stops]
    return ids if token_id in ids else [*ids, token_id]


def end_token_from_record(record: Mapping[str, Any] | None) -> str | None:
    """The end token a manifest's ``prompt`` entry records (``None``: the template's end-of-turn marker)."""
    if not record:
        return None
    return parse_end_token(record.get("end_token"), key="prompt.end_token", source="manifest.json")


def describe_system_prompt(system_prompt: SystemPrompt) -> str:
    """A short human description (for ``zoo show`` / the demo's model card)."""
    if isinstance(system_prompt, _TemplateDefault):
        return "the chat template's default"
    if system_prompt is None:
        return "none"
    return repr(system_prompt[:80] + ("..." if len(system_prompt) > 80 else ""))


def system_prompt_record(system_prompt: SystemPrompt, end_token: str | None = None) -> dict[str, Any]:
    """The manifest's ``prompt`` entry: ``{"system": "default" | "none" | "text", "system_prompt"?, "end_token"?}``."""
    if system_prompt is TEMPLATE_DEFAULT:
        record: dict[str, Any] = {"system": "default"}
    elif system_prompt is None:
        record = {"system": "none"}
    else:
        record = {"system": "text", "system_prompt": system_prompt}
    if end_token is not None:
        record["end_token"] = end_token
    return record


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
    end_token: str | None = None,
) -> str:
    """The chat template's text for ``messages`` under ``system_prompt`` and ``end_token`` (see the module docstring).

    Example:
        >>> render_messages(tok, [{"role": "user", "content": "hi"}], system_prompt=None, add_generation_prompt=True)
        '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    if end_token is None:
        require_chat_template(tokenizer)
        return _render([dict(m) for m in messages], tokenizer, system_prompt, add_generation_prompt)
    return render_conversation(
        tokenizer, messages, system_prompt=system_prompt, add_generation_prompt=add_generation_prompt,
        end_token=end_token,
    ).text  # fmt: skip


@dataclass(frozen=True)
class Rendered:
    """A rendered conversation and, per assistant turn in order, the ``(start, end)`` of its supervised text.

    A turn's supervised text is its content and the end of turn: the template's marker (``<|im_end|>``),
    whitespace after it excluded, or the ``end_token`` that replaced it.
    """

    text: str
    assistant_spans: tuple[tuple[int, int], ...]


def render_conversation(
    tokenizer: Any,
    messages: Sequence[Mapping[str, str]],
    *,
    system_prompt: SystemPrompt = TEMPLATE_DEFAULT,
    add_generation_prompt: bool = False,
    end_token: str | None = None,
) -> Rendered:
    """Render ``messages`` and locate every assistant turn in the text (the one place turns are located).

    Each turn is found by rendering the conversation up to it with the generation prompt (where it starts)
    and up to and including it (where it ends), so the template must render a conversation as the
    concatenation of its turns. With ``end_token``, what the template writes after a turn's content is
    replaced by the token, and the content must appear verbatim in the turn.
    """
    require_chat_template(tokenizer)
    turns = [dict(m) for m in messages]
    text = _render(turns, tokenizer, system_prompt, add_generation_prompt)
    spans: list[tuple[int, int]] = []
    out: list[str] = []  # with end_token: the text, rebuilt turn by turn
    size = cursor = 0  # characters in ``out``; how far ``text`` is copied into it
    for index, turn in enumerate(turns):
        if turn.get("role") != "assistant":
            continue
        last = index == len(turns) - 1 and not add_generation_prompt
        before = _render(turns[:index], tokenizer, system_prompt, True)
        through = text if last else _render(turns[: index + 1], tokenizer, system_prompt, False)
        if not (through.startswith(before) and text.startswith(through)):
            raise ZooError(
                "the tokenizer's chat template does not render a conversation as the concatenation of its turns "
                "(rendering a prefix of the messages is not a prefix of the full text), so the assistant turns "
                "cannot be located for labels; use a template that renders turns incrementally"
            )
        if end_token is None:
            end = len(through)
            while end > len(before) and through[end - 1].isspace():
                end -= 1
            spans.append((len(before), end))
            continue
        content = str(turn.get("content", ""))
        # where the turn starts (ChatML), else its first occurrence after a prefix the template writes
        at_start = through.startswith(content, len(before))
        found = len(before) if at_start else through.find(content, len(before))
        if found < 0:
            raise ZooError(
                f"end_token = {brief(end_token)}: the chat template does not write assistant turn {index}'s content "
                "verbatim, so what it writes after the content cannot be replaced by the end token; leave "
                "data.end_token out for this template"
            )
        start = size + len(before) - cursor
        out += [text[cursor : found + len(content)], end_token]
        size += found + len(content) - cursor + len(end_token)
        spans.append((start, size))
        cursor = len(through)  # the template's end of turn (marker and whitespace) is dropped
    if end_token is None:
        return Rendered(text, tuple(spans))
    return Rendered("".join(out) + text[cursor:], tuple(spans))


def require_chat_template(tokenizer: Any) -> None:
    """Raise a ``ZooError`` when ``tokenizer`` has no chat template to render messages with."""
    if not getattr(tokenizer, "chat_template", None):
        raise ZooError(
            f"the tokenizer {type(tokenizer).__name__} has no chat template; chat messages need one "
            "(use an instruct/chat tokenizer or set tokenizer.chat_template)"
        )


def _render(
    turns: list[dict[str, str]], tokenizer: Any, system_prompt: SystemPrompt, add_generation_prompt: bool
) -> str:
    """The template's own text (no end-token replacement) under ``system_prompt``."""
    has_system = bool(turns) and turns[0].get("role") == "system"
    if has_system or isinstance(system_prompt, _TemplateDefault):
        return _apply(tokenizer, turns, add_generation_prompt)
    if isinstance(system_prompt, str):
        return _apply(tokenizer, [{"role": "system", "content": system_prompt}, *turns], add_generation_prompt)
    return _without_system_turn(tokenizer, turns, add_generation_prompt)


def _apply(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    from zoo.sdk.template_render import render_chat_template  # bounded: a checkpoint's template is data

    return render_chat_template(tokenizer, messages, add_generation_prompt=add_generation_prompt)


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
