"""``zoo eval`` / ``zoo.train.evaluate``: exact-match normalisation, batching, blank images, the CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import zoo
from zoo.cli.app import main
from zoo.train.data import BLANK_RGB
from zoo.train.evaluate import evaluate
from zoo.train.scoring import exact_match, majority_baseline, normalize_answer
from zoo.train.shapes import write_shapes


@pytest.mark.parametrize(
    ("prediction", "reference", "same"),
    [
        ("Red", "red", True),
        ("  red.\n", "red", True),
        ("red!?", "RED", True),
        ("red  circle", "red circle", True),
        ("Ｒed", "red", False),  # no Unicode folding beyond case
        ("red circle", "red", False),
        ("(red)", "red", False),  # only trailing punctuation goes
        ("", "red", False),
        ("Straße", "STRASSE", True),  # case-folded, not just lower-cased
    ],
)
def test_exact_match_normalisation(prediction, reference, same):
    assert exact_match(prediction, reference) is same


def test_normalize_answer_and_majority_baseline():
    assert normalize_answer("  Blue Square... ") == "blue square"
    assert majority_baseline(["a", "a", "b", "c"]) == 0.5
    assert majority_baseline(["a", "a", "b", "c"], ["x", "x", "y", "y"]) == 0.75
    assert majority_baseline(["Red.", "red", "blue"]) == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    write_shapes(out, train=0, eval=12, seed=0, image_size=32)
    return out


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return zoo.build("tiny-clip-mlp-qwen2").eval()


def test_predictions_do_not_depend_on_the_batch_size(model, shapes):
    records = json.loads((shapes / "eval.json").read_text())[:5]  # prompts of different lengths: left padding
    one = evaluate(model, records, image_folder=shapes, batch_size=1, max_new_tokens=4)
    many = evaluate(model, records, image_folder=shapes, batch_size=5, max_new_tokens=4)
    assert [p["prediction"] for p in one["predictions"]] == [p["prediction"] for p in many["predictions"]]
    assert math.isclose(one["loss"], many["loss"], rel_tol=1e-4)
    assert one["n"] == 5 and set(one["by_type"]) == {"colour", "shape", "position"}


def test_accuracy_counts_matches_against_the_last_assistant_turn(model, shapes, tmp_path):
    first = evaluate(model, shapes / "eval.json", max_new_tokens=4)
    records = json.loads((shapes / "eval.json").read_text())
    for record, prediction in zip(records, first["predictions"]):
        assert record["id"] == prediction["id"]
        # the model's own answers, shouted and punctuated, as references: every one must match
        record["conversations"][-1]["value"] = prediction["prediction"].upper() + "."
    (tmp_path / "own.json").write_text(json.dumps(records))
    scored = evaluate(model, tmp_path / "own.json", image_folder=shapes, max_new_tokens=4)
    assert scored["accuracy"] == 1.0 and scored["correct"] == 12
    for record in records[:5]:
        record["conversations"][-1]["value"] = "never said"
    (tmp_path / "wrong.json").write_text(json.dumps(records))
    assert evaluate(model, tmp_path / "wrong.json", image_folder=shapes, max_new_tokens=4)["correct"] == 7


def test_blank_images_replace_what_the_tower_sees(model, shapes):
    seen: list[torch.Tensor] = []
    hook = model.vision.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        evaluate(model, shapes / "eval.json", max_new_tokens=2, batch_size=6)
        real = torch.cat(seen)
        seen.clear()
        blank = evaluate(model, shapes / "eval.json", max_new_tokens=2, batch_size=6, blank_images=True)
        fed = torch.cat(seen)
    finally:
        hook.remove()
    from PIL import Image

    grey = model.vision.preprocessor([Image.new("RGB", (32, 32), BLANK_RGB)])[0]
    assert fed.shape == real.shape and fed.shape[0] >= 12
    assert all(torch.equal(image, grey) for image in fed)
    assert not any(torch.equal(image, grey) for image in real)
    assert blank["blank_images"] is True


def test_cli_scores_a_saved_checkpoint_with_json(model, shapes, tmp_path, capsys):
    zoo.save(model, tmp_path / "ckpt")
    argv = ["eval", str(tmp_path / "ckpt"), "--data", str(shapes / "eval.json"), "--max-new-tokens", "3",
            "--batch-size", "4", "--json", "--predictions", str(tmp_path / "p.jsonl")]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 12 and 0.0 <= result["accuracy"] <= 1.0 and math.isfinite(result["loss"])
    assert result["blank_images"] is False and result["majority_baseline"] == pytest.approx(0.25 + 1 / 12, abs=0.01)
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 12
    assert main(["eval", "tiny-clip-mlp-qwen2", "--data", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_evaluates_the_model_section_of_a_training_file(shapes, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: {vision: {name: tiny-clip}, projector: {name: mlp2x-gelu}, lm: {name: tiny-qwen2}}\n"
        f"data: {{train: {shapes / 'eval.json'}}}\ntrain: {{max_steps: 1}}\n",
        encoding="utf-8",
    )
    argv = ["eval", str(config), "--data", str(shapes / "eval.json"), "--max-new-tokens", "1", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 12
