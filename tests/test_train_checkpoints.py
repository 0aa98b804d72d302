"""A run's checkpoint-N directories: --resume names an incomplete checkpoint and the last complete one, and
save_total_limit removes only zoo's complete training checkpoints (a user's checkpoint-5 folder stays)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from test_train import config

import zoo
from zoo.checkpoint.atomic import MARKER
from zoo.cli.app import main
from zoo.train.checkpoints import TRAINER_STATE, checkpoint_dirs, incomplete_reason, rotate
from zoo.train.run import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three steps, a checkpoint at each, save_total_limit 2, in a directory that holds a user's checkpoint-5."""
    tmp = tmp_path_factory.mktemp("rotate")
    spec = config(tmp, max_steps=3, save_steps=1, save_total_limit=2)
    out = Path(spec["train"]["output_dir"])
    (out / "checkpoint-5").mkdir(parents=True)  # not zoo's: a folder of the user's with that name
    (out / "checkpoint-5" / "notes.txt").write_text("mine")
    result = train(spec, overwrite=True)
    return spec, result


def _copy_run(result, to: Path, steps: tuple[int, ...]) -> Path:
    """The run's directory with only the zoo checkpoints of ``steps`` (as a run interrupted later would leave it)."""
    to.mkdir()
    shutil.copy(result.output_dir / MARKER, to)
    for step in steps:
        shutil.copytree(result.output_dir / f"checkpoint-{step}", to / f"checkpoint-{step}")
    return to


def _one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# -- save_total_limit -----------------------------------------------------------------------------------
def test_save_total_limit_removes_only_zoos_checkpoints(run):
    _, result = run
    names = sorted(p.name for p in checkpoint_dirs(result.output_dir))
    assert names == ["checkpoint-2", "checkpoint-3", "checkpoint-5"]  # checkpoint-1 rotated out; the user's kept
    assert (result.output_dir / "checkpoint-5" / "notes.txt").read_text() == "mine"
    assert incomplete_reason(result.output_dir / "checkpoint-3") is None


def test_rotate_skips_what_is_not_a_complete_zoo_training_checkpoint(run, tmp_path):
    _, result = run
    out = _copy_run(result, tmp_path / "out", (2, 3))
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-1")
    shutil.copytree(out / "checkpoint-3", out / "checkpoint-9")
    (out / "checkpoint-5").mkdir()  # the user's
    (out / "checkpoint-5" / "model.bin").write_bytes(b"weights")
    zoo.save(zoo.build("tiny-clip-mlp-qwen2"), out / "checkpoint-4")  # a zoo checkpoint, but not a training one
    (out / "checkpoint-7").mkdir()
    (out / "checkpoint-7" / TRAINER_STATE).write_text("{}")  # Trainer's state without a zoo checkpoint
    removed = rotate(out, 2, keep=(out / "checkpoint-2",))  # the one just saved stays, whatever its step
    assert [p.name for p in removed] == ["checkpoint-1", "checkpoint-3"]
    assert sorted(p.name for p in checkpoint_dirs(out)) == [f"checkpoint-{n}" for n in (2, 4, 5, 7, 9)]
    assert rotate(out, None) == [] and rotate(out, 0) == []


# -- resume ---------------------------------------------------------------------------------------------
def test_resume_names_an_incomplete_checkpoint_and_the_last_complete_one(run, tmp_path, capsys):
    spec, result = run
    out = _copy_run(result, tmp_path / "run", (2, 3))
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(spec))
    argv = ["train", str(path), "--output-dir", str(out), "--resume"]

    (out / "checkpoint-3" / TRAINER_STATE).unlink()  # killed after the zoo checkpoint, before Trainer's state
    assert main(argv) == 2
    line = _one_line(capsys)
    assert f"--resume: '{out / 'checkpoint-3'}' is incomplete (it has no {TRAINER_STATE}: the run stopped" in line
    assert f"the last complete one is '{out / 'checkpoint-2'}': move checkpoint-3 away and run --resume again" in line
    assert "not written by zoo train" not in line

    shutil.rmtree(out / "checkpoint-3")
    (out / "checkpoint-3").mkdir()  # killed while writing: no manifest, a temporary left beside
    (out / "checkpoint-3" / "optimizer.pt").write_bytes(b"partial")
    (out / ".checkpoint-3.tmp-4242-abcd").mkdir()
    assert main(argv) == 2
    assert "it has no manifest.json: a save into it was interrupted (.checkpoint-3.tmp-4242-abcd is left" in (
        _one_line(capsys)
    )

    weights = out / "checkpoint-2" / "projector.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: no complete checkpoint is left
    assert main([*argv[:-1], "--resume", str(out / "checkpoint-2")]) == 2
    line = _one_line(capsys)
    assert "checkpoint-2' is incomplete (projector.safetensors is not the " in line
    assert "no checkpoint beside it is complete; start the run again in a new --output-dir" in line


def test_after_moving_the_incomplete_checkpoint_away_resume_continues_from_the_last_complete_one(run, tmp_path):
    spec, result = run
    out = _copy_run(result, tmp_path / "run", (2, 3))
    (out / "checkpoint-3" / TRAINER_STATE).unlink()
    with pytest.raises(zoo.CheckpointError, match="is incomplete"):
        train(spec, output_dir=out, resume=True)
    shutil.move(out / "checkpoint-3", tmp_path / "checkpoint-3.broken")
    resumed = train(spec, output_dir=out, resume=True)
    assert resumed.global_step == 3 and incomplete_reason(out / "checkpoint-3") is None
