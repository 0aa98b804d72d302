"""Chat messages -> token ids and labels with the LM tokenizer's own chat template.

The whole conversation is rendered once and tokenized once (so training sees exactly the ids the
template gives at inference). A token is supervised when it overlaps an assistant turn's span in
the rendered text: the turn's content plus the end-of-turn marker the template writes after it
(``<|im_end|>`` for ChatML), so the model learns to stop; whitespace the template writes after
that marker is not supervised. With an ``end_token`` (``data.end_token``, e.g. ``<|endoftext|>``) the
turn is its content followed by that token instead, and the content plus the token are supervised.
The spans come from :func:`zoo.core.prompt.render_conversation`, which renders the conversation up to each
turn with the generation prompt (where the turn starts) and up to and including it (where it ends).
Each image placeholder token is then expanded to ``tokens_per_image`` ids, never supervised (or, for
any-resolution models, to each image's own count, given as ``image_tokens``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zoo.core.multimodal import IGNORE_INDEX
from zoo.core.prompt import (
    TEMPLATE_DEFAULT,
    SystemPrompt,
    check_end_token,
    render_conversation,
    render_messages,
    require_chat_template,
)
from zoo.core.records import DATA_IMAGE_TOKEN
from zoo.errors import ZooError

__all__ = ["ChatEncoder", "Encoded"]


@dataclass(frozen=True)
class Encoded:
    """Token ids, labels (``IGNORE_INDEX`` where unsupervised) and how many images they hold."""

    input_ids: list[int]
    labels: list[int]
    num_images: int


class ChatEncoder:
    """Encodes chat messages for one model (picklable: holds the tokenizer, not the model).

    Args:
        tokenizer: the LM's (fast) tokenizer, with a chat template and the image token added.
        image_token: the model's placeholder string (``DATA_IMAGE_TOKEN`` in data is rewritten to it).
        tokens_per_image: positions one image occupies.
        system_prompt: the model's system prompt (``zoo.core.prompt``; ``MultiModal.system_prompt``).
        end_token: the token that ends every assistant turn in place of the template's end-of-turn marker
            (``MultiModal.end_token``; ``None``: the template's). A ``ConfigError`` if it is not one token.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        image_token: str,
        tokens_per_image: int,
        system_prompt: SystemPrompt = TEMPLATE_DEFAULT,
        end_token: str | None = None,
    ) -> None:
        require_chat_template(tokenizer)
        if not getattr(tokenizer, "is_fast", False):
            raise ZooError(f"the tokenizer {type(tokenizer).__name__} is not a fast tokenizer; labels need offsets")
        self.tokenizer = tokenizer
        self.image_token = image_token
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(image_token))
        self.tokens_per_image = tokens_per_image
        self.system_prompt = system_prompt
        check_end_token(tokenizer, end_token)
        self.end_token = end_token

    def render(self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = False) -> str:
        """The template's text for ``messages`` (data placeholders rewritten to the model's image token)."""
        return render_messages(self.tokenizer, self._with_image_token(messages), system_prompt=self.system_prompt,
                               add_generation_prompt=add_generation_prompt, end_token=self.end_token)  # fmt: skip

    def _with_image_token(self, messages: Sequence[Mapping[str, str]]) -> Sequence[Mapping[str, str]]:
        if self.image_token == DATA_IMAGE_TOKEN:
            return messages
        return [{**m, "content": m["content"].replace(DATA_IMAGE_TOKEN, self.image_token)} for m in messages]

    def encode(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        supervise: str = "assistant",
        max_length: int | None = None,
        image_tokens: Sequence[int] | None = None,
    ) -> Encoded:
        """Ids and labels of a whole conversation.

        Args:
            messages: ``{"role", "content"}`` dicts, as ``zoo.core.records.Conversation.messages``.
            supervise: ``assistant`` (every assistant turn, for training) or ``last`` (the last
                assistant turn only, for the loss on a reference answer).
            max_length: truncate to at most this many ids (images expanded); a cut that would fall
                inside an image's positions moves to just before that image, so an image is kept
                whole or dropped with everything after it. ``num_images`` counts the images kept.
            image_tokens: ids each image expands to, in order (any-res: by image size); default
                ``tokens_per_image`` for every image.
        """
        if supervise not in ("assistant", "last"):
            raise ZooError(f"supervise = {supervise!r} is not valid; valid choices: 'assistant', 'last'")
        rendered = render_conversation(self.tokenizer, self._with_image_token(messages),
                                       system_prompt=self.system_prompt, end_token=self.end_token)  # fmt: skip
        text, spans = rendered.text, rendered.assistant_spans[-1:] if supervise == "last" else rendered.assistant_spans
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        labels = [
            token if any(start < span_end and end > span_start for span_start, span_end in spans) else IGNORE_INDEX
            for token, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"])
        ]
        return self._expand(encoding["input_ids"], labels, max_length, image_tokens)

    def encode_prompt(
        self, messages: Sequence[Mapping[str, str]], image_tokens: Sequence[int] | None = None
    ) -> Encoded:
        """Ids of ``messages`` followed by the generation prompt (what a model answers), no labels."""
        text = self.render(messages, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._expand(ids, [IGNORE_INDEX] * len(ids), None, image_tokens)

    def _expand(
        self, ids: Sequence[int], labels: Sequence[int], max_length: int | None, image_tokens: Sequence[int] | None
    ) -> Encoded:
        out_ids: list[int] = []
        out_labels: list[int] = []
        spans: list[tuple[int, int]] = []  # (start, end) of each image's positions
        for token, label in zip(ids, labels):
            if token == self.image_token_id:
                index = len(spans)
                if image_tokens is not None and index >= len(image_tokens):
                    raise ZooError(f"the text holds more image placeholders than the {len(image_tokens)} images given")
                count = self.tokens_per_image if image_tokens is None else int(image_tokens[index])
                spans.append((len(out_ids), len(out_ids) + count))
                out_ids.extend([token] * count)
                out_labels.extend([IGNORE_INDEX] * count)
            else:
                out_ids.append(token)
                out_labels.append(label)
        cut = len(out_ids) if max_length is None else min(len(out_ids), max_length)
        for start, end in spans:
            if start < cut < end:
                cut = start  # never keep part of an image
        kept = sum(end <= cut for _, end in spans)
        return Encoded(out_ids[:cut], out_labels[:cut], kept)
