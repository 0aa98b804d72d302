"""A Gradio chat over a ``MultiModal``: image upload, multi-turn, tokens streamed as they are generated.

``zoo demo TARGET`` serves :func:`build_demo`; the pieces under it work without Gradio:
:func:`conversation` turns a chat history into chat messages with image placeholders plus the images,
and :func:`stream_reply` yields the growing answer while ``generate`` runs on a worker thread, fed
through transformers' ``TextIteratorStreamer``. Generation follows the model's generation config (its LM
directory's ``generation_config.json``); the page's sliders override its budget and temperature.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.core.anyres import describe_image_tokens
from zoo.errors import ZooError
from zoo.sdk.generation_config import default_options
from zoo.sdk.specs import SLOTS

if TYPE_CHECKING:
    from zoo.core.multimodal import MultiModal

__all__ = ["Conversation", "build_demo", "conversation", "model_card", "stream_reply"]

DEFAULT_MAX_NEW_TOKENS = 256  # when neither the caller nor the model's generation config sets it


@dataclass
class Conversation:
    """Chat messages (``role`` / ``content``, one image placeholder per image) and the images in order."""

    messages: list[dict[str, str]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def add(self, role: str, text: str, images: Sequence[str] = (), image_token: str = "<image>") -> None:
        """Append a turn; a user turn's images come first, one placeholder line each (LLaVA's layout)."""
        content = "\n".join([*([image_token] * len(images)), text.strip()]).strip()
        if self.messages and self.messages[-1]["role"] == role:  # Gradio splits a turn's files from its text
            self.messages[-1]["content"] = "\n".join(filter(None, [self.messages[-1]["content"], content]))
        else:
            self.messages.append({"role": role, "content": content})
        self.images.extend(images)


def conversation(history: Sequence[Any], message: Any, image_token: str = "<image>") -> Conversation:
    """The chat so far plus the new user message, as zoo's chat template wants it.

    Args:
        history: Gradio's chat history (``{"role", "content"}`` messages; content is text, a file, or a
            list of ``{"type": "text"|"file"}`` parts).
        message: the new message: text, or a ``{"text", "files"}`` dict from a multimodal textbox.
        image_token: the model's image placeholder.
    """
    chat = Conversation()
    for turn in history:
        role = turn.get("role") if isinstance(turn, dict) else getattr(turn, "role", None)
        content = turn.get("content") if isinstance(turn, dict) else getattr(turn, "content", None)
        if role not in ("user", "assistant"):
            continue
        texts, files = _parts(content)
        chat.add(role, "\n".join(texts), files if role == "user" else (), image_token)
    if isinstance(message, dict):
        files = [path for f in message.get("files") or [] if (path := _file_path(f))]
        chat.add("user", str(message.get("text") or ""), files, image_token)
    else:
        chat.add("user", str(message or ""), (), image_token)
    return chat


def _parts(content: Any) -> tuple[list[str], list[str]]:
    """Texts and file paths of one history message, whatever shape this Gradio version gives it."""
    texts: list[str] = []
    files: list[str] = []
    for part in content if isinstance(content, list | tuple) and not _is_file_tuple(content) else [content]:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif (path := _file_path(part)) is not None:
            files.append(path)
    return texts, files


def _is_file_tuple(content: Any) -> bool:
    return isinstance(content, tuple) and bool(content) and isinstance(content[0], str) and Path(content[0]).is_file()


def _file_path(part: Any) -> str | None:
    if isinstance(part, dict):
        inner = part.get("file", part)
        path = inner.get("path") if isinstance(inner, dict) else getattr(inner, "path", None)
        return str(path) if path else None
    if isinstance(part, tuple) and part:  # (path, alt text) in older Gradio
        return str(part[0])
    if isinstance(part, str | Path):
        return str(part)
    path = getattr(part, "path", None) or getattr(getattr(part, "file", None), "path", None)
    return str(path) if path else None


def stream_reply(
    model: MultiModal,
    chat: Conversation,
    *,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    processor: Any = None,
) -> Iterator[str]:
    """Yield the answer so far, growing token by token, while ``model.generate`` runs on a thread.

    An option left ``None`` keeps the model's generation config (its LM directory's ``generation_config.json``;
    ``max_new_tokens`` falls back to 256 when that sets none); ``temperature`` 0 is greedy decoding, above 0
    sampling at that temperature.

    Example:
        >>> chat = conversation([], {"text": "What is this?", "files": ["cat.png"]})
        >>> for text in stream_reply(model, chat, max_new_tokens=32):
        ...     print(text)
    """
    from transformers import TextIteratorStreamer

    from zoo.sdk.images import open_image

    processor = processor or model.processor()
    images = [open_image(path, what="the uploaded image") for path in chat.images]
    if getattr(processor.tokenizer, "chat_template", None):
        prompt = processor.apply_chat_template(chat.messages)  # the model's system prompt, as in training
    else:  # a base LM without a template: plain role-prefixed turns
        prompt = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in chat.messages) + "Assistant:"
    batch = {k: v.to(model.device) for k, v in processor(prompt, images=images).items()}
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600.0)
    explicit: dict[str, Any] = {"max_new_tokens": max_new_tokens, "top_p": top_p}
    if temperature is not None:
        explicit.update(do_sample=temperature > 0, temperature=float(temperature) if temperature > 0 else None)
    options = default_options(_generation_config(model), explicit, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    options["streamer"] = streamer
    failure: list[BaseException] = []

    def work() -> None:
        try:
            model.generate(**batch, **options)
        except BaseException as error:  # noqa: BLE001 (re-raised in the caller's thread once the stream ends)
            failure.append(error)
            streamer.end()

    worker = threading.Thread(target=work, name="zoo-demo-generate", daemon=True)
    worker.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text
    worker.join()
    if failure:
        raise failure[0]


def _generation_config(model: MultiModal) -> Any:
    return getattr(model.lm.model, "generation_config", None)


def model_card(model: MultiModal, target: str) -> str:
    """Markdown naming the composition, its parameter counts per component and its image tokens."""
    summary = model.summary()
    parts = summary["components"]
    chain = " → ".join(f"`{parts[k]['name']}`" for k in SLOTS)
    sizes = ", ".join(f"{k} {_count(parts[k]['params'])}" for k in SLOTS)
    return (
        f"**{target}**: {chain}  \n"
        f"parameters: {_count(summary['params_total'])} ({sizes}); "
        f"{describe_image_tokens(summary['image_tokens'])} tokens per image; {summary['dtype']}"
    )


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def build_demo(model: MultiModal, target: str, *, max_new_tokens: int | None = None) -> Any:
    """A ``gradio.ChatInterface`` (multimodal textbox, streamed answers) over ``model``.

    Args:
        model: the model to chat with (in eval mode).
        target: what to call it in the page (the checkpoint, YAML or composition it came from).
        max_new_tokens: the default generation budget (a slider changes it per message); ``None``: the model's
            generation config's, else 256. The temperature slider starts at the generation config's when it
            samples, else at 0 (greedy); its other settings (top-p, top-k, repetition penalty, eos) apply as they are.
    """
    try:
        import gradio as gr
    except ImportError as error:
        raise ZooError("zoo demo needs Gradio: pip install 'zoo-vlm[demo]'") from error
    if not model.lm.has_tokenizer:
        raise ZooError(f"{target!r} has no tokenizer; the demo needs one (give the LM a tokenizer)")
    processor = model.processor()
    lock = threading.Lock()  # one generation at a time: the model is shared by every browser tab
    defaults = _generation_config(model)
    budget_default = max_new_tokens or getattr(defaults, "max_new_tokens", None) or DEFAULT_MAX_NEW_TOKENS
    sampled = bool(getattr(defaults, "do_sample", False))
    temperature_default = float(getattr(defaults, "temperature", None) or 1.0) if sampled else 0.0

    def respond(message: Any, history: list[Any], budget: float, temperature: float) -> Iterator[str]:
        chat = conversation(history, message, model.image_token)
        if not chat.messages[-1]["content"]:
            raise gr.Error("Type a message or upload an image.")
        with lock:
            try:
                yield from stream_reply(
                    model, chat, max_new_tokens=int(budget), temperature=temperature, processor=processor
                )
            except ZooError as error:
                raise gr.Error(str(error)) from error

    return gr.ChatInterface(
        respond,
        multimodal=True,
        title=f"zoo · {target}",
        description=model_card(model, target),
        textbox=gr.MultimodalTextbox(file_types=["image"], file_count="multiple", placeholder="Ask about an image"),
        additional_inputs=[
            gr.Slider(1, max(2048, budget_default), value=budget_default, step=1, label="max new tokens"),
            gr.Slider(0.0, 2.0, value=min(temperature_default, 2.0), step=0.05, label="temperature (0: greedy)"),
        ],
        fill_height=True,
    )
