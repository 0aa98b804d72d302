"""A visual question-answering task zoo generates itself: coloured shapes drawn with PIL.

Each image shows one shape on a white canvas: a colour (red, green, blue, yellow) x a shape (circle,
square, triangle) x a position (top, bottom, left, right), with jittered size and offset. Each record
asks one question whose one-word answer can only be read from the image::

    {"id": "eval-00003", "image": "images/eval-00003.png", "type": "colour",
     "conversations": [{"from": "human", "value": "<image>\\nWhat colour is the shape?"},
                       {"from": "gpt", "value": "blue"}]}

Question types take turns and the answers of a type cycle through its values, so a model that ignores the image can
at best answer the most frequent answer of each type: ``chance`` in ``meta.json`` (about 28%). The
held-out split is drawn from its own random stream and never repeats a training image.

Example:
    >>> summary = write_shapes("data/shapes", train=2000, eval=300, seed=0)
    >>> summary["chance"]
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Any

from zoo.checkpoint.claim import claim_directory
from zoo.errors import ZooError
from zoo.train.scoring import majority_baseline

__all__ = [
    "COLOURS", "MAX_IMAGE_SIZE", "OUTPUT_KIND", "POSITIONS", "QUESTIONS", "SHAPES", "Scene", "draw", "scenes",
    "write_shapes",
]  # fmt: skip

OUTPUT_KIND = "zoo shapes data"  # the marker kind of a claimed OUT_DIR (zoo.checkpoint.claim)

COLOURS = {"red": (220, 40, 40), "green": (30, 160, 60), "blue": (40, 80, 230), "yellow": (240, 200, 20)}
SHAPES = ("circle", "square", "triangle")
POSITIONS = {"top": (0.5, 0.3), "bottom": (0.5, 0.7), "left": (0.3, 0.5), "right": (0.7, 0.5)}  # centre (x, y)
QUESTIONS = {
    "colour": ("What colour is the shape?", "What color is the shape?", "Which colour is it?"),
    "shape": ("What shape is it?", "Which shape is drawn?", "What is the shape?"),
    "position": ("Where is the shape?", "On which side is the shape?", "Where is it drawn?"),
}
FACTORS = {"colour": tuple(COLOURS), "shape": SHAPES, "position": tuple(POSITIONS)}
BACKGROUND = (255, 255, 255)
RADIUS = (22, 28)  # shape radius, in 1/100 of the image side
MAX_IMAGE_SIZE = 1024  # pixels a side; the task needs far less (default 64)
JITTER = 4  # centre offset, same unit


@dataclass(frozen=True)
class Scene:
    """One image's content; sizes and offsets are in 1/100 of the image side."""

    colour: str
    shape: str
    position: str
    radius: int
    dx: int
    dy: int

    def answer(self, question_type: str) -> str:
        """The one-word answer to a question of ``question_type``."""
        return str(getattr(self, question_type))


def draw(scene: Scene, size: int) -> Any:
    """Render ``scene`` as a ``size`` x ``size`` RGB PIL image."""
    from PIL import Image, ImageDraw

    scale = 4  # draw large and downsample: smooth edges at any size
    side = size * scale
    image = Image.new("RGB", (side, side), BACKGROUND)
    pen = ImageDraw.Draw(image)
    fx, fy = POSITIONS[scene.position]
    cx, cy = (fx + scene.dx / 100) * side, (fy + scene.dy / 100) * side
    r = scene.radius / 100 * side
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "square":
        s = r * 0.85  # same area impression as the circle
        pen.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    else:
        pen.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def scenes(rng: random.Random) -> Iterator[Scene]:
    """An endless stream of scenes, each factor uniform."""
    while True:
        yield Scene(
            colour=rng.choice(list(COLOURS)),
            shape=rng.choice(SHAPES),
            position=rng.choice(list(POSITIONS)),
            radius=rng.randint(RADIUS[0], RADIUS[1]),
            dx=rng.randint(-JITTER, JITTER),
            dy=rng.randint(-JITTER, JITTER),
        )


def _split(name: str, count: int, seed: int, avoid: set[tuple], folder: Path, size: int) -> tuple[list[dict], set]:
    rng = random.Random(f"zoo-shapes:{seed}:{name}")
    stream = scenes(rng)
    records, seen = [], set()
    types = list(QUESTIONS)
    for index in range(count):
        question_type = types[index % len(types)]
        values = list(FACTORS[question_type])
        # the answers of a question type cycle through its values: uniform, so chance is known
        asked: dict[str, Any] = {question_type: values[(index // len(types)) % len(values)]}
        scene = replace(next(stream), **asked)
        while astuple(scene) in avoid or astuple(scene) in seen:
            scene = replace(next(stream), **asked)
        seen.add(astuple(scene))
        ident = f"{name}-{index:05d}"
        draw(scene, size).save(folder / "images" / f"{ident}.png")
        question = rng.choice(QUESTIONS[question_type])
        records.append({
            "id": ident,
            "image": f"images/{ident}.png",
            "type": question_type,
            "conversations": [
                {"from": "human", "value": f"<image>\n{question}"},
                {"from": "gpt", "value": scene.answer(question_type)},
            ],
        })  # fmt: skip
    return records, seen


def write_shapes(
    out_dir: str | Path, *, train: int = 6000, eval: int = 300, seed: int = 0, image_size: int = 64,
    overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Write ``train.json``, ``eval.json``, ``meta.json`` and ``images/*.png`` under ``out_dir``.

    Returns the summary also written to ``meta.json`` (counts, classes, ``chance``).
    Deterministic for a ``seed``; the eval split never repeats a training scene. ``out_dir`` is claimed
    first (:mod:`zoo.checkpoint.claim`): a folder holding files zoo did not write is refused unless ``overwrite``,
    which also replaces shapes data written there before.
    """
    if train < 0 or eval < 0:
        raise ZooError(f"--train = {train}, --eval = {eval}: counts must be >= 0")
    if image_size < 16:
        raise ZooError(f"--image-size = {image_size} is too small to draw shapes; use at least 16")
    if image_size > MAX_IMAGE_SIZE:  # the side is squared per image: 100000 px would be 30 GB each
        raise ZooError(f"--image-size = {image_size} is too large; use at most {MAX_IMAGE_SIZE}")
    max_scenes = len(COLOURS) * len(SHAPES) * len(POSITIONS) * (RADIUS[1] - RADIUS[0] + 1) * (2 * JITTER + 1) ** 2
    if train + eval > max_scenes // 4:  # a quarter: each question fixes one factor, and draws must stay quick
        raise ZooError(f"--train + --eval = {train + eval} is more than this task holds; use at most {max_scenes // 4}")
    if str(out_dir) == "":
        raise ZooError("OUT_DIR '' is empty; give the folder to write the shapes data into")
    with claim_directory(out_dir, kind=OUTPUT_KIND, key="OUT_DIR", overwrite=overwrite):
        return _write(Path(out_dir), train, eval, seed, image_size, overwrite)


def _write(out: Path, train: int, eval: int, seed: int, image_size: int, overwrite: bool) -> dict[str, Any]:
    written = [out / n for n in ("train.json", "eval.json", "meta.json") if (out / n).exists()]
    if written and not overwrite:
        raise ZooError(f"{out} already holds {written[0].name}; pass --overwrite to replace the shapes data there")
    (out / "images").mkdir(parents=True, exist_ok=True)
    train_records, seen = _split("train", train, seed, set(), out, image_size)
    eval_records, _ = _split("eval", eval, seed, seen, out, image_size)
    summary = {
        "task": "zoo shapes",
        "seed": seed,
        "image_size": image_size,
        "train": len(train_records),
        "eval": len(eval_records),
        "colours": list(COLOURS),
        "shapes": list(SHAPES),
        "positions": list(POSITIONS),
        "chance": round(
            majority_baseline(
                [r["conversations"][-1]["value"] for r in eval_records], [r["type"] for r in eval_records]
            ),
            4,
        ),
    }
    for name, records in (("train.json", train_records), ("eval.json", eval_records), ("meta.json", summary)):
        (out / name).write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return summary
