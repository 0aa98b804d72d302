"""Held-out evaluation: greedy answers scored by exact match, and the loss on the reference answers.

For each record the prompt is the conversation up to its last assistant turn (images included), and
the reference is that turn. Answers are generated greedily in batches with left padding; a
prediction matches when it equals the reference after :func:`zoo.train.scoring.normalize_answer`
(stripped, case-folded, trailing punctuation dropped). The loss is the token-weighted mean
cross-entropy of the references, teacher-forced, with labels on the last assistant turn only.
``blank_images=True`` feeds a mid-grey image of the same size in place of every image, the ablation
that shows whether the answers come from the images.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from zoo.core.multimodal import IGNORE_INDEX
from zoo.train.data import DataCollator, LlavaDataset
from zoo.train.scoring import exact_match, majority_baseline

__all__ = ["evaluate"]


def evaluate(
    model: Any,
    data: str | Path | Sequence[Mapping[str, Any]],
    *,
    image_folder: str | Path | None = None,
    blank_images: bool = False,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    max_length: int = 1 << 30,
) -> dict[str, Any]:
    """Score ``model`` on LLaVA conversation records.

    Args:
        model: a ``MultiModal``.
        data: a JSON/JSONL file or records in memory.
        image_folder: where relative image paths resolve (default: the data file's folder).
        blank_images: replace every image with a mid-grey one of the same size.
        max_new_tokens: the longest answer generated.
        batch_size: records per generation / loss batch.
        max_length: truncate the teacher-forced sequences (prompts are never truncated).

    Returns:
        ``accuracy``, ``n``, ``correct``, ``loss``, ``majority_baseline`` (best score of a constant
        answer per question ``type``, or overall), ``by_type`` (when records carry a ``type``),
        ``blank_images``, ``seconds`` and ``predictions`` (id, type, reference, prediction, correct).

    Example:
        >>> result = evaluate(zoo.load("runs/shapes"), "data/shapes/eval.json")
        >>> result["accuracy"], result["loss"]
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    dataset = LlavaDataset(data, model, image_folder=image_folder, max_length=max_length,
                           blank_images=blank_images, supervise="last")  # fmt: skip
    conversations = dataset.conversations
    references = [c.messages[c.last_assistant]["content"] for c in conversations]
    types = [c.extra.get("type") for c in conversations]
    tokenizer = model.lm.tokenizer
    left, right = DataCollator.from_model(model, padding_side="left"), DataCollator.from_model(model)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    answers: list[str] = []
    loss_sum, loss_tokens = 0.0, 0
    try:
        with torch.no_grad():
            for first in range(0, len(conversations), batch_size):
                chunk = conversations[first : first + batch_size]
                prompts = [dataset.encode_prompt(conversation) for conversation in chunk]
                batch = _to(left(prompts), model)
                output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)  # [B, T + new]
                new_tokens = output[:, batch["input_ids"].shape[1] :]  # [B, new]
                answers += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                forced = _to(right([dataset.encode(c) for c in chunk]), model)
                count = int((forced["labels"][:, 1:] != IGNORE_INDEX).sum())  # the LM shifts labels by one
                if count:
                    loss_sum += float(model(**forced).loss) * count
                    loss_tokens += count
    finally:
        model.train(was_training)
    correct = [exact_match(a, r) for a, r in zip(answers, references)]
    result: dict[str, Any] = {
        "accuracy": sum(correct) / max(1, len(correct)),
        "n": len(correct),
        "correct": sum(correct),
        "loss": loss_sum / loss_tokens if loss_tokens else float("nan"),
        "majority_baseline": majority_baseline(references, types),
        "blank_images": blank_images,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if any(t is not None for t in types):
        by_type: dict[str, list[bool]] = {}
        for kind, ok in zip(types, correct):
            by_type.setdefault(str(kind), []).append(ok)
        result["by_type"] = {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(by_type.items())}
    result["predictions"] = [
        {"id": c.id, "type": t, "reference": r, "prediction": a, "correct": ok}
        for c, t, r, a, ok in zip(conversations, types, references, answers, correct)
    ]
    return result


def _to(batch: dict[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
    return {key: value.to(model.device) for key, value in batch.items()}
