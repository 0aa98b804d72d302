"""Every user error is one line and exit 2 (``{"error": ...}`` on stdout with ``--json``); no traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from zoo.cli.app import main
from zoo.errors import ZooError


def _run(capsys, *argv: str):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["generate", "tiny-clip-mlp-qwen2", "--prompt", "   "], "--prompt is empty"),
        (
            ["generate", "tiny-clip-mlp-qwen2", "--prompt", "hi", "--stream", "--temperature", "0"],
            "--temperature = 0.0",
        ),
        (["build", "tiny-clip-mlp-qwen2", "--save", "/proc"], "--save '/proc' is a mount point"),
        (["build", "tiny-clip-mlp-qwen2", "--save", ""], "--save '' is empty"),
        (["build", "tiny-clip-mlp-qwen2", "--save", "/no/such/parent/ckpt"], "parent directory '/no/such/parent'"),
        (["convert", "--to-hf-llava", "tiny-clip-mlp-qwen2", "/tmp/x", "--dtype", "fp8"], "--dtype = 'fp8' is not"),
        (["build", "--vision", "tiny-clip"], "needs all three"),
        (["list", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["generate", "tiny-clip-mlp-qwen2"], "one of the arguments --prompt --batch-file is required"),
        (["validate", "tiny-clip-mlp-qwen2", "--dtype", "float64"], "--dtype = 'float64' is not a dtype"),
    ],
)
def test_user_errors_are_one_line_exit_2(capsys, argv, expected):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("zoo: error:") and expected in line
    code, out, err = _run(capsys, *argv, "--json")
    assert code == 2
    assert expected in json.loads(out)["error"]


@pytest.mark.parametrize("where", ["make_parser", "_quiet_libraries"])
def test_ctrl_c_anywhere_in_the_cli_exits_130_with_one_line(capsys, monkeypatch, where):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"zoo.cli.app.{where}", interrupted)
    code, out, err = _run(capsys, "list", "projector")
    assert code == 130 and out == "" and err.strip().splitlines() == ["zoo: interrupted"]


def test_stream_and_json_do_not_mix(capsys):
    code, out, _ = _run(capsys, "generate", "tiny-clip-mlp-qwen2", "--prompt", "hi", "--stream", "--json")
    assert code == 2 and "do not mix" in json.loads(out)["error"]


def test_save_into_a_foreign_directory_is_refused_before_building(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    code, _, err = _run(capsys, "build", "tiny-clip-mlp-qwen2", "--save", str(tmp_path))
    assert code == 2 and "is a non-empty directory that is not a zoo checkpoint" in err
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_generate_json_gives_text_and_tokens(capsys):
    code, out, err = _run(capsys, "generate", "tiny-clip-mlp-qwen2", "--prompt", "hi", "--max-new-tokens", "3",
                          "--json")  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"text", "tokens"} and isinstance(data["text"], str)
    assert 1 <= len(data["tokens"]) <= 3 and all(isinstance(t, int) for t in data["tokens"])


def test_convert_dtype_is_honoured_on_export(capsys, tmp_path):
    out_dir = tmp_path / "hf"
    code, _, err = _run(capsys, "convert", "--to-hf-llava", "tiny-clip-mlp-qwen2", str(out_dir), "--dtype", "bf16")
    assert code == 0, err
    from safetensors import safe_open

    dtypes = set()
    for file in out_dir.glob("*.safetensors"):
        with safe_open(file, "pt") as handle:
            dtypes |= {str(handle.get_slice(k).get_dtype()) for k in handle.keys()}
    assert dtypes == {"BF16"}


@pytest.fixture(scope="module")
def processor():
    import zoo

    return zoo.build("tiny-clip-mlp-qwen2").processor()


@pytest.mark.parametrize(
    ("text", "images", "expected"),
    [
        ("<image> what?", ["cat.png"], r"images\[0\] is a str, not a PIL image; open image files with"),
        ("<image> what?", [np.zeros((8, 8, 3))], r"images\[0\] is a ndarray, not a PIL image"),
        ("<image> what?", "cat.png", "images must be a list of PIL images"),
        ("", None, "the prompt is empty"),
        (["ok", "  "], None, r"text\[1\] is empty"),
        ([], None, "text is an empty list"),
        (42, None, "text must be a string or a list of strings, not a int"),
        (["ok", None], None, r"text\[1\] is a NoneType, not a string"),
        ("<image> what?", [Image.new("RGB", (0, 0))], r"images\[0\] is empty \(0x0 pixels\)"),
    ],
)
def test_the_processor_refuses_what_is_not_text_and_images(processor, text, images, expected):
    with pytest.raises(ZooError, match=expected):
        processor(text, images=images)


def test_the_processor_takes_one_pil_image_as_is(processor):
    batch = processor("<image> what?", images=Image.new("RGB", (20, 20)))
    assert batch["pixel_values"].shape[0] == 1


def test_zoo_show_names_the_component_first_when_it_cannot_be_built(capsys):
    code, out, err = _run(capsys, "show", "timm:fastvit_t8")
    assert code == 2 and out == ""
    assert err.startswith("zoo: error: 'timm:fastvit_t8': "), err  # the argument, not an internal label
    assert "not a ViT-style model" in err and "<" not in err.split(":", 3)[2]
