"""The VLM-learning reference's training data as zoo's LLaVA JSON (``zoo data from-vlm-learning``).

The reference (``MMultiModal``; its ``dataprocess/process_image.py``, ``dataset/image_caption_dataset.py``;
read from WatchTower-Liu/VLM-learning's code as first copied into xinyanghuang7/Basic-Visual-Language-Model,
commit 98b8d7a) trains on two JSON files that ``process_image.py`` writes:

``image_map_b.json``, one entry per image::

    {"000000033471.jpg": {"iamge_file": "000000033471.jpg", "ID": 50000, "path": "/data/coco/train2017/"}, ...}

(``iamge_file`` is the reference's own spelling; ``image_file``, as later forks write it, is read too);

``captions_b.json``, one record per ID (JSON object keys, so strings)::

    {"50000": {"q": "<|extra_0|>What are the colors of the bus in the image?", "a": ["The bus ... ."]}, ...}

Its sources: the first 50,000 AI Challenger caption images (``q`` one of two fixed Chinese prompts,
``这副图像描述了什么？<|extra_0|>`` or ``<|extra_0|>这幅图像中有什么？``, picked at random; ``a`` the image's
five captions) and LLaVA's ``complex_reasoning_77k`` (``q`` the record's first question with ``<image>``
replaced by ``<|extra_0|>`` and every newline removed; ``a`` a list holding the first answer; later turns
are dropped). Its dataset walks the image map (an image listed twice keeps its last ID; captions no
entry names are never read), loads ``path + iamge_file``, picks one of ``a`` at random on every visit, and
renders Qwen-1's ``make_context(q, system="你是一位图像理解助手。")`` followed by the answer; its collator
appends ``<|endoftext|>`` and supervises the answer and that token only.

:func:`convert_vlm_learning_data` writes the same samples as LLaVA conversation records, one per image-map
entry: ``{"id": ID, "image": FOLDER + FILE, "conversations": [{"from": "human", "value": q with <|extra_0|>
as <image>}, {"from": "gpt", "value": answer}]}``. Trained with ``model.image_token: "<|extra_0|>"``,
``data.system_prompt: "你是一位图像理解助手。"`` and ``data.end_token: "<|endoftext|>"``, zoo builds the ids
and labels the reference's collator builds (``tests/test_vlm_learning_data.py`` checks it token by token).

A static file cannot redraw the caption on every visit: ``captions="one"`` (default) draws one per image
with ``seed`` (one epoch of the reference, in count and mixture), ``captions="all"`` writes one record per
caption (every caption seen each epoch; the AI Challenger share grows fivefold).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo.checkpoint.atomic import atomic_directory, mark_output, marked_files
from zoo.core.records import DATA_IMAGE_TOKEN, MAX_DATA_BYTES, ON_ERROR, DataError
from zoo.errors import ZooError, suggest
from zoo.sdk.limits import brief
from zoo.sdk.yaml_io import read_text_file

__all__ = [
    "CAPTIONS",
    "OUTPUT_KIND",
    "REFERENCE_END_TOKEN",
    "REFERENCE_IMAGE_TOKEN",
    "REFERENCE_SYSTEM_PROMPT",
    "convert_vlm_learning_data",
    "parse_image_paths",
]

logger = logging.getLogger(__name__)

REFERENCE_IMAGE_TOKEN = "<|extra_0|>"  # the reference's replace_token_id
REFERENCE_SYSTEM_PROMPT = "你是一位图像理解助手。"  # its dataset's make_context(system=...)
REFERENCE_END_TOKEN = "<|endoftext|>"  # its collator's tokenizer.eod_id
CAPTIONS = ("one", "all")
OUTPUT_KIND = "vlm-learning-data"
TRAIN_FILE, SUMMARY_FILE = "train.json", "summary.json"
_FILE_KEYS = ("iamge_file", "image_file")  # the reference's spelling, then the forks'
_SHOWN_PROBLEMS = 20


def parse_image_paths(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["OLD=NEW", ...]`` (``--image-path``) as ``{OLD: NEW}``; a ``ZooError`` for a malformed pair."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ZooError(
                f"--image-path = {brief(pair)} is not valid; expected OLD=NEW (a folder of the image map = where it is now)"
            )
        mapping[old] = new
    return mapping


def convert_vlm_learning_data(
    image_map: str | Path,
    captions: str | Path,
    out_dir: str | Path,
    *,
    image_paths: Mapping[str, str] | None = None,
    captions_mode: str = "one",
    seed: int = 0,
    on_error: str = "error",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``OUT_DIR/train.json`` (LLaVA JSON) and ``OUT_DIR/summary.json`` from the reference's two files.

    Args:
        image_map: the reference's ``image_map_b.json``.
        captions: its ``captions_b.json``.
        out_dir: written atomically (``zoo.checkpoint.atomic``); a directory zoo did not write is refused unless
            ``overwrite`` (files of the user's there are kept either way).
        image_paths: ``{FOLDER: NEW_FOLDER}``: where the image map's ``path`` folders are now (each ``OLD``
            must be one of its folders; a trailing ``/`` does not matter).
        captions_mode: ``one`` (one caption per image, drawn with ``seed``) or ``all`` (a record per caption).
        seed: the draw of ``one``.
        on_error: ``error`` stops at the first bad record; ``skip`` leaves bad records out and counts them.
        overwrite: write into a directory that is not a previous output of this command.

    Returns:
        The summary also written to ``summary.json`` (counts, the problems of skipped records, and the
        recipe settings the records are meant for).

    Raises:
        DataError: a file that is not the reference's format, or a bad record (named by file, index and
            key) when ``on_error`` is ``error``.
    """
    if captions_mode not in CAPTIONS:
        raise ZooError(f"--captions = {brief(captions_mode)} is not valid; {suggest(str(captions_mode), CAPTIONS)}")
    if on_error not in ON_ERROR:
        raise ZooError(f"--on-error = {brief(on_error)} is not valid; {suggest(str(on_error), ON_ERROR)}")
    map_file, captions_file = Path(image_map), Path(captions)
    entries = _read_object(map_file, "image map (image_map_b.json)")
    records = _read_object(captions_file, "captions (captions_b.json)")
    folders = _remap(entries, dict(image_paths or {}), map_file)
    positions = {key: index for index, key in enumerate(records)}
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    problems: list[str] = []
    used: set[str] = set()
    line_breaks = 0
    for index, (key, entry) in enumerate(entries.items()):
        try:
            ident, image = _entry(entry, folders, f"{map_file}: entry {index} (key {brief(key)})")
            at = f" (entry {positions[ident]})" if ident in positions else ""
            where = f"{captions_file}: record {ident!r}{at}, named by {map_file} entry {index}"
            question, answers = _record(records.get(ident), where)
        except DataError as error:
            if on_error == "error":
                raise
            problems.append(str(error))
            continue
        used.add(ident)
        chosen = answers if captions_mode == "all" else [rng.choice(answers)]
        line_breaks += sum(_starts_with_line_break(answer) for answer in chosen)
        for number, answer in enumerate(chosen):
            out.append({
                "id": ident if len(chosen) == 1 else f"{ident}-{number}",
                "image": image,
                "conversations": [
                    {"from": "human", "value": question.replace(REFERENCE_IMAGE_TOKEN, DATA_IMAGE_TOKEN)},
                    {"from": "gpt", "value": answer},
                ],
            })  # fmt: skip
    if problems:
        logger.warning("%s: skipped %d bad entries (--on-error skip); first: %s", map_file, len(problems), problems[0])
    summary = {
        "format": "zoo.vlm-learning-data",
        "image_map": str(map_file),
        "captions": str(captions_file),
        "records": len(out),
        "images": len(entries) - len(problems),
        "skipped": len(problems),
        "problems": problems[:_SHOWN_PROBLEMS],
        "unused_captions": len(records) - len(used),  # no image-map entry names them: the reference never reads them
        "answers_starting_with_a_line_break": int(line_breaks),
        "captions_mode": captions_mode,
        "seed": seed,
        "image_paths": dict(image_paths or {}),
        "recipe": {
            "model.image_token": REFERENCE_IMAGE_TOKEN,
            "data.system_prompt": REFERENCE_SYSTEM_PROMPT,
            "data.end_token": REFERENCE_END_TOKEN,
        },
    }
    _write(Path(out_dir), out, summary, overwrite)
    return summary


# -- reading ----------------------------------------------------------------------------------------
def _read_object(path: Path, what: str) -> dict[str, Any]:
    try:  # a regular file only, opened non-blocking and bounded, as every data file
        text = read_text_file(path, what=what, limit=MAX_DATA_BYTES)
    except ZooError as error:
        raise DataError(str(error)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from error
    except RecursionError as error:
        raise DataError(f"{path}: the JSON is nested too deeply") from error
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: the {what} is a JSON {type(data).__name__}; the reference's process_image.py writes an object "
            "keyed by image file (image map) or by ID (captions)"
        )
    return data


def _remap(entries: Mapping[str, Any], image_paths: dict[str, str], map_file: Path) -> dict[str, str]:
    """``{folder as written: folder to use}`` for every ``path`` of the map; each ``--image-path OLD`` must occur."""
    found = {e["path"] for e in entries.values() if isinstance(e, Mapping) and isinstance(e.get("path"), str)}
    folders = {folder: folder for folder in found}
    for old, new in image_paths.items():
        matches = [f for f in found if f.rstrip("/") == old.rstrip("/")]
        if not matches:
            raise ZooError(
                f"--image-path {brief(old)}=...: no entry of {map_file} has that folder; its folders: "
                + (", ".join(repr(f) for f in sorted(found)[:8]) or "none")
            )
        folders.update({f: new for f in matches})
    return folders


def _entry(entry: Any, folders: Mapping[str, str], where: str) -> tuple[str, str]:
    """An image-map entry's caption ID (a string, as the captions file keys it) and its image path."""
    if not isinstance(entry, Mapping):
        raise DataError(
            f"{where}: expected an object with {_FILE_KEYS[0]!r}, 'ID' and 'path', got {type(entry).__name__}"
        )
    name = next((entry[k] for k in _FILE_KEYS if k in entry), None)
    if not isinstance(name, str) or not name.strip():
        raise DataError(
            f"{where}: {_FILE_KEYS[0]!r} (or {_FILE_KEYS[1]!r}) = {brief(name)}: expected the image's file name"
        )
    ident = entry.get("ID")
    if not isinstance(ident, int) or isinstance(ident, bool):
        raise DataError(
            f"{where}: 'ID' = {brief(ident)}: expected the integer that keys its record in the captions file"
        )
    folder = entry.get("path")
    if not isinstance(folder, str):
        raise DataError(f"{where}: 'path' = {brief(folder)}: expected the image's folder")
    folder = folders.get(folder, folder)
    image = folder + name if not folder or folder.endswith("/") else f"{folder}/{name}"  # the reference: path + file
    return str(ident), image


def _record(record: Any, where: str) -> tuple[str, list[str]]:
    """A captions record's question and answers, checked as the reference's dataset and model use them."""
    if record is None:
        raise DataError(f"{where}: no such record in the captions file")
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: expected an object with 'q' and 'a', got {type(record).__name__}")
    question, answers = record.get("q"), record.get("a")
    if not isinstance(question, str):
        raise DataError(f"{where}: 'q' = {brief(question)}: expected the question text")
    count = question.count(REFERENCE_IMAGE_TOKEN)
    if count != 1:
        raise DataError(
            f"{where}: 'q' holds {count} {REFERENCE_IMAGE_TOKEN!r}; the reference splices its one image at exactly "
            f"one: {brief(question)}"
        )
    if DATA_IMAGE_TOKEN in question:
        raise DataError(f"{where}: 'q' holds the text {DATA_IMAGE_TOKEN!r}, zoo's image placeholder: {brief(question)}")
    if isinstance(answers, str):
        answers = [answers]  # a single caption (later forks accept it so)
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a for a in answers):
        raise DataError(f"{where}: 'a' = {brief(answers)}: expected a non-empty list of answer texts")
    for answer in answers:
        for token in (REFERENCE_IMAGE_TOKEN, DATA_IMAGE_TOKEN):
            if token in answer:
                raise DataError(f"{where}: an answer holds {token!r}; images go in the question: {brief(answer)}")
    return question, answers


def _starts_with_line_break(answer: str) -> bool:
    """Whether an answer's leading whitespace holds a line break: the one case where zoo's ids can differ.

    The reference tokenizes the prompt (ending ``assistant\\n``) and the answer apart; zoo tokenizes the
    whole text, where Qwen's split pattern joins that newline with the answer's leading line breaks.
    """
    leading = answer[: len(answer) - len(answer.lstrip())]
    return "\n" in leading or "\r" in leading


# -- writing ----------------------------------------------------------------------------------------
def _write(out_dir: Path, records: list[dict[str, Any]], summary: dict[str, Any], overwrite: bool) -> None:
    with atomic_directory(out_dir, owned_files=marked_files(OUTPUT_KIND), what="VLM-learning data conversion",
                          overwrite=overwrite) as tmp:  # fmt: skip
        lines = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records)
        (tmp / TRAIN_FILE).write_text(f"[\n{lines}\n]\n" if records else "[]\n", encoding="utf-8")
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        mark_output(tmp, OUTPUT_KIND)
