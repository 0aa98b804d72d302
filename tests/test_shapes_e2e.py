"""The Must-show of issue 8: zoo data shapes + zoo train + zoo eval learn a task that needs the image.

Trains ``examples/shapes/train.yaml`` (its model and train sections, the data written here) and asserts
held-out exact match >= 60% with images and <= chance + 10 points with blank images. With 150 held-out
questions and chance near 28%, 60% cannot come from luck (a binomial tail below 1e-14). Measured with
this config: 74% (colour 100%, position 74%, shape 48%), 27% with blank images; the issue's goal of 90%
is not reached yet (shape does not generalise from the frozen random tower).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.config import read_yaml
from zoo.evaluate import evaluate
from zoo.shapes import write_shapes
from zoo.train import train

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shapes" / "train.yaml"


@pytest.mark.slow
def test_a_tiny_composition_learns_the_shapes_task_and_fails_without_images(tmp_path):
    summary = write_shapes(tmp_path / "data", train=2000, eval=150, seed=0)
    spec = read_yaml(EXAMPLE)
    spec["data"] = {**spec["data"], "train": str(tmp_path / "data/train.json"), "eval": None}
    spec["train"] = {**spec["train"], "eval_steps": None}
    result = train(spec, output_dir=tmp_path / "run")
    import zoo

    model = zoo.load(result.final_checkpoint)
    seen = evaluate(model, tmp_path / "data/eval.json", max_new_tokens=8, batch_size=50)
    blank = evaluate(model, tmp_path / "data/eval.json", max_new_tokens=8, batch_size=50, blank_images=True)
    print(f"exact match {seen['accuracy']:.1%}, blank images {blank['accuracy']:.1%}, chance {summary['chance']:.1%}")
    assert seen["n"] == 150
    assert seen["accuracy"] >= 0.60, seen["by_type"]
    assert blank["accuracy"] <= summary["chance"] + 0.10, blank["by_type"]
