"""Directories zoo did not write are read confined: nothing outside them is opened, a link out is one line.

Every importer and every ``checkpoint:`` / ``tokenizer:`` directory goes through
``zoo.sdk.foreign.confined_directory``. The Llava test watches the outside file with inotify
(``tests/_inotify.py``), which counts successful opens by any code, the Rust tokenizers library included.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from _inotify import OpenWatch, available
from test_hf_llava import _write_llava

import zoo
from zoo.cli.app import main
from zoo.errors import CheckpointError
from zoo.interop.llava import from_hf_llava
from zoo.sdk.foreign import confined_directory
from zoo.sdk.hf import tiny_tokenizer_path

SECRET = "{# SECRET-7f3a: a private file outside the imported directory #}\n"


@pytest.fixture(scope="module")
def llava_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llava") / "llava"
    _write_llava(path)
    return path


@pytest.fixture
def secret(tmp_path) -> Path:
    (tmp_path / "private").mkdir()
    path = tmp_path / "private" / "id_rsa"
    path.write_text(SECRET, encoding="utf-8")
    return path


def _link(directory: Path, name: str, target: str | Path) -> None:
    (directory / name).unlink(missing_ok=True)
    os.symlink(target, directory / name)


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.skipif(not available(), reason="inotify is Linux-only")
@pytest.mark.parametrize("absolute", [True, False])
def test_llava_import_with_a_link_out_is_refused_and_never_opens_the_target(
    llava_template, secret, tmp_path, capsys, absolute
):
    llava = tmp_path / "llava"
    shutil.copytree(llava_template, llava)
    _link(llava, "chat_template.jinja", secret if absolute else "../private/id_rsa")
    why = "is a symlink to an absolute path" if absolute else "is a symlink that leads outside"
    with OpenWatch(secret) as watch:
        with pytest.raises(CheckpointError, match=f"'chat_template.jinja' {why}") as error:
            from_hf_llava(llava)
        assert "zoo-read-" not in str(error.value) and str(llava) in str(error.value)  # the user's path
        capsys.readouterr()
        assert main(["convert", "--from-hf-llava", str(llava), str(tmp_path / "out")]) == 2
        line = _one_line(capsys)
        assert "chat_template.jinja" in line and "symlink" in line
        assert not (tmp_path / "out").exists()
        assert watch.poll() == (0, 0), "the file outside the directory was opened"
        assert secret.read_text(encoding="utf-8") == SECRET  # the watch sees opens: this one counts
        assert watch.poll()[0] == 1


def test_a_link_that_stays_inside_the_directory_is_followed(llava_template, tmp_path):
    llava = tmp_path / "llava"
    shutil.copytree(llava_template, llava)
    (llava / "templates").mkdir()
    template = (llava / "chat_template.jinja").read_text(encoding="utf-8")
    (llava / "templates" / "chat.jinja").write_text(template + "{# kept #}", encoding="utf-8")
    _link(llava, "chat_template.jinja", "templates/chat.jinja")
    model = from_hf_llava(llava)
    assert model.lm.tokenizer.chat_template.endswith("{# kept #}")


def _tiny_lm(path: Path) -> Path:
    """A transformers Qwen2 directory with the tiny tokenizer (save_pretrained layout)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=1040, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    Qwen2ForCausalLM(config).save_pretrained(path)
    shutil.copytree(tiny_tokenizer_path(), path, dirs_exist_ok=True)
    return path


def test_a_checkpoint_read_through_the_staging_records_the_users_directory(tmp_path):
    lm = _tiny_lm(tmp_path / "qwen2")
    slots = {"vision": "tiny-clip", "projector": "mlp2x-gelu"}
    model = zoo.build({"model": {**slots, "lm": {"name": "hf-causal-lm", "checkpoint": str(lm), "train": "lora"}}})
    assert model.lm.model.get_base_model().config.name_or_path == str(lm)
    assert model.lm.tokenizer.name_or_path == str(lm)
    saved = zoo.save(model, tmp_path / "ckpt")
    adapter = json.loads((saved / "lm_adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(lm)
    assert not [p for p in saved.rglob("*") if p.is_file() and b"zoo-read-" in p.read_bytes()]  # nothing temporary


def test_checkpoint_and_tokenizer_directories_named_in_yaml_are_confined(secret, tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    lm = _tiny_lm(tmp_path / "qwen2")
    _link(lm, "tokenizer.json", secret)
    slots = {"vision": "tiny-clip", "projector": "mlp2x-gelu"}
    with pytest.raises(CheckpointError, match=r"model\.lm\.checkpoint = .*'tokenizer\.json' is a symlink"):
        zoo.build({"model": {**slots, "lm": {"name": "hf-causal-lm", "checkpoint": str(lm)}}})

    tokenizer = tmp_path / "tokenizer"
    shutil.copytree(tiny_tokenizer_path(), tokenizer)
    _link(tokenizer, "tokenizer_config.json", secret)
    with pytest.raises(CheckpointError, match=r"model\.lm\.tokenizer = .*'tokenizer_config\.json' is a symlink"):
        zoo.build({"model": {**slots, "lm": {"name": "tiny-qwen2", "tokenizer": str(tokenizer)}}})

    vision = tmp_path / "clip"
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     image_size=32, patch_size=8)).save_pretrained(vision)  # fmt: skip
    _link(vision, "config.json", secret)
    with pytest.raises(CheckpointError, match=r"model\.vision\.checkpoint = .*'config\.json' is a symlink"):
        zoo.build({"model": {**slots, "vision": {"name": "tiny-clip", "checkpoint": str(vision)}, "lm": "tiny-qwen2"}})

    qwen1 = tmp_path / "qwen1"
    qwen1.mkdir()
    (qwen1 / "config.json").write_text(json.dumps({"model_type": "qwen"}), encoding="utf-8")
    _link(qwen1, "qwen.tiktoken", secret)
    with pytest.raises(CheckpointError, match=r"'qwen\.tiktoken' is a symlink"):
        zoo.build({"model": {**slots, "lm": {"name": "tiny-qwen1", "checkpoint": str(qwen1)}}}, meta=True)


def test_vlm_learning_output_with_a_link_out_is_refused(secret, tmp_path):
    source = tmp_path / "vlm"
    source.mkdir()
    (source / "other_params.bin").write_bytes(b"not read")
    (source / "adapter_model.safetensors").write_bytes(b"not read")
    _link(source, "adapter_config.json", secret)
    with pytest.raises(CheckpointError, match=r"VLM-learning checkpoint .*'adapter_config\.json' is a symlink"):
        zoo.from_vlm_learning(source, tmp_path / "qwen-1-not-read")


def test_a_weight_index_may_name_only_files_inside(tmp_path):
    directory = tmp_path / "lm"
    directory.mkdir()
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "../../etc/passwd"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"names the weight file '\.\./\.\./etc/passwd', which is not inside"):
        with confined_directory(directory, what="model.lm.checkpoint"):
            pass


def test_the_staging_mirrors_the_files_and_is_removed_and_errors_name_the_real_directory(tmp_path):
    directory = tmp_path / "dir"
    (directory / "sub").mkdir(parents=True)
    (directory / ".git").mkdir()
    (directory / ".git" / "HEAD").write_text("ref", encoding="utf-8")
    (directory / "sub" / "a.json").write_text("{}", encoding="utf-8")
    os.symlink("sub/a.json", directory / "alias.json")
    with confined_directory(directory, what="test") as staged:
        assert (staged / "sub" / "a.json").read_text(encoding="utf-8") == "{}"
        assert (staged / "alias.json").read_text(encoding="utf-8") == "{}"
        assert not (staged / ".git").exists()  # hidden directories are not staged
        assert oct((staged).stat().st_mode & 0o777) == "0o700"
    assert not staged.exists()
    with pytest.raises(CheckpointError) as error:
        with confined_directory(directory, what="test") as staged:
            raise CheckpointError(f"{staged / 'sub' / 'a.json'}: bad")
    assert str(error.value) == f"{directory / 'sub' / 'a.json'}: bad"
    fifo = directory / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match=r"'pipe' is not a regular file"):
        with confined_directory(directory, what="test"):
            pass


def test_a_link_to_an_open_descriptor_is_refused_unless_zoo_pinned_that_file(secret, tmp_path):
    """/proc/self/fd/N links are followed only to files a load made linkable (zoo.sdk.safe_paths.linkable)."""
    from zoo.sdk.safe_paths import fd_path, linkable

    directory = tmp_path / "foreign"
    directory.mkdir()
    fd = os.open(secret, os.O_RDONLY)
    try:
        _link(directory, "chat_template.jinja", fd_path(fd))
        with pytest.raises(CheckpointError, match=r"'chat_template\.jinja' is a symlink to an absolute path"):
            with confined_directory(directory, what="tokenizer"):
                pass
        with linkable([fd]), confined_directory(directory, what="tokenizer") as staged:
            assert (staged / "chat_template.jinja").read_text(encoding="utf-8") == SECRET
        with pytest.raises(CheckpointError, match="is a symlink"):  # only while the block that allowed it runs
            with confined_directory(directory, what="tokenizer"):
                pass
    finally:
        os.close(fd)


def test_a_load_reads_the_saved_tokenizer_without_copying_it(tmp_path):
    """The checkpoint's tokenizer reaches transformers as links to the pinned files: nothing is written."""
    import subprocess
    import sys

    model = zoo.build("tiny-clip-mlp-qwen2")
    zoo.save(model, tmp_path / "ckpt")
    code = (
        "import os, sys, zoo\n"
        "written = []\n"
        "def hook(event, args):\n"
        "    if event == 'open' and isinstance(args[0], str) and 'zoo-tokenizer-' in args[0]:\n"
        "        mode, flags = args[1] or '', args[2] or 0\n"
        "        if any(c in mode for c in 'wax+') or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):\n"
        "            written.append(args[0])\n"
        "sys.addaudithook(hook)\n"
        f"model = zoo.load({str(tmp_path / 'ckpt')!r})\n"
        "print(written, model.lm.tokenizer('a <image> b').input_ids)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    written, ids = result.stdout.strip().splitlines()[-1].split("] ")
    assert written == "["  # no tokenizer file was written anywhere
    assert ids == str(model.lm.tokenizer("a <image> b").input_ids)
