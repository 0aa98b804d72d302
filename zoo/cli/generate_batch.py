"""``zoo generate --batch-file``: many prompts (and images) answered in batches after one model load.

The batch file is JSONL, one object per line (blank lines are skipped)::

    {"id": "q1", "prompt": "What colour is the shape?", "images": ["img/a.png"]}
    {"prompt": "<image> and <image>: which is larger?", "images": ["a.png", "b.png"], "max_new_tokens": 8}
    {"prompt": "Say hello.", "system": "You are terse."}

Keys: ``prompt`` (required; may be empty when there are images), ``images`` (a path or a list; relative
paths are resolved against the batch file's folder), ``id`` (any JSON scalar, echoed in the answer),
``system`` (overrides ``--system``) and the generation overrides ``max_new_tokens``, ``do_sample``,
``temperature``, ``top_p`` (default: the command's options). Every bad line is reported at once, as
``FILE:LINE: what is wrong``, before the model is built; prompts that do not fit the model's context
are reported the same way before anything is generated.

Each prompt is rendered exactly as ``zoo generate --prompt`` renders it (:func:`render_prompt`, which
calls the processor's chat template). Lines with the same generation options are generated together,
``batch_size`` at a time, left-padded; the answers come out in input order, one JSON object per line::

    {"index": 0, "line": 1, "id": "q1", "text": "red", "tokens": [1151, 151645]}

Greedy answers equal the one-prompt command's in float32 (position ids follow the padding; tested over
every tiny LM family). In bfloat16 / float16 a padded row's logits can differ from the unpadded row's by a
rounding step or two (the attention reductions run over a longer, partly masked sequence), so a near-tie
can go the other way; ``batch_size=1`` gives the one-prompt answers exactly. Sampled answers draw from
one random stream for the whole run, so they differ from separate calls with the same ``--seed``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from zoo.errors import ZooError, suggest
from zoo.sdk.limits import brief, check_generation_options
from zoo.sdk.yaml_io import read_text_file

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

    from zoo.core.multimodal import MultiModal
    from zoo.core.processor import MultiModalProcessor

__all__ = [
    "BATCH_KEYS",
    "BatchFileError",
    "BatchItem",
    "GenerationOptions",
    "check_fits",
    "generate_answers",
    "read_batch_file",
    "render_prompt",
    "write_answers",
]

OPTION_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p")  # a line may override these
DEFAULT_MAX_NEW_TOKENS = 32  # when neither the options nor the model's generation config set it
BATCH_KEYS = ("id", "prompt", "images", "system", *OPTION_KEYS)
MAX_BATCH_FILE_BYTES = 256 << 20
MAX_LISTED = 5  # bad lines named in one message; the rest are counted


class BatchFileError(ZooError):
    """A batch file is unreadable or has bad lines (each named ``FILE:LINE``)."""


@dataclass(frozen=True)
class GenerationOptions:
    """The generation options of one line (the command's, with the line's overrides); ``None``: not given,
    the model's generation config decides (:func:`zoo.sdk.generation_config.default_options`)."""

    max_new_tokens: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    eos_token_id: tuple[int, ...] | None = None

    def kwargs(self, generation_config: Any = None) -> dict[str, Any]:
        """Keyword arguments of ``MultiModal.generate``: these options over the model's generation config."""
        from zoo.sdk.generation_config import default_options

        explicit = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.eos_token_id is not None:
            explicit["eos_token_id"] = list(self.eos_token_id)
        return default_options(generation_config, explicit, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)


@dataclass(frozen=True)
class BatchItem:
    """One valid line: where it is, what to ask, with which images and options."""

    source: str
    index: int  # 0-based, among the non-blank lines
    line: int  # 1-based line number in the file
    id: Any
    prompt: str
    images: tuple[Path, ...]
    system: str | None
    options: GenerationOptions

    @property
    def where(self) -> str:
        """``FILE:LINE``, for messages."""
        return f"{self.source}:{self.line}"


def read_batch_file(
    path: str | os.PathLike, *, defaults: GenerationOptions | None = None, system: str | None = None
) -> list[BatchItem]:
    """Parse and check a JSONL batch file; every image is opened once to check it.

    Args:
        path: the JSONL file.
        defaults: the options of lines that do not set their own.
        system: the system message of lines without ``system``.

    Raises:
        BatchFileError: the file cannot be read, is empty, or has bad lines (all of them named).

    Example:
        >>> items = read_batch_file("questions.jsonl", defaults=GenerationOptions(max_new_tokens=16))
    """
    path = Path(path)
    source = str(path)
    defaults = defaults or GenerationOptions()
    try:  # a regular file only, opened non-blocking and bounded, as YAML and data files are
        text = read_text_file(path, what="--batch-file", limit=MAX_BATCH_FILE_BYTES)
    except ZooError as error:
        raise BatchFileError(str(error)) from None
    items: list[BatchItem] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            items.append(_parse_line(raw, source, len(items), number, path.parent, defaults, system))
        except ZooError as error:
            problems.append(str(error))
    if problems:
        raise BatchFileError(_listing(problems, "bad lines"))
    if not items:
        raise BatchFileError(f"--batch-file {source!r} has no lines; write one JSON object per line")
    return items


def _parse_line(
    raw: str, source: str, index: int, number: int, folder: Path, defaults: GenerationOptions, system: str | None
) -> BatchItem:
    where = f"{source}:{number}"
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as error:
        message = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deeply"
        raise BatchFileError(f"{where}: not valid JSON ({message})") from error
    if not isinstance(record, dict):
        raise BatchFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in record:
        if key not in BATCH_KEYS:
            raise BatchFileError(f"{where}: unknown key {brief(key)}; {suggest(str(key), BATCH_KEYS)}")
    ident = record.get("id")
    if isinstance(ident, dict | list):
        raise BatchFileError(f"{where}: 'id' = {brief(ident)}; expected a string or a number")
    prompt = record.get("prompt")
    if not isinstance(prompt, str):
        got = "missing" if "prompt" not in record else f"{brief(prompt)}, not a string"
        raise BatchFileError(f"{where}: 'prompt' is {got}; write the question as a string")
    images = record.get("images", [])
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(i, str) and i.strip() for i in images):
        raise BatchFileError(f"{where}: 'images' = {brief(record.get('images'))}; expected a path or a list of paths")
    if not prompt.strip() and not images:
        raise BatchFileError(f"{where}: 'prompt' is empty and there are no images; write a question")
    line_system = record.get("system", system)
    if line_system is not None and not isinstance(line_system, str):
        raise BatchFileError(f"{where}: 'system' = {brief(line_system)}; expected a string")
    options = _options(record, defaults, where)
    paths = tuple(folder / image if not Path(image).is_absolute() else Path(image) for image in images)
    for k, image_path in enumerate(paths):
        _open(image_path, f"{where}: images[{k}]")
    return BatchItem(source, index, number, ident, prompt, paths, line_system, options)


def _options(record: dict[str, Any], defaults: GenerationOptions, where: str) -> GenerationOptions:
    overrides = {key: record[key] for key in OPTION_KEYS if key in record}
    if "do_sample" in overrides and not isinstance(overrides["do_sample"], bool):
        raise BatchFileError(f"{where}: 'do_sample' = {brief(overrides['do_sample'])}; expected true or false")
    for key in ("temperature", "top_p"):
        value = overrides.get(key)
        if key in overrides and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BatchFileError(f"{where}: {key!r} = {brief(value)}; expected a number")
    options = replace(defaults, **overrides)
    try:
        check_generation_options(
            max_new_tokens=options.max_new_tokens, temperature=options.temperature, top_p=options.top_p, prefix=""
        )
    except ZooError as error:
        raise BatchFileError(f"{where}: {error}") from error
    temperature, top_p = options.temperature, options.top_p
    return replace(
        options,
        temperature=None if temperature is None else float(temperature),
        top_p=None if top_p is None else float(top_p),
    )


def _open(path: Path, what: str) -> Image:
    from zoo.sdk.images import open_image

    return open_image(path, what=what)


def _listing(problems: list[str], what: str) -> str:
    shown = "; ".join(problems[:MAX_LISTED])
    more = f" (and {len(problems) - MAX_LISTED} more {what})" if len(problems) > MAX_LISTED else ""
    return f"{len(problems)} {what}: {shown}{more}"


def render_prompt(
    processor: MultiModalProcessor,
    prompt: str,
    num_images: int,
    *,
    system: str | None = None,
    chat_template: bool = True,
    system_name: str = "--system",
) -> str:
    """The text ``zoo generate`` feeds the model for a user prompt: the placeholders of ``num_images``
    images put first when the prompt has none, then the chat template (with the system message) when
    the tokenizer has one and ``chat_template`` is on. One function for ``--prompt`` and ``--batch-file``.

    Raises:
        ZooError: a system message without a chat template (naming ``system_name``).
    """
    if num_images and processor.image_token not in prompt:
        prompt = "\n".join([processor.image_token] * num_images + [prompt])
    has_template = bool(getattr(processor.tokenizer, "chat_template", None))
    if system is not None and (not chat_template or not has_template):
        why = "--no-chat-template is set" if not chat_template else "the tokenizer has no chat template"
        raise ZooError(f"{system_name} needs the chat template, and {why}; put the system text into the prompt instead")
    if chat_template and has_template:
        messages = [{"role": "system", "content": system}] if system is not None else []
        prompt = processor.apply_chat_template([*messages, {"role": "user", "content": prompt}])
    return prompt


def _render(processor: MultiModalProcessor, item: BatchItem, chat_template: bool) -> str:
    name = f"{item.where}: 'system'" if item.system is not None else "--system"
    return render_prompt(
        processor, item.prompt, len(item.images), system=item.system, chat_template=chat_template, system_name=name
    )


def check_fits(model: MultiModal, items: list[BatchItem], *, chat_template: bool = True) -> None:
    """Render and encode every line once, before anything is generated: placeholders that do not match the
    images, a system message without a template, or a prompt plus ``max_new_tokens`` past the model's
    context are reported for every line at once."""
    processor = model.processor()
    context = _context(model)
    problems = []
    for item in items:
        try:
            images = [_open(path, f"images[{k}]") for k, path in enumerate(item.images)]
            encoded = processor(_render(processor, item, chat_template), images=images)
            check_generation_options(
                max_new_tokens=item.options.kwargs(model.lm.model.generation_config).get("max_new_tokens", 1),
                context=context,
                prompt_tokens=int(encoded["input_ids"].shape[1]),
                prefix="",
            )
        except ZooError as error:
            problems.append(f"{item.where}: {error}")
    if problems:
        raise BatchFileError(_listing(problems, "lines that cannot be generated"))


def _context(model: MultiModal) -> int | None:
    context = getattr(model.lm.model.config, "max_position_embeddings", None)
    return context if isinstance(context, int) and context > 0 else None


def generate_answers(
    model: MultiModal,
    items: list[BatchItem],
    *,
    batch_size: int = 8,
    chat_template: bool = True,
    progress: Any = None,
) -> Iterator[dict[str, Any]]:
    """Answer every item, ``batch_size`` at a time (lines with the same options together), yielding one
    answer per item in input order: ``{"index", "line", "id", "text", "tokens"}``.

    Args:
        model: a built or loaded ``MultiModal`` (in eval mode).
        items: from :func:`read_batch_file` (check them first with :func:`check_fits`).
        batch_size: prompts per ``generate`` call.
        chat_template: render prompts with the tokenizer's chat template (as ``zoo generate``).
        progress: an object with ``update(n)`` (``zoo.core.progress.LineProgress``), told after each batch.
    """
    processor = model.processor(padding_side="left")
    stops = _stop_ids(model, processor)
    done: dict[int, dict[str, Any]] = {}
    upcoming = 0
    for batch in _batches(items, batch_size):
        texts = [_render(processor, item, chat_template) for item in batch]
        opened: dict[Path, Image] = {}  # an image asked about by several prompts of the batch is read once
        for item in batch:
            for path in item.images:
                if path not in opened:
                    opened[path] = _open(path, f"{item.where}: image")
        images = [[opened[path] for path in item.images] for item in batch]
        encoded = processor(texts, images=images)
        options = batch[0].options.kwargs(model.lm.model.generation_config)
        output = model.generate(**encoded, **options)  # [B, T + new]
        new = output[:, encoded["input_ids"].shape[1] :]  # [B, new]
        for row, item in enumerate(batch):
            tokens = _until_stop(new[row], stops)
            text = processor.decode(tokens[None])[0]
            done[item.index] = {"index": item.index, "line": item.line, "id": item.id, "text": text,
                                "tokens": tokens.tolist()}  # fmt: skip
        if progress is not None:
            progress.update(len(batch))
        while upcoming in done:
            yield done.pop(upcoming)
            upcoming += 1


def _batches(items: list[BatchItem], batch_size: int) -> Iterator[list[BatchItem]]:
    """Chunks of ``batch_size`` items sharing their options, groups in order of first appearance."""
    groups: dict[GenerationOptions, list[BatchItem]] = {}
    for item in items:
        groups.setdefault(item.options, []).append(item)
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            yield group[start : start + batch_size]


def _stop_ids(model: MultiModal, processor: MultiModalProcessor) -> set[int]:
    """The ids that end a row: the generation config's EOS (chat checkpoints list theirs there), else the
    tokenizer's, as ``MultiModal.generate`` chooses them."""
    configured = model.lm.model.generation_config.eos_token_id
    if configured is None:
        configured = processor.tokenizer.eos_token_id
    if configured is None:
        return set()
    return {int(configured)} if isinstance(configured, int) else {int(i) for i in configured}


def _until_stop(tokens: torch.Tensor, stops: set[int]) -> torch.Tensor:
    """A batched row up to and with its first stop token (after it come the pads of a finished row)."""
    for position, token in enumerate(tokens.tolist()):
        if token in stops:
            return tokens[: position + 1]
    return tokens


def write_answers(answers: Iterator[dict[str, Any]], handle: IO[str]) -> int:
    """Write each answer as one JSON line as soon as it is ready; returns how many were written."""
    count = 0
    for answer in answers:
        handle.write(json.dumps(answer, ensure_ascii=False) + "\n")
        handle.flush()
        count += 1
    return count
