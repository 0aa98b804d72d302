"""Output directories are owned (zoo.checkpoint.claim): zoo train, zoo bench --out, zoo data and zoo convert refuse a
directory holding the user's files (and keep them), refuse a second run naming the running one, and take
over the stale lock of a dead run."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from test_train import config

from zoo.checkpoint.atomic import MARKER
from zoo.checkpoint.claim import LOCK, claim_directory
from zoo.cli.app import main
from zoo.errors import OutputDirError
from zoo.train.run import OUTPUT_KIND

ROOT = Path(__file__).resolve().parent.parent
HOLDER = textwrap.dedent(
    """
    import sys, time
    from zoo.checkpoint.claim import claim_directory
    with claim_directory(sys.argv[1], kind=sys.argv[2], key="train.output_dir", command="zoo train first.yaml"):
        with open(sys.argv[1] + "/log.jsonl", "w") as log:
            log.write('{"step": 1, "loss": 2.5}\\n')
        print("ready", flush=True)
        time.sleep(120)
    """
)


def _contents(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def holder(tmp_path):
    """Start a process that claims a directory as a running ``zoo train`` does; yield (process, directory)."""
    processes = []

    def start(directory: Path, kind: str = OUTPUT_KIND) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), kind], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        processes.append(process)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready", process.stderr
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait(timeout=30)


def _write_config(tmp_path: Path, **train: object) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, **{"max_steps": 1, "save_steps": 100, **train})))
    return path


# -- the claim itself -----------------------------------------------------------------------------------
def test_a_claim_marks_and_locks_the_directory_and_a_second_claim_names_the_holder(tmp_path):
    out = tmp_path / "out"
    with claim_directory(out, kind="zoo test output", key="--out", command="zoo test") as claim:
        assert claim.path == out and claim.stale is None
        assert json.loads((out / MARKER).read_text())["kind"] == "zoo test output"
        host = re.escape(socket.gethostname()[:64])
        expected = rf"--out = '{re.escape(str(out))}' is in use by another zoo run \(pid {os.getpid()} on host {host}, "
        with pytest.raises(OutputDirError, match=expected + r"started \d{4}-\d\d-\d\dT[\d:]+[+-][\d:]+ \(zoo test\)\)"):
            with claim_directory(out, kind="zoo test output", key="--out"):
                pass
    with claim_directory(out, kind="zoo test output", key="--out") as again:  # released: not stale
        assert again.stale is None
    assert sorted(os.listdir(out)) == [MARKER, LOCK]


def test_a_directory_with_foreign_files_is_refused_and_left_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match=r"holds files zoo did not write there \(notes.txt; .*--overwrite"):
        with claim_directory(out, kind="zoo test output", key="--out"):
            pass
    assert os.listdir(out) == ["notes.txt"]  # neither a lock file nor a marker left behind
    with claim_directory(out, kind="zoo test output", key="--out", overwrite=True):
        pass
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(OutputDirError, match=r"holds files zoo did not write there \(notes.txt; no other kind marker"):
        with claim_directory(out, kind="other kind", key="--out"):  # marked as another kind of output
            pass


def test_a_lock_file_planted_as_a_symlink_is_refused_not_written_through(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "precious.txt"
    out.mkdir()
    outside.write_text("keep")
    (out / LOCK).symlink_to(outside)
    with pytest.raises(OutputDirError, match=r"the lock file .* is a symbolic link; refusing to follow it"):
        with claim_directory(out, kind="zoo test output", key="--out"):
            pass
    assert outside.read_text() == "keep"


def test_the_stale_lock_of_a_dead_run_is_taken_over_and_named(tmp_path, holder):
    out = tmp_path / "run"
    process = holder(out)
    process.kill()
    process.wait(timeout=30)
    with claim_directory(out, kind=OUTPUT_KIND, key="--output-dir") as claim:
        assert claim.stale is not None and claim.stale.pid == process.pid
        assert claim.stale.command == "zoo train first.yaml"
    # a record left by hand (a dead pid, a lock nobody holds) is stale too; a run that let go is not
    (out / LOCK).write_text(json.dumps({"pid": 2**22 + 17, "host": "elsewhere", "started": "then", "command": ""}))
    with claim_directory(out, kind=OUTPUT_KIND, key="--output-dir") as claim:
        assert claim.stale is not None and claim.stale.describe() == "pid 4194321 on host elsewhere, started then"
    with claim_directory(out, kind=OUTPUT_KIND, key="--output-dir") as claim:
        assert claim.stale is None


# -- zoo train ------------------------------------------------------------------------------------------
def test_zoo_train_refuses_a_directory_with_the_users_files_and_keeps_them(tmp_path, capsys):
    path = _write_config(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "log.jsonl").write_text('{"my": "own log"}\n')
    (out / "loss.png").write_bytes(b"my own plot")
    (out / "notes.txt").write_text("notes")
    before = _contents(out)
    assert main(["train", str(path), "--output-dir", str(out)]) == 2
    line = _one_line(capsys)
    assert "holds files zoo did not write there (log.jsonl, loss.png, notes.txt;" in line and "--overwrite" in line
    assert _contents(out) == before and sorted(os.listdir(out)) == ["log.jsonl", "loss.png", "notes.txt"]

    assert main(["train", str(path), "--output-dir", str(out), "--overwrite", "--json"]) == 0
    capsys.readouterr()
    assert (out / "notes.txt").read_text() == "notes"  # kept
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log and all("step" in record for record in log)  # the run's own log, not the user's lines
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_zoo_train_is_refused_naming_the_running_one_then_takes_over_once_it_died(tmp_path, holder, capsys):
    path = _write_config(tmp_path)
    out = tmp_path / "run"
    first = holder(out)
    before = _contents(out)
    assert main(["train", str(path), "--output-dir", str(out)]) == 2
    line = _one_line(capsys)
    assert f"is in use by another zoo run (pid {first.pid} on host {socket.gethostname()[:64]}, started " in line
    assert "(zoo train first.yaml)" in line
    assert _contents(out) == before  # the first run's directory is untouched

    first.kill()
    first.wait(timeout=30)
    assert main(["train", str(path), "--output-dir", str(out), "--json"]) == 0
    err = capsys.readouterr().err
    assert f"was left by a run that did not finish (pid {first.pid} on host " in err and "taking it over" in err
    assert (out / "final" / "manifest.json").is_file()


def test_a_refusal_in_a_dead_runs_directory_is_still_one_line(tmp_path, holder, capsys):
    path = _write_config(tmp_path)
    out = tmp_path / "run"
    first = holder(out)
    first.kill()
    first.wait(timeout=30)
    (out / "checkpoint-1").mkdir()
    (out / "checkpoint-1" / "trainer_state.json").write_text("{}")
    assert main(["train", str(path), "--output-dir", str(out)]) == 2
    assert "holds checkpoints of an earlier run; pass --resume" in _one_line(capsys)


# -- zoo bench --out, zoo data, zoo convert ---------------------------------------------------------------
def test_zoo_bench_out_is_claimed(tmp_path, capsys, write_yaml):
    from zoo.bench.command import OUTPUT_KIND as BENCH_KIND

    grid = write_yaml("grid:\n  vision: [tiny-clip]\n  projector: [linear]\n  lm: [tiny-qwen2]\n", "bench.yaml")
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["bench", str(grid), "--meta", "--no-progress", "--out", str(out)]
    assert main(argv) == 2
    assert "--out = " in _one_line(capsys) and os.listdir(out) == ["notes.txt"]
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "results.json").is_file()
    assert main(argv) == 0  # zoo bench's own output now: a rerun replaces it
    capsys.readouterr()
    with claim_directory(out, kind=BENCH_KIND, key="--out"):  # as a running bench holds it
        assert main(argv) == 2
        assert f"is in use by another zoo run (pid {os.getpid()}" in _one_line(capsys)
    assert main(["bench", str(grid), "--meta", "--out", ""]) == 2
    assert "--out '' is empty" in _one_line(capsys)


def test_zoo_data_out_dir_is_claimed(tmp_path, capsys):
    from zoo.train.shapes import OUTPUT_KIND as SHAPES_KIND

    out = tmp_path / "data"
    out.mkdir()
    (out / "other.json").write_text("[]")
    argv = ["data", "shapes", str(out), "--train", "3", "--eval", "1", "--image-size", "16"]
    assert main(argv) == 2
    assert "OUT_DIR = " in _one_line(capsys) and os.listdir(out) == ["other.json"]
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "other.json").read_text() == "[]" and (out / "train.json").is_file()
    capsys.readouterr()
    with claim_directory(out, kind=SHAPES_KIND, key="OUT_DIR"):
        assert main([*argv, "--overwrite"]) == 2
        assert "is in use by another zoo run" in _one_line(capsys)


def test_zoo_convert_refuses_a_foreign_destination_before_building(tmp_path, capsys):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    assert main(["convert", "--to-hf-llava", "tiny-clip-mlp-qwen2", str(out)]) == 2
    line = _one_line(capsys)
    assert "refusing to write a transformers Llava directory" in line and "--overwrite" in line
    assert os.listdir(out) == ["config.json"] and sorted(os.listdir(tmp_path)) == ["hf"]
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "notes.txt").write_text("mine")
    assert main(["convert", "--from-hf-llava", str(tmp_path / "nowhere"), str(tmp_path / "ckpt")]) == 2
    assert "refusing to write a zoo checkpoint" in _one_line(capsys)
    assert main(["convert", "--to-hf-llava", "tiny-clip-mlp-qwen2", ""]) == 2
    assert "DESTINATION '' is empty" in _one_line(capsys)
