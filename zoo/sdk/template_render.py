"""Rendering a chat template with bounds: a checkpoint's template is data, and may be built to explode.

transformers renders chat templates in jinja's sandbox, which refuses ``range()`` past 100,000 but not
nested loops, ``'x' * 10**9`` or a string doubled in a loop: a hostile ``chat_template.jinja`` could
make a render run for hours or exhaust memory. :func:`render_chat_template` (under :mod:`zoo.core.prompt`, the
one prompt renderer of training, eval, generation and the processor) calls the
tokenizer's own ``apply_chat_template`` (so the text is exactly transformers') and watches the
template's compiled code while it runs: every piece of text it yields, and every string or list it
holds (one doubled in a loop), is counted against :data:`zoo.sdk.limits.MAX_RENDERED_PROMPT_CHARS` and the
wall time against
:data:`zoo.sdk.limits.MAX_TEMPLATE_SECONDS`; the template source is limited to
:data:`zoo.sdk.limits.MAX_CHAT_TEMPLATE_CHARS`. Any failure of the template (a jinja error, its
``raise_exception``, a ``MemoryError``) is one ``ZooError`` line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

from zoo.errors import ZooError
from zoo.sdk.limits import (
    MAX_CHAT_TEMPLATE_CHARS,
    MAX_RENDERED_PROMPT_CHARS,
    MAX_TEMPLATE_SECONDS,
    InputLimitError,
    brief,
)

__all__ = ["TemplateError", "render_chat_template"]

_TEMPLATE_FILE = "<template>"  # jinja's file name for code compiled from a string
_CHECK_EVERY = 256  # line events between two clock reads
_SCAN_EVERY = 4  # line events between two scans of a frame's values (a doubling grows 2-4x in between)


class TemplateError(ZooError):
    """A chat template failed to render, or went past a size or time bound."""


class _Exceeded(Exception):
    """Raised inside the template's frames to stop it (not a jinja error, so it cannot be caught there)."""


def render_chat_template(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool,
    max_chars: int = MAX_RENDERED_PROMPT_CHARS,
    max_seconds: float = MAX_TEMPLATE_SECONDS,
    **kwargs: Any,
) -> str:
    """``tokenizer.apply_chat_template(messages, tokenize=False, ...)`` within size and time bounds.

    Raises:
        InputLimitError: the template source, its output or its run time is past the bound.
        TemplateError: the template itself fails (a jinja error, ``raise_exception``, out of memory).

    Example:
        >>> render_chat_template(tokenizer, [{"role": "user", "content": "hi"}], add_generation_prompt=True)
        '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
    """
    _check_source(getattr(tokenizer, "chat_template", None))
    guard = _Guard(max_chars, max_seconds)
    previous = sys.gettrace()
    sys.settrace(guard.call)
    try:
        text = tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )
    except _Exceeded as error:
        raise InputLimitError(str(error)) from None
    except MemoryError:
        raise TemplateError(
            f"the chat template ran out of memory while rendering {len(messages)} messages; it expands without "
            "bound (a checkpoint's template is data: check its chat_template)"
        ) from None
    except RecursionError:
        raise TemplateError("the chat template recursed too deeply while rendering") from None
    except ZooError:
        raise
    except Exception as error:  # jinja's TemplateError, raise_exception, a ValueError from transformers...
        text = " ".join(str(error).split())
        raise TemplateError(f"the chat template failed: {type(error).__name__}: {brief(text)}") from error
    finally:
        sys.settrace(previous)
    if not isinstance(text, str):
        raise TemplateError(f"the chat template rendered {type(text).__name__}, not text")
    if len(text) > max_chars:  # a template rendered without yielding through jinja (a subclass's own)
        raise InputLimitError(_too_long(len(text), max_chars))
    return text


def _check_source(template: Any) -> None:
    sources = template.values() if isinstance(template, Mapping) else [template]
    for source in sources:
        if isinstance(source, str) and len(source) > MAX_CHAT_TEMPLATE_CHARS:
            raise InputLimitError(
                f"the tokenizer's chat template is {len(source):,} characters; templates over "
                f"{MAX_CHAT_TEMPLATE_CHARS:,} are refused (published ones are a few thousand)"
            )


def _too_long(count: int, limit: int) -> str:
    return (
        f"the chat template rendered more than {limit:,} characters ({count:,} so far) for one conversation; "
        "it expands without bound (a checkpoint's template is data: check its chat_template)"
    )


def _largest_value(frame: FrameType) -> int:
    """The length of the longest string, list or dict a template frame holds (in a namespace included)."""
    largest = 0
    for value in frame.f_locals.values():
        held = getattr(value, "_Namespace__attrs", None)  # jinja's namespace() keeps its attributes there
        for item in (value, *(held.values() if isinstance(held, dict) else ())):
            if isinstance(item, str | list | dict | tuple):
                largest = max(largest, len(item))
    return largest


class _Guard:
    """A ``sys.settrace`` function that bounds the text and time of jinja template frames only."""

    def __init__(self, max_chars: int, max_seconds: float) -> None:
        self.max_chars = max_chars
        self.deadline = time.monotonic() + max_seconds
        self.max_seconds = max_seconds
        self.chars = 0
        self.lines = 0

    def call(self, frame: FrameType, event: str, arg: Any) -> Any:
        """Global tracer: trace a frame only if it runs compiled template code."""
        if frame.f_code.co_filename == _TEMPLATE_FILE:
            return self.local
        return None

    def local(self, frame: FrameType, event: str, arg: Any) -> Any:
        """Local tracer: count yielded text (a generator's yield is a ``return`` event) and lines run."""
        if event == "return" and isinstance(arg, str):
            self.chars += len(arg)
            if self.chars > self.max_chars:
                raise _Exceeded(_too_long(self.chars, self.max_chars))
        elif event == "line":
            self.lines += 1
            largest = _largest_value(frame) if self.lines % _SCAN_EVERY == 0 else 0
            if largest > self.max_chars:  # a string or list doubled in a loop, before it outgrows memory
                raise _Exceeded(
                    f"the chat template built a value of {largest:,} items (over {self.max_chars:,}) while rendering; "
                    "it expands without bound (a checkpoint's template is data: check its chat_template)"
                )
            if self.lines % _CHECK_EVERY == 0 and time.monotonic() > self.deadline:
                raise _Exceeded(
                    f"the chat template ran for more than {self.max_seconds:g} s on one conversation; it loops "
                    "without bound (a checkpoint's template is data: check its chat_template)"
                )
        return self.local
