"""Saves never destroy what zoo did not write, queue on a lock, survive crashes between renames, honour
the umask, and a load racing a stream of saves always reads exactly one of them."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

import zoo
from zoo.checkpoint.loading import load, read_manifest
from zoo.checkpoint.manifest import MANIFEST
from zoo.checkpoint.saving import save
from zoo.checkpoint.snapshot import verify
from zoo.cli.app import main
from zoo.errors import CheckpointError

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return zoo.build("tiny-clip-mlp-qwen2").eval()


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- ownership -------------------------------------------------------------------------------------
def test_a_foreign_directory_with_a_manifest_json_is_refused_or_kept(model, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "manifest.json").write_text('{"name": "my web app", "start_url": "/"}')
    (app / "index.html").write_text("<html></html>")
    with pytest.raises(CheckpointError, match=r"not a zoo checkpoint zoo wrote, and holds index.html, manifest.json"):
        save(model, app)
    assert _names(app) == ["index.html", "manifest.json"] and "web app" in (app / "manifest.json").read_text()
    assert _names(tmp_path) == ["app"]  # no temporary or lock left behind

    with pytest.warns(UserWarning, match=r"replaced files .* that zoo did not write: manifest.json"):
        save(model, app, overwrite=True)
    assert (app / "index.html").read_text() == "<html></html>"  # kept
    assert read_manifest(app)["format"] == "zoo.checkpoint"


def test_user_files_in_a_checkpoint_survive_re_saves(model, tmp_path):
    target = save(model, tmp_path / "ckpt")
    (target / "train.log").write_text("step 1 loss 3.2\n")
    (target / "eval").mkdir()
    (target / "eval" / "metrics.json").write_text('{"acc": 0.5}')
    (target / "tokenizer" / "NOTES.md").write_text("mine")
    save(model, target)
    assert (target / "train.log").read_text() == "step 1 loss 3.2\n"
    assert (target / "eval" / "metrics.json").read_text() == '{"acc": 0.5}'
    assert (target / "tokenizer" / "NOTES.md").read_text() == "mine"
    assert "train.log" not in read_manifest(target)["files"]  # still the user's, not zoo's
    load(target)

    # a user file where the new checkpoint writes one of its own: refuse, naming it
    manifest = json.loads((target / MANIFEST).read_text())
    del manifest["files"]["projector.safetensors"]  # as if the user had put that file there
    (target / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(
        CheckpointError,
        match=r"files zoo did not write that the new zoo checkpoint would replace: projector.safetensors",
    ):
        save(model, target)
    assert (target / "train.log").exists()


def test_export_over_a_directory_with_user_files_keeps_them_or_refuses(model, tmp_path, capsys):
    checkout = tmp_path / "llava-checkout"
    (checkout / ".git").mkdir(parents=True)
    (checkout / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (checkout / "README.md").write_text("# my model card")
    (checkout / "config.json").write_text('{"model_type": "llava"}')
    code = main(["convert", "--to-hf-llava", "tiny-clip-mlp-qwen2", str(checkout)])
    assert code == 2 and "refusing to write" in capsys.readouterr().err
    assert _names(checkout) == [".git", "README.md", "config.json"]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["convert", "--to-hf-llava", "tiny-clip-mlp-qwen2", str(checkout), "--overwrite"]) == 0
    assert any("config.json" in str(w.message) for w in caught)  # told which of the user's files were replaced
    assert (checkout / "README.md").read_text() == "# my model card"
    assert (checkout / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert json.loads((checkout / "config.json").read_text())["model_type"] == "llava"

    (checkout / "notes.txt").write_text("keep")
    zoo.save_hf_llava(model, checkout)  # zoo's own export now (marker): replaced without --overwrite, user files kept
    assert (checkout / "notes.txt").read_text() == "keep" and (checkout / "README.md").exists()


def test_a_live_temporary_directory_of_another_namespace_is_not_removed(model, tmp_path):
    live = tmp_path / ".ckpt.tmp-999999999-abcd"  # a PID that means nothing here (another PID namespace)
    live.mkdir()
    (live / "vision.safetensors").write_bytes(b"half written")
    dead = tmp_path / ".ckpt.tmp-1-dead"
    dead.mkdir()
    holder = os.open(live, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # what a live save holds
    try:
        save(model, tmp_path / "ckpt")
        assert live.exists() and not dead.exists()
    finally:
        os.close(holder)
    save(model, tmp_path / "ckpt")  # the writer is gone now: its leftovers go
    assert _names(tmp_path) == ["ckpt"]


def test_a_kill_between_the_renames_is_repaired_by_the_next_load(model, tmp_path):
    target = save(model, tmp_path / "ckpt")
    before = read_manifest(target)["generation"]
    process = subprocess.Popen(
        [sys.executable, str(HERE / "_kill_during_save.py"), str(target), "1", "renames"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("STALLED "), f"{line!r} {process.stderr.read()[-2000:]}"
        assert not target.exists() and any(p.name.startswith(".ckpt.old-") for p in tmp_path.iterdir())
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert read_manifest(target)["generation"] == before  # the load put the previous checkpoint back
    assert _names(tmp_path)[-1] == "ckpt" and not any(p.name.startswith(".ckpt.old-") for p in tmp_path.iterdir())
    save(model, target)
    assert _names(tmp_path) == ["ckpt"]


def test_saving_through_a_symlinked_path_keeps_the_link(model, tmp_path):
    real = tmp_path / "storage" / "run1"
    real.parent.mkdir()
    link = tmp_path / "latest"
    link.symlink_to(real, target_is_directory=True)
    save(model, link)
    save(model, link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert (real / MANIFEST).is_file() and _names(real.parent) == ["run1"]
    load(link)


@pytest.mark.parametrize(("umask", "dir_mode", "file_mode"), [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_saves_honour_the_umask(model, tmp_path, umask, dir_mode, file_mode):
    old = os.umask(umask)
    try:
        target = save(model, tmp_path / "ckpt")
    finally:
        os.umask(old)
    for path in [target, *target.rglob("*")]:
        expected = dir_mode if path.is_dir() else file_mode
        assert path.stat().st_mode & 0o777 == expected, path


@pytest.fixture(scope="module")
def lora_model():
    torch.manual_seed(0)
    lm = {"name": "tiny-qwen2", "train": "lora"}
    return zoo.build({"model": {"vision": "tiny-clip", "projector": "mlp2x-gelu", "lm": lm}}).eval()


def _modes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.lstat().st_mode & 0o7777 for p in [root, *sorted(root.rglob("*"))]}


def _chmod_tree(root: Path, dir_mode: int, file_mode: int) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        path.chmod(dir_mode if path.is_dir() else file_mode)
    root.chmod(dir_mode)


@pytest.mark.parametrize(
    ("dir_mode", "file_mode"), [(0o700, 0o600), (0o750, 0o640), (0o755, 0o644)], ids=["0700", "0750", "0755"]
)
def test_a_re_save_keeps_the_modes_of_the_directory_its_files_and_subdirectories(
    lora_model, tmp_path, dir_mode, file_mode
):
    old = os.umask(0o022)  # a umask that would open everything up again
    try:
        target = save(lora_model, tmp_path / "ckpt")
        assert {"tokenizer", "lm_adapter"} <= set(_names(target))
        (target / "private").mkdir()  # the user's own subdirectory and file
        (target / "private" / "notes.txt").write_text("mine")
        _chmod_tree(target, dir_mode, file_mode)
        (target / "private").chmod(0o700)  # tighter than the rest, the user's choice
        (target / "projector.safetensors").chmod(0o400)
        before = _modes(target)
        save(lora_model, target)
        assert _modes(target) == before
        assert (target / "private" / "notes.txt").read_text() == "mine"
    finally:
        os.umask(old)
    load(target)


def test_what_a_re_save_adds_is_no_more_open_than_the_directory_it_goes_into(model, lora_model, tmp_path):
    old = os.umask(0o022)
    try:
        target = save(model, tmp_path / "ckpt")  # no LoRA: no lm_adapter/ yet
        _chmod_tree(target, 0o700, 0o600)
        save(lora_model, target)
    finally:
        os.umask(old)
    adapter = target / "lm_adapter"
    assert adapter.stat().st_mode & 0o777 == 0o700
    assert [p.stat().st_mode & 0o777 for p in adapter.iterdir()] == [0o600] * len(list(adapter.iterdir()))
    assert {mode for mode in _modes(target).values()} == {0o700, 0o600}


# -- concurrency -------------------------------------------------------------------------------------
def test_two_concurrent_first_saves_queue_and_leave_one_complete_checkpoint(model, tmp_path):
    from zoo.checkpoint.atomic import save_lock

    target = tmp_path / "ckpt"
    errors: list[BaseException] = []

    def one_save() -> None:
        try:
            save(model, target)
        except BaseException as error:  # noqa: BLE001 - the test reports any
            errors.append(error)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=one_save) for _ in range(2)]
        with save_lock(target):  # a writer is busy: both first saves must wait for it, then for each other
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 300
            while sum("another process is writing" in str(w.message) for w in caught) < 2:
                assert time.monotonic() < deadline and not errors, errors
                time.sleep(0.05)
        for thread in threads:
            thread.join(timeout=300)
    assert errors == []
    assert any("another process is writing" in str(w.message) for w in caught)  # the clear message
    assert _names(tmp_path) == ["ckpt"]
    verify(target)
    load(target)


def test_a_busy_lock_times_out_with_a_clear_message(tmp_path):
    from zoo.checkpoint.atomic import save_lock

    target = tmp_path / "ckpt"
    with save_lock(target), pytest.raises(CheckpointError, match=r"another process has been writing"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with save_lock(target, timeout=0.2):
                pass


@pytest.mark.slow
@pytest.mark.parametrize(("swap", "generations"), [("exchange", 40), ("aside", 20)])
def test_loads_racing_a_stream_of_saves_each_read_one_generation(model, tmp_path, swap, generations):
    load(save(model, tmp_path / "warm-up"))  # imports done before the race, so that loads overlap the saves
    target = tmp_path / "ckpt"
    saver = subprocess.Popen(
        [sys.executable, str(HERE / "_save_loop.py"), str(target), str(generations), swap],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert saver.stdout.readline().strip() == "SAVED 1", saver.stderr.read()[-2000:]
        tags, deadline = [], time.monotonic() + 600
        while saver.poll() is None and time.monotonic() < deadline:
            loaded = load(target)
            tag = {
                kind: float(next(getattr(loaded, kind).parameters()).detach().flatten()[0])
                for kind in ("vision", "projector", "lm")
            }
            assert len(set(tag.values())) == 1, f"a load mixed generations: {tag}"
            tags.append(tag["lm"])
        saver.wait(timeout=600)
    finally:
        if saver.poll() is None:
            saver.kill()
    assert saver.returncode == 0, saver.stderr.read()[-2000:]
    assert len(tags) >= 5 and len(set(tags)) >= 3, tags  # loads really overlapped many different saves
    assert tags == sorted(tags)
    assert float(next(load(target).lm.parameters()).detach().flatten()[0]) == generations
