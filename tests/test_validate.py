"""``zoo validate`` / ``zoo.validate``: every problem of a model, training or bench file in one run."""

from __future__ import annotations

import json

import pytest

import zoo
from zoo.cli.app import main
from zoo.cli.validation import Problem, check

TRAIN = """\
model:
  vision: tiny-clip
  projector: {projector}
  lm: {{name: tiny-qwen2, train: lora}}
data: {{train: {train}, eval: eval.json, image_folder: images, max_length: {max_length}}}
train: {{max_steps: 10, batch_size: 2{extra}}}
"""


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "train.json").write_text("[]", encoding="utf-8")
    (tmp_path / "eval.json").write_text("[]", encoding="utf-8")
    (tmp_path / "images").mkdir()
    return tmp_path


def _train_file(workdir, projector="mlp2x-gelu", train="train.json", max_length=64, extra=""):
    path = workdir / "train.yaml"
    path.write_text(TRAIN.format(projector=projector, train=train, max_length=max_length, extra=extra))
    return path


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_training_file_with_three_planted_errors_reports_all_three(capsys, workdir):
    path = _train_file(workdir, projector="mlp2x-gelo", train="missing.json", extra=", warmup_stepz: 3")
    code, out, err = _run(capsys, "validate", str(path))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert lines[-1] == f"zoo: error: 3 problems in {path}"
    problems = [line for line in lines[:-1] if not line.startswith("note:")]
    assert problems == [
        f"{path}: unknown key 'train.warmup_stepz'; did you mean 'warmup_ratio' or 'max_steps' or 'save_steps' or "
        "'eval_steps'?",
        f"{path}: model.projector.name = 'mlp2x-gelo' is not a registered projector; did you mean 'mlp2x-gelu'?; "
        "names of the form mlp<N>x-gelu work too (see 'zoo list projector')",
        f"{path}: data.train = '{workdir / 'missing.json'}' does not exist; expected a file",
    ]
    # what depends on the bad name is skipped, and said so
    notes = [line for line in lines if line.startswith("note:")]
    assert any("contract" in n and "fix model.projector first" in n for n in notes)
    code, out, _ = _run(capsys, "validate", str(path), "--json")
    report = json.loads(out)
    assert code == 2 and report["error"] == f"3 problems in {path}" and report["kind"] == "train"
    assert [p["key"] for p in report["problems"]] == ["train.warmup_stepz", "model.projector.name", "data.train"]
    assert [p["error"] for p in report["problems"]] == ["ConfigError", "UnknownNameError", "ConfigError"]


def test_the_python_api_returns_problems_with_key_paths(workdir):
    assert zoo.validate(_train_file(workdir)) == []
    problems = zoo.validate(_train_file(workdir, max_length=8, extra=", scheduler: cosin, bf16: true, fp16: true"))
    assert all(isinstance(p, Problem) for p in problems)
    assert [p.key for p in problems] == ["train.scheduler", "train.fp16", "data.max_length"]
    assert "did you mean 'cosine'?" in problems[0].message
    # data.max_length is checked against the planned image tokens (tiny-clip + mlp2x-gelu: 16 per image)
    assert "data.max_length = 8 is less than the 16 positions every image takes" in problems[2].message
    result = check(_train_file(workdir))
    assert result.ok and result.kind == "train" and result.summary["contract"]["image_tokens"] == 16


def test_a_valid_training_file_prints_a_summary(capsys, workdir):
    code, out, err = _run(capsys, "validate", str(_train_file(workdir)))
    assert code == 0, err
    assert out.startswith(f"ok: training file {workdir / 'train.yaml'}: tiny-clip (32, 16 tokens) -> mlp2x-gelu")
    assert "max_steps 10, batch_size 2" in out


def test_lora_target_typos_are_caught_by_the_check_build_runs(capsys, write_yaml):
    path = write_yaml(
        "model:\n  vision: tiny-clip\n  projector: mlp2x-gelu\n"
        "  lm: {name: tiny-qwen2, train: lora, lora: {targets: [q_proj, v_prj]}}\n"
    )
    expected = "model.lm.lora.targets = ['q_proj', 'v_prj']: ['v_prj'] are not linear modules of 'tiny-qwen2'"
    for command in (["validate"], ["build", "--meta"]):
        code, _, err = _run(capsys, *command, str(path))
        (line,) = err.strip().splitlines()
        assert code == 2 and expected in line and "'v_proj'" in line
    (problem,) = zoo.validate(path)
    assert problem.key == "model.lm.lora.targets"


def test_a_model_file_reports_every_section_and_every_slot(write_yaml):
    path = write_yaml(
        "model:\n  vision: {name: tiny-clip, select: pach}\n  projector: {name: mlp2x-gelu, train: lora}\n"
        "  lm: {name: tiny-qwen2, lr: -1}\n  dtype: float64\n  colour: blue\n"
    )
    problems = zoo.validate(path)
    assert [p.key for p in problems] == [
        "model.colour", "model.dtype", "model.projector.train", "model.lm.lr", "model.vision.select",
    ]  # fmt: skip
    assert "did you mean 'patch'?" in problems[-1].message


def test_a_bad_data_folder_and_a_name_typo_in_an_unreadable_model(write_yaml, workdir):
    path = workdir / "t.yaml"
    path.write_text(
        "model:\n  vision: tiny-clp\n  projector: 7\n  lm: tiny-qwen2\n"
        "data: {train: train.json, image_folder: train.json}\ntrain: {epochs: 1}\n"
    )
    result = check(path)
    assert [p.key for p in result.problems] == ["model.projector", "model.vision.name", "data.image_folder"]
    assert "did you mean 'tiny-clip'" in result.problems[1].message
    assert "is not a directory" in result.problems[2].message
    assert any("contract" in note for note in result.notes)


def test_a_bench_grid_file_validates(capsys, workdir):
    path = workdir / "bench.yaml"
    path.write_text(
        "grid:\n  vision: [tiny-clip, tiny-siglip]\n  projector: [mlp2x-gelu, {name: resampler, num_queries: 4}]\n"
        "  lm: [tiny-qwen2]\nmin_run_time: 0.05\n"
        "data: {train: train.json, eval: eval.json, max_length: 64}\ntrain: {max_steps: 5, batch_size: 2}\n"
    )
    code, out, err = _run(capsys, "validate", str(path))
    assert code == 0, err
    assert out.startswith(f"ok: bench grid {path}: 4 combinations, 4 valid, 0 skipped")
    result = check(path)
    assert result.kind == "bench" and len(result.summary["valid"]) == 4


def test_the_registered_default_bench_validates_and_lists_what_it_skips(capsys):
    code, out, _ = _run(capsys, "validate", "default", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["kind"] == "bench"
    assert report["combinations"] == len(report["valid"]) + len(report["skipped"]) and report["skipped"]
    assert all("resampler" in row["combination"] for row in report["skipped"])


def test_a_bench_file_reports_every_problem(workdir):
    path = workdir / "bench.yaml"
    path.write_text(
        "grid:\n  vision: [tiny-clip, tiny-clp]\n  projector: [{name: mlp2x-gelu, depht: 3}]\n  lm: [tiny-qwen2]\n"
        "  dtype: [float64]\nrounds: 0\nrepeats: 3\n"
    )
    problems = zoo.validate(path)
    assert [p.key for p in problems] == [
        "repeats", "grid.vision[1].name", "grid.projector[0].depht", "grid.dtype[0]", "rounds",
    ]  # fmt: skip
    assert "no longer read; timings are set by min_run_time and rounds" in problems[0].message
    assert "did you mean 'depth'?" in problems[2].message


def test_a_composition_name_and_an_unknown_target():
    assert zoo.validate("tiny-clip-mlp-qwen2") == []
    (problem,) = zoo.validate("tiny-clip-mlp-qwen")
    assert "neither a YAML file nor a registered composition" in problem.message
    assert "did you mean 'tiny-clip-mlp-qwen2'" in problem.message


def test_a_bad_value_is_told_once_not_again_by_the_rules_that_read_it(workdir):
    path = _train_file(workdir)
    path.write_text(path.read_text().replace("max_steps: 10", "max_steps: ten, bf16: yes please, fp16: true"))
    problems = zoo.validate(path)
    # no "needs exactly one of max_steps and epochs", no "bf16 and fp16 are both true": their values were bad
    assert [p.key for p in problems] == ["train.max_steps", "train.bf16"]
    assert "train.max_steps = 'ten' has the wrong type; expected an integer" in problems[0].message


def test_a_target_that_is_not_a_path_is_a_problem_not_a_crash():
    (problem,) = zoo.validate(5)
    assert "cannot validate 5: expected a YAML path" in problem.message


def test_a_checkpoint_directory_is_pointed_to_zoo_verify(tmp_path, capsys):
    import zoo
    from zoo.cli.app import main

    zoo.save(zoo.build("tiny-clip-mlp-qwen2"), tmp_path / "ckpt")
    assert main(["validate", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is a zoo checkpoint, not a YAML file: 'zoo verify" in err
