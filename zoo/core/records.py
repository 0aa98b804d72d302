"""LLaVA conversation records: read a JSON list or JSONL file and validate every record.

A record is ``{"id": ..., "image": "a.png" | ["a.png", ...] (optional), "conversations": [{"from":
"human", "value": "<image>\\nWhat is this?"}, {"from": "gpt", "value": "A cat."}, ...]}``. Roles
``human``/``user``, ``gpt``/``assistant`` and ``system`` are accepted. Each image is marked by one
``<image>`` placeholder in a human (or system) turn; a record with images and no placeholder gets
them prepended to its first human turn, as LLaVA does. Every problem is reported as
``FILE: record INDEX (id ID): what is wrong``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import ZooError, suggest
from zoo.sdk.limits import brief

__all__ = [
    "DATA_IMAGE_TOKEN",
    "ON_ERROR",
    "ROLES",
    "Conversation",
    "DataError",
    "RecordList",
    "check_record",
    "check_records",
    "read_json_records",
    "read_records",
]

logger = logging.getLogger(__name__)

MAX_DATA_BYTES = 16 * 1024**3  # LLaVA-665k's JSON is 1 GiB; beyond this a data file is refused unread
DATA_IMAGE_TOKEN = "<image>"  # the placeholder LLaVA data writes, whatever the model's own image token is
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
ON_ERROR = ("error", "skip")


class DataError(ZooError):
    """A data file or record is unusable: unreadable JSON, a malformed record, a missing image."""


class RecordList(list):
    """The records of one file (a ``list`` of dicts) plus the problems of the records that were skipped."""

    def __init__(self, records: Iterable[Any] = (), *, source: str = "<records>", skipped: Iterable[str] = ()):
        super().__init__(records)
        self.source = source
        self.skipped: list[str] = list(skipped)


@dataclass(frozen=True)
class Conversation:
    """One validated record: chat ``messages`` (role/content) and the image paths it names, in order.

    ``index`` is the record's position in its file and ``id`` its ``"id"`` (``None`` when absent);
    together with ``source`` they name the record in messages. ``extra`` keeps the record's other
    keys (``type`` in ``zoo data shapes`` records, read by ``zoo eval`` for per-type accuracy).
    """

    index: int
    id: str | None
    images: tuple[str, ...]
    messages: tuple[Mapping[str, str], ...]
    source: str = "<records>"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """``FILE: record INDEX (id ID)``, the prefix of every message about this record."""
        name = f" (id {brief(self.id)})" if self.id is not None else ""
        return f"{self.source}: record {self.index}{name}"

    @property
    def last_assistant(self) -> int:
        """Index in ``messages`` of the last assistant turn (every valid record has one)."""
        return max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")


def read_records(path: str | Path, *, on_error: str = "error") -> RecordList:
    """Read and validate the records of a LLaVA JSON (a list) or JSONL file.

    Args:
        path: ``.json`` holding a list of records, or ``.jsonl`` with one record per line (a file
            whose first character is not ``[`` is read as JSONL whatever its suffix).
        on_error: ``error`` raises a ``DataError`` at the first bad record; ``skip`` drops bad records,
            logs how many, and lists their problems in ``RecordList.skipped``.

    Example:
        >>> records = read_records("data/train.json")
        >>> len(records), records.skipped
    """
    _check_on_error(on_error)
    source = str(path)
    raw = read_json_records(path)
    conversations = check_records(raw, source=source, on_error=on_error)
    kept = RecordList(source=source, skipped=conversations.skipped)
    kept.extend(raw[c.index] for c in conversations)
    return kept


def read_json_records(path: str | Path) -> list[Any]:
    """The raw records of a JSON list or JSONL file, unvalidated (``check_records`` validates them)."""
    from zoo.sdk.yaml_io import read_text_file

    path = Path(path)
    source = str(path)
    try:  # a regular file only, opened non-blocking: a FIFO or /dev/zero is refused, not read
        text = read_text_file(path, what="data file", limit=MAX_DATA_BYTES)
    except ZooError as error:
        raise DataError(str(error)) from None
    if text.lstrip().startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{source}: invalid JSON at line {error.lineno}: {error.msg}") from error
        except RecursionError:
            raise DataError(
                f"{source}: the JSON is nested too deeply to read (a record is a few levels deep)"
            ) from None
    else:
        raw = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"{source}: line {number} is not valid JSON: {error.msg}") from error
            except RecursionError:
                raise DataError(f"{source}: line {number} is nested too deeply to read") from None
    return raw


def check_records(records: Iterable[Any], *, source: str = "<records>", on_error: str = "error") -> RecordList:
    """Validate records into ``Conversation`` objects (a ``RecordList`` of them, bad ones skipped or raised)."""
    _check_on_error(on_error)
    good = RecordList(source=source)
    for index, record in enumerate(records):
        try:
            good.append(check_record(record, index=index, source=source))
        except DataError as error:
            if on_error == "error":
                raise
            good.skipped.append(str(error))
    if good.skipped:
        logger.warning("%s: skipped %d bad records (data.on_error: skip); first: %s", source, len(good.skipped),
                       good.skipped[0])  # fmt: skip
    return good


def check_record(record: Any, *, index: int, source: str = "<records>") -> Conversation:
    """One record as a ``Conversation``, or a ``DataError`` naming the file, the index and the id."""
    ident = record.get("id") if isinstance(record, Mapping) else None
    where = Conversation(index, None if ident is None else str(ident), (), (), source).where

    def bad(problem: str) -> DataError:
        return DataError(f"{where}: {problem}")

    if not isinstance(record, Mapping):
        raise bad(f"expected a JSON object, got {type(record).__name__}")
    images = record.get("image")
    if images is None:
        images = []
    elif isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(i, str) and i.strip() for i in images):
        raise bad(f"'image' = {brief(record.get('image'))}: expected a path or a list of paths")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise bad("has no conversations (expected 'conversations': a non-empty list of turns)")
    messages = [_check_turn(turn, number, bad) for number, turn in enumerate(turns)]
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        raise bad("has no gpt/assistant turn: nothing to learn or to score")
    first = next(r for r in roles if r != "system") if set(roles) != {"system"} else "system"
    if first != "user":
        raise bad("the first turn after any system turn must be from 'human'")
    placeholders = sum(m["content"].count(DATA_IMAGE_TOKEN) for m in messages)
    if placeholders == 0 and images:
        at = roles.index("user")
        messages[at] = {"role": "user", "content": f"{DATA_IMAGE_TOKEN}\n" * len(images) + messages[at]["content"]}
    elif placeholders != len(images):
        raise bad(
            f"holds {placeholders} {DATA_IMAGE_TOKEN!r} placeholders but names {len(images)} images; "
            f"write one placeholder per image (or none, to put them all before the first human turn)"
        )
    extra = {k: v for k, v in record.items() if k not in ("id", "image", "conversations")}
    return Conversation(index, None if ident is None else str(ident), tuple(images), tuple(messages), source, extra)


def _check_turn(turn: Any, number: int, bad) -> dict[str, str]:
    if not isinstance(turn, Mapping) or "from" not in turn or "value" not in turn:
        raise bad(f"turn {number} = {brief(turn)}: expected {{'from': 'human' | 'gpt', 'value': text}}")
    speaker = turn["from"]
    if speaker not in ROLES:
        raise bad(f"turn {number} 'from' = {brief(speaker)} is not a role; {suggest(str(speaker)[:100], ROLES)}")
    if not isinstance(turn["value"], str):
        raise bad(f"turn {number} is not text ('value' is a {type(turn['value']).__name__}); only text turns are read")
    role = ROLES[speaker]
    if role == "assistant" and DATA_IMAGE_TOKEN in turn["value"]:
        raise bad(f"turn {number} is from {speaker!r} but holds {DATA_IMAGE_TOKEN!r}: images go in human turns")
    return {"role": role, "content": turn["value"]}


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise DataError(f"on_error = {brief(on_error)} is not valid; {suggest(str(on_error)[:100], ON_ERROR)}")
