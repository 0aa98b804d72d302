"""``zoo bench`` with ``data:`` and ``train:``: every combination trained alike, scored held out, ranked."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from zoo.bench import parse_bench, plan_grid, run_bench, write_outputs
from zoo.bench.quality import rank
from zoo.cli.app import main
from zoo.core.registry import get_registry
from zoo.errors import ConfigError
from zoo.train.shapes import write_shapes


def _zero_output(module, inputs, output):
    return output * 0.0  # the image never reaches the LM: the model can only guess from the question


@pytest.fixture
def zero_projector():
    """A throwaway plugin's projector: an MLP whose output is always zero (a crippled combination)."""
    registry = get_registry()
    real = registry.get("projector", "mlp2x-gelu")

    def build(config):
        module = real.factory(config)
        module.register_forward_hook(_zero_output)
        return module

    registry.add(dataclasses.replace(real, name="zero-projector", factory=build, plugin=""), plugin="test_quality")
    try:
        yield "zero-projector"
    finally:
        registry.remove("projector", "zero-projector")


def _quality_grid(data_dir, projectors, **train):
    return {
        "grid": {"vision": [{"name": "tiny-clip", "image_size": 32}], "projector": projectors,
                 "lm": [{"name": "tiny-qwen2", "train": "full"}]},
        "min_run_time": 0.005, "rounds": 2, "threads": 1, "max_new_tokens": 3, "prompt_len": 4, "reference": False,
        "data": {"train": str(data_dir / "train.json"), "eval": str(data_dir / "eval.json"), "max_length": 64},
        "train": {"max_steps": 200, "batch_size": 16, "lr": 3.0e-3, "scheduler": "constant", "seed": 0,
                  "save_steps": 1000, "logging_steps": 5, **train},
    }  # fmt: skip


def test_quality_sections_are_validated_with_the_key_and_the_choices(tmp_path):
    grid = {"vision": [{"name": "tiny-clip", "train": "full"}], "projector": ["linear"], "lm": ["tiny-qwen2"]}
    with pytest.raises(ConfigError, match=r"grid.vision\[0\].train: a training policy .* add data: and train:"):
        parse_bench({"grid": grid}, source="bench.yaml")
    data = {"train": "train.json", "eval": "eval.json"}
    cases = [
        ({"data": data}, "data: is set but train: is not"),
        ({"data": {"train": "train.json"}, "train": {"max_steps": 2}}, "data.eval is not set"),
        ({"data": data, "train": {"max_steps": 2, "output_dir": "x"}}, "train.output_dir"),
        ({"data": data, "train": {"max_steps": 2, "shceduler": "cosine"}}, "train.shceduler"),
    ]
    for sections, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_bench({"grid": grid, **sections}, source="bench.yaml", base_dir=tmp_path)
    spec = parse_bench({"grid": grid, "data": data, "train": {"max_steps": 2}}, source="b.yaml", base_dir=tmp_path)
    assert spec.quality.data.eval == str(tmp_path / "eval.json") and spec.to_dict()["train"] == {"max_steps": 2}
    (case,), _ = plan_grid(spec)  # the speed measurements build without the policy; training with it
    assert case.config.vision.train != "full"
    assert case.combination.model_dict(policy=True)["model"]["vision"]["train"] == "full"


@pytest.mark.slow
def test_a_crippled_combination_ranks_last(tmp_path, zero_projector):
    data_dir = tmp_path / "shapes"
    write_shapes(data_dir, train=400, eval=48, seed=0, image_size=32)
    spec = parse_bench(_quality_grid(data_dir, ["mlp2x-gelu", zero_projector]), source="quality.yaml")
    out = tmp_path / "out"
    path = tmp_path / "quality.json"
    path.write_text(json.dumps(spec.to_dict()))
    assert main(["bench", str(path), "--out", str(out), "--no-progress", "--json"]) == 0
    rows = json.loads((out / "results.json").read_text())
    ranked = rank(rows)
    assert [r["projector"] for r in ranked] == ["mlp2x-gelu", "zero-projector"], ranked
    best, crippled = ranked
    for row in ranked:
        assert row["quality_status"] == "ok" and row["train_steps"] == 200 and row["eval_n"] == 48
        assert row["train_seconds"] > 0 and row["train_samples_per_s"] > 0 and math.isfinite(row["train_loss_final"])
        assert 0 < row["trainable_params"] < row["params_total"]  # projector and LM train, the tower is frozen
    assert best["eval_accuracy"] > crippled["eval_accuracy"]
    assert crippled["blank_image_accuracy"] == crippled["eval_accuracy"]  # it never saw the images anyway
    record = json.loads((out / "run.json").read_text())
    assert sorted(record["loss_curves"]) == sorted(r["combination"] for r in ranked)
    assert all(len(curve) == 40 for curve in record["loss_curves"].values())  # a loss every 5 of 200 steps
    report = (out / "report.md").read_text()
    assert "## Quality ranking" in report and report.index("mlp2x-gelu+tiny-qwen2") < report.index("zero-projector+")
    for name in ("pareto", "loss_curves"):
        assert (out / f"{name}.png").stat().st_size > 5000


def test_diverged_and_failed_combinations_are_kept_and_ranked_last(tmp_path):
    from zoo.bench.report import plot_quality, ranking_markdown
    from zoo.bench.runner import BenchRun

    def row(name, status, accuracy=None, loss=None):
        return {"id": f"{name}/bs1", "combination": name, "vision": name, "projector": "p", "lm": "l",
                "status": "ok", "quality_status": status,
                "eval_accuracy": accuracy, "eval_loss": loss, "blank_image_accuracy": 0.3, "majority_baseline": 0.3,
                "flops_per_sample": 1e6, "forward_ms_median": 2.0}  # fmt: skip

    rows = [row("a", "diverged", 0.25), row("b", "ok", 0.5, 1.0), row("c", "failed"), row("d", "ok", 0.5, 0.8),
            row("e", "ok", 0.9, 2.0)]  # fmt: skip
    assert [r["combination"] for r in rank(rows)] == ["e", "d", "b", "a", "c"]
    spec = parse_bench({"grid": {"vision": ["tiny-clip"], "projector": ["linear"], "lm": ["tiny-qwen2"]}})
    machine = {"cpu": "cpu", "cpu_count": 2, "torch_threads": 1, "gpu": None, "torch": "t"}
    curves = {"a": [[1.0, 2.0], [2.0, None]], "b": [[1.0, 2.0], [2.0, 1.0]]}
    run = BenchRun(spec, rows, machine, loss_curves=curves)
    ranking = "\n".join(ranking_markdown(run))
    assert ranking.index("| 1 | e |") < ranking.index("| 4 | a |") < ranking.index("| 5 | c |")
    assert "| diverged |" in ranking and "| failed |" in ranking
    pareto, curves_png = plot_quality(run, tmp_path)
    assert pareto.name == "pareto.png" and curves_png.stat().st_size > 0


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def _colour_data(folder, train=64, held_out=24):
    """Solid colours with pixel noise (every file distinct): a tiny model learns them in a few dozen steps."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    for split, count in (("train", train), ("eval", held_out)):
        records = []
        for i in range(count):
            name = list(COLOURS)[i % len(COLOURS)]
            pixels = np.clip(np.array(COLOURS[name]) + rng.integers(-20, 21, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / "images" / f"{split}-{i}.png")
            records.append({"id": f"{split}{i}", "image": f"images/{split}-{i}.png", "type": "colour",
                            "conversations": [{"from": "human", "value": "<image>\nWhat colour is the image?"},
                                              {"from": "gpt", "value": name}]})  # fmt: skip
        (folder / f"{split}.json").write_text(json.dumps(records))
    return folder


def _colour_grid(data_dir, projectors, steps, **quality):
    grid = _quality_grid(data_dir, projectors, max_steps=steps, batch_size=8)
    grid["train"].pop("save_steps")
    return {**grid, "quality": quality}


def test_quality_section_is_validated(tmp_path):
    base = _quality_grid(tmp_path, ["linear"])
    cases = [
        ({"seeds": 0}, r"quality\.seeds = 0 is out of range; expected an integer in \[1, 1000\]"),
        ({"seeds": 10**30}, r"quality\.seeds = 1000000000000000000000000000000 is out of range"),
        ({"seed": 2}, r"unknown key 'quality\.seed'; did you mean 'seeds'"),
        ({"schedule": "halfing"}, r"quality\.schedule = 'halfing' is not valid; did you mean 'halving'"),
        ({"schedule": "halving"}, r"needs quality\.min_steps"),
        ({"schedule": "halving", "min_steps": 200}, r"quality\.min_steps = 200 is not below train\.max_steps = 200"),
        ({"eta": 3}, r"quality\.eta is set but quality\.schedule is not 'halving'"),
        ({"confidence": 95}, r"quality\.confidence = 95: expected a number in \(0, 1\)"),
    ]
    for quality, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_bench({**base, "quality": quality}, source="bench.yaml", base_dir=tmp_path)
    speed_only = {key: base[key] for key in base if key not in ("data", "train")}
    with pytest.raises(ConfigError, match="quality: is set but data: and train: are not"):
        parse_bench({**speed_only, "quality": {"seeds": 2}}, source="bench.yaml")
    spec = parse_bench({**base, "quality": {"seeds": 3}}, source="bench.yaml", base_dir=tmp_path)
    assert spec.quality.seed_values() == [0, 1, 2] and spec.to_dict()["quality"] == {"seeds": 3}


def test_three_seeds_give_intervals_and_the_crippled_combination_ranks_last_untied(tmp_path, zero_projector):
    data_dir = _colour_data(tmp_path / "colours")
    spec = parse_bench(_colour_grid(data_dir, ["mlp2x-gelu", zero_projector], 30, seeds=3), source="seeds.yaml")
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps(spec.to_dict()))
    out = tmp_path / "out"
    assert main(["bench", str(path), "--out", str(out), "--no-progress", "--json"]) == 0
    rows = json.loads((out / "results.json").read_text())
    best, crippled = rank(rows)
    assert best["projector"] == "mlp2x-gelu" and crippled["projector"] == "zero-projector"
    for row in (best, crippled):
        assert row["seeds"] == [0, 1, 2] and len(row["eval_accuracy_per_seed"]) == 3
        assert row["eval_accuracy"] == pytest.approx(sum(row["eval_accuracy_per_seed"]) / 3, abs=1e-4)
        assert row["eval_accuracy_low"] <= row["eval_accuracy"] <= row["eval_accuracy_high"]
        assert row["train_steps"] == 30 and row["train_steps_total"] == 90
        assert 0 <= row["time_tower"] < 1 and row["time_step_ms"] > 0  # where the time goes, per combination
    assert best["tied_with_best"] == "best" and crippled["tied_with_best"] is False
    assert crippled["eval_accuracy_high"] < best["eval_accuracy_low"]
    assert (
        best["feature_cache"].startswith("on: 88 images") and crippled["feature_cache"] == "on: 88 images, 0 computed"
    )
    report = (out / "report.md").read_text()
    low, high = 100 * best["eval_accuracy_low"], 100 * best["eval_accuracy_high"]
    assert f"[{low:.1f}, {high:.1f}] | best |" in report and "3 seeds" in report
    assert "## Where a training step's time goes" in report
    record = json.loads((out / "run.json").read_text())
    assert record["quality_summary"] == {"schedule": "full", "seeds": 3, "steps_total": 180}
    assert (out / "pareto.png").stat().st_size > 5000


def test_successive_halving_prunes_and_trains_at_most_half_the_steps(tmp_path, zero_projector):
    data_dir = _colour_data(tmp_path / "colours", train=32, held_out=12)
    projectors = ["mlp2x-gelu", "linear", zero_projector, "identity"]
    grid = _colour_grid(data_dir, projectors, 20, schedule="halving", eta=4, min_steps=5)
    grid["grid"]["lm"] = [{"name": "tiny-qwen2", "train": "full", "arch": {"hidden_size": 64}}]  # identity: 64 -> 64
    grid["grid"]["vision"] = [{"name": "tiny-clip", "image_size": 32, "arch": {"hidden_size": 64}}]
    spec = parse_bench(grid, source="halving.yaml")
    out = tmp_path / "out"
    run = run_bench(spec, progress=False, train_dir=tmp_path / "train")
    write_outputs(run, out)
    ranked = rank(run.results)
    summary = run.quality_summary
    assert summary["budgets"] == [5, 20] and summary["steps_full_grid"] == 4 * 20
    assert summary["steps_total"] == 3 * 5 + 20 <= summary["steps_full_grid"] / 2
    winner, *pruned = ranked
    assert winner["quality_status"] == "ok" and winner["train_steps"] == 20
    assert winner["combination"] == summary["rounds"][0]["kept"][0]
    assert [r["quality_status"] for r in pruned] == ["pruned"] * 3
    for row in pruned:
        assert row["pruned_at_step"] == 5 and row["train_steps"] == 5 and row["pruned_score"] == row["eval_accuracy"]
        assert "blank_image_accuracy" not in row
    curve = run.loss_curves[winner["combination"]]
    assert [step for step, _ in curve] == [5.0, 10.0, 15.0, 20.0]  # resumed at 5: one curve, no gap or repeat
    report = (out / "report.md").read_text()
    assert "Successive halving (eta 4, budgets [5, 20]): step 5: 4 -> 1; step 20: 1 -> 1." in report
    assert "pruned at step 5 (" in report


def test_bootstrap_intervals_are_reproducible_and_mark_ties():
    from zoo.bench.halving import budgets
    from zoo.bench.intervals import bootstrap_interval, mark_ties

    scores = [[1, 0, 1, 1, 0, 1, 1, 1], [1, 1, 0, 1, 1, 1, 0, 1], [0, 1, 1, 1, 1, 0, 1, 1]]
    mean, low, high = bootstrap_interval(scores)
    assert (mean, low, high) == bootstrap_interval(scores)  # a fixed bootstrap seed
    assert mean == pytest.approx(18 / 24) and low < mean < high <= 1
    assert bootstrap_interval([[1, 1, 1]]) == (1.0, 1.0, 1.0)
    wider = bootstrap_interval(scores, confidence=0.99)
    assert wider[1] <= low and wider[2] >= high
    rows = [{"quality_status": "ok", "eval_accuracy_low": lo, "eval_accuracy_high": hi} for lo, hi in
            [(0.7, 0.9), (0.65, 0.75), (0.5, 0.69)]]  # fmt: skip
    rows.append({"quality_status": "pruned", "eval_accuracy_low": 0.8, "eval_accuracy_high": 0.9})
    mark_ties(rows)
    assert [r.get("tied_with_best") for r in rows] == ["best", True, False, None]
    assert budgets(30, 3, 270) == [30, 90, 270] and budgets(5, 4, 20) == [5, 20] and budgets(10, 2, 25) == [10, 20, 25]
