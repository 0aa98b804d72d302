"""One line, always: each hostile input or broken environment ends in exit 2 and one stderr line
(or a ``ZooError`` subclass from Python), and stderr carries no third-party noise unless ``--verbose``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image
from test_hf_llava import _write_llava

import zoo
from zoo.cli.app import main
from zoo.core.records import DataError, read_records
from zoo.core.registry import reset_registry
from zoo.sdk.images import ImageError

TRAIN = "model: {{vision: tiny-clip, projector: mlp2x-gelu, lm: {{name: tiny-qwen2, train: lora}}}}\n" \
        "data: {{train: '{data}'}}\ntrain: {{max_steps: 1}}\n"  # fmt: skip
GOOD_TURNS = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yes"}]


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err[-3000:]
    assert lines[0].startswith("zoo: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def llava_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llava") / "llava"
    _write_llava(path)
    return path


@pytest.fixture
def alarm():
    """A test that would hang today fails after 60 s instead (a blocked open() is interrupted)."""

    def expire(*_):
        raise TimeoutError("zoo blocked")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _train(tmp_path: Path, data: str | Path) -> list[str]:
    config = tmp_path / "train.yaml"
    config.write_text(TRAIN.format(data=data), encoding="utf-8")
    return ["train", str(config), "--output-dir", str(tmp_path / "run")]


# -- data files ------------------------------------------------------------------------------------
def test_a_deeply_nested_data_file_is_one_line(tmp_path, capsys):
    data = tmp_path / "deep.json"
    data.write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    assert main(_train(tmp_path, data)) == 2
    assert "nested too deeply" in _one_line(capsys)
    jsonl = tmp_path / "deep.jsonl"
    jsonl.write_text(json.dumps({"conversations": GOOD_TURNS}) + "\n" + '{"a": ' * 200_000 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is nested too deeply"):
        read_records(jsonl)


def test_a_fifo_and_dev_zero_as_data_files_are_refused_without_reading(tmp_path, capsys, alarm):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    for data in (fifo, Path("/dev/zero")):
        assert main(_train(tmp_path, data)) == 2
        assert f"data file {str(data)!r} is not a regular file" in _one_line(capsys)


def test_an_error_about_a_record_quotes_a_huge_value_briefly(tmp_path, capsys):
    huge = "x" * (4 * 1024**2)
    records = [
        {"id": huge, "conversations": [{"from": huge, "value": "hi"}, {"from": "gpt", "value": "yes"}]},
        {"image": huge, "conversations": GOOD_TURNS},
    ]
    for record in records:
        data = tmp_path / "data.json"
        data.write_text(json.dumps([record]), encoding="utf-8")
        assert main(_train(tmp_path, data)) == 2
        line = _one_line(capsys)
        assert len(line) < 1000 and "record 0" in line, line[:300]


# -- foreign weights ---------------------------------------------------------------------------------
def test_a_truncated_safetensors_file_in_a_llava_directory_is_one_line(llava_template, tmp_path, capsys):
    llava = tmp_path / "llava"
    shutil.copytree(llava_template, llava)
    weights = llava / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["convert", "--from-hf-llava", str(llava), str(tmp_path / "out")]) == 2
    assert "SafetensorError" in _one_line(capsys)


def test_a_pickle_that_weights_only_refuses_is_one_line_and_runs_nothing(llava_template, tmp_path, capsys):
    import torch

    llava = tmp_path / "llava"
    shutil.copytree(llava_template, llava)
    (llava / "model.safetensors").unlink()
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"lm_head.weight": Payload()}, llava / "pytorch_model.bin")
    capsys.readouterr()
    assert main(["convert", "--from-hf-llava", str(llava), str(tmp_path / "out")]) == 2
    line = _one_line(capsys)
    assert "pickled objects other than tensors" in line and "weights_only=True" in line
    assert not marker.exists()


DISK_FULL = textwrap.dedent(
    """
    import resource, sys
    import zoo
    from zoo.cli.app import main
    model = zoo.build("tiny-clip-mlp-qwen2")
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))  # a disk that fills up
    try:
        zoo.save(model, sys.argv[1])
    except zoo.ZooError as error:  # a WriteError: a ZooError and an OSError with the errno kept
        print("api", type(error).__name__, isinstance(error, OSError), error.errno, error, flush=True)
    sys.exit(main(["build", "tiny-clip-mlp-qwen2", "--save", sys.argv[2]]))
    """
)


def test_a_full_disk_during_save_is_one_line(tmp_path):
    import errno

    result = subprocess.run([sys.executable, "-c", DISK_FULL, str(tmp_path / "a"), str(tmp_path / "b")],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    api = f"api WriteError True {errno.EFBIG} zoo checkpoint {str(tmp_path / 'a')!r}: cannot write: File too large"
    assert result.stdout.splitlines()[0] == api, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"zoo: error: --save {str(tmp_path / 'b')!r}: cannot write the checkpoint: File too large"]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing half-written left


# -- images through the Python API -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["PNG", "JPEG"])
def test_the_processor_refuses_a_truncated_image_with_zoos_error(tmp_path, kind):
    buffer = io.BytesIO()
    Image.frombytes("RGB", (96, 96), os.urandom(96 * 96 * 3)).save(buffer, kind)
    path = tmp_path / f"cut.{kind.lower()}"
    path.write_bytes(buffer.getvalue()[: int(len(buffer.getvalue()) * 0.7)])
    processor = zoo.build("tiny-clip-mlp-qwen2", meta=True).processor()
    with pytest.raises(ImageError, match=r"images\[0\] \(.*cut\.\w+'\) is corrupt or truncated"):
        processor("<image> what is it?", images=[Image.open(path)])


# -- devices and third-party noise ---------------------------------------------------------------------
def test_a_garbage_device_is_one_line_before_anything_is_claimed_or_imported(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("grid: {vision: [tiny-clip], projector: [mlp2x-gelu], lm: [tiny-qwen2]}\n", encoding="utf-8")
    argv = [sys.executable, "-m", "zoo", "bench", str(grid), "--device", "garbage"]
    runs = [
        subprocess.Popen([*argv, "--out", str(tmp_path / out), *extra], stderr=subprocess.PIPE, text=True)
        for out, extra in (("quiet", []), ("verbose", ["--verbose"]))
    ]
    outputs = [run.communicate(timeout=300)[1] for run in runs]
    assert [run.returncode for run in runs] == [2, 2]
    for err in outputs:  # checked first: even --verbose has nothing else to show
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines == ["zoo: error: --device = 'garbage' is not a device; expected cpu, cuda, cuda:N or mps "
                         "(torch device names)"], err  # fmt: skip
    assert not (tmp_path / "quiet").exists() and not (tmp_path / "verbose").exists()  # nothing claimed


def test_transformers_progress_bars_show_only_with_verbose(llava_template, tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as in a fresh process; a quiet run earlier in this one disabled them
    try:
        capsys.readouterr()
        assert main(["convert", "--from-hf-llava", str(llava_template), str(tmp_path / "a"), "--verbose"]) == 0
        assert "Loading weights" in capsys.readouterr().err
        assert main(["convert", "--from-hf-llava", str(llava_template), str(tmp_path / "b")]) == 0
        assert capsys.readouterr().err == ""
    finally:
        hf_logging.enable_progress_bar()


# -- plugins -----------------------------------------------------------------------------------------
NOISY = """
import warnings
import zoo
warnings.warn("third-party noise at import", UserWarning)

@zoo.hookimpl
def zoo_register_projectors(register):
    pass
"""


def test_a_third_party_warning_is_not_printed_beside_the_error(fresh_registry, tmp_path, capsys, recwarn):
    for name, extra in (("loud.py", ["--verbose"]), ("quiet.py", [])):  # a quiet run's filters outlive it here
        (tmp_path / name).write_text(NOISY, encoding="utf-8")
        assert main(["--plugin", str(tmp_path / name), *extra, "validate", "no-such-composition"]) == 2
        assert "no-such-composition" in _one_line(capsys)
        noise = [w for w in recwarn.list if "third-party noise" in str(w.message)]
        assert len(noise) == (1 if extra else 0)  # shown (recorded) only with --verbose
        recwarn.clear()
        reset_registry()


def test_plugin_problems_are_reported_once_with_their_origin(fresh_registry, tmp_path, capsys):
    clash = Path(__file__).with_name("plugin_files") / "duplicate_plugin.py"
    assert main(["--plugin", str(clash), "validate", "tiny-clip-mlp-qwen2"]) == 0  # validate loads plugins twice
    err = capsys.readouterr().err.splitlines()
    assert len([line for line in err if "NameClashError" in line]) == 1, err
    assert f"plugin {str(clash)!r} (--plugin)" in err[0]
    reset_registry()
    folder = tmp_path / "my_plugins"
    folder.mkdir()
    assert main(["--plugin", str(folder), "validate", "tiny-clip-mlp-qwen2"]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert "is a directory; name a .py file" in line and "does not exist" not in line
