"""``zoo data shapes``: deterministic, held-out split distinct, images hold what the answers say."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from zoo.checkpoint.claim import LOCK
from zoo.cli.app import main
from zoo.errors import ZooError
from zoo.train.shapes import COLOURS, FACTORS, POSITIONS, SHAPES, Scene, draw, write_shapes


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file the task wrote; the claim's lock is left out (it names the run: pid, start time)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK}  # fmt: skip


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    write_shapes(tmp_path / "a", train=12, eval=6, seed=3, image_size=32)
    write_shapes(tmp_path / "b", train=12, eval=6, seed=3, image_size=32)
    write_shapes(tmp_path / "c", train=12, eval=6, seed=4, image_size=32)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["train.json"] != digest(tmp_path / "c")["train.json"]


def test_held_out_images_never_repeat_training_images_and_answers_are_balanced(tmp_path):
    summary = write_shapes(tmp_path, train=240, eval=144, seed=0, image_size=32)
    files = digest(tmp_path / "images")
    train = {h for name, h in files.items() if name.startswith("train")}
    held_out = {h for name, h in files.items() if name.startswith("eval")}
    assert len(held_out) == 144 and not train & held_out
    records = json.loads((tmp_path / "eval.json").read_text())
    for kind, values in FACTORS.items():
        answers = Counter(r["conversations"][-1]["value"] for r in records if r["type"] == kind)
        assert set(answers) == set(values) and len(set(answers.values())) == 1  # uniform within the type
    assert summary["chance"] == pytest.approx((1 / len(COLOURS) + 1 / len(SHAPES) + 1 / len(POSITIONS)) / 3, abs=1e-3)


def test_questions_do_not_give_the_answer_away(tmp_path):
    write_shapes(tmp_path, train=300, eval=0, seed=1, image_size=32)
    records = json.loads((tmp_path / "train.json").read_text())
    answers_per_question: dict[str, set] = {}
    for record in records:
        question = record["conversations"][0]["value"]
        assert question.startswith("<image>\n")
        answers_per_question.setdefault(question, set()).add(record["conversations"][-1]["value"])
    for question, answers in answers_per_question.items():
        kind = next(r["type"] for r in records if r["conversations"][0]["value"] == question)
        assert answers == set(FACTORS[kind]), question


@pytest.mark.parametrize("colour", list(COLOURS))
@pytest.mark.parametrize("position", list(POSITIONS))
def test_drawn_image_shows_the_colour_and_position_it_names(colour, position):
    pixels = np.asarray(draw(Scene(colour, "square", position, radius=18, dx=3, dy=-3), 64)).astype(int)
    ink = np.abs(pixels - 255).sum(-1) > 150  # [H, W] clearly not background
    ys, xs = np.nonzero(ink)
    expected = {"top": ys.mean() < 26, "bottom": ys.mean() > 38, "left": xs.mean() < 26, "right": xs.mean() > 38}
    assert expected[position]
    assert np.abs(pixels[ink].mean(0) - COLOURS[colour]).max() < 25


def test_drawn_shapes_differ_in_how_they_fill_their_box():
    def fill(shape: str) -> float:
        ink = np.abs(np.asarray(draw(Scene("blue", shape, "left", 20, 0, 0), 128)).astype(int) - 255).sum(-1) > 150
        ys, xs = np.nonzero(ink)
        return ink.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))

    assert fill("square") > 0.95 and 0.72 < fill("circle") < 0.85 and 0.4 < fill("triangle") < 0.6


def test_cli_writes_the_task_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "shapes"
    assert main(["data", "shapes", str(out), "--train", "9", "--eval", "3", "--image-size", "24", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"] == 9 and summary["eval"] == 3
    assert json.loads((out / "meta.json").read_text()) == summary
    assert len(list((out / "images").glob("*.png"))) == 12
    assert main(["data", "shapes", str(out), "--train", "9"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(["data", "shapes", str(out), "--train", "9", "--eval", "0", "--overwrite"]) == 0


def test_an_image_size_past_the_bound_is_refused_before_anything_is_drawn(tmp_path):
    # 100000 px a side is 30 GB per image: it must fail at once, not in the out-of-memory killer
    with pytest.raises(ZooError, match=r"--image-size = 100000 is too large; use at most 1024"):
        write_shapes(tmp_path, train=1, eval=1, image_size=100_000)
    assert not (tmp_path / "images").exists()
