"""The CLI: summaries, --json shapes, exit codes and messages for user errors (no tracebacks)."""

from __future__ import annotations

import json

import pytest

from zoo.cli.app import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_build_meta_json_reports_the_reference_sizes(capsys):
    code, out, _ = run(
        capsys,
        "build",
        "--vision",
        "clip-vit-l-14-336",
        "--projector",
        "mlp2x-gelu",
        "--lm",
        "qwen2-7b",
        "--meta",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["components"]["lm"] == {"name": "qwen2-7b", "params": 7_615_616_512, "trainable": 0}
    assert data["components"]["projector"]["params"] == 16_522_240
    assert data["components"]["vision"]["name"] == "clip-vit-l-14-336"
    assert data["image_tokens"] == 576
    assert data["params_total"] == sum(c["params"] for c in data["components"].values())
    assert data["params_trainable"] == 16_522_240


def test_build_text_summary(capsys):
    code, out, _ = run(capsys, "build", "tiny-clip-mlp-qwen2")
    assert code == 0
    assert "tiny-clip" in out and "mlp2x-gelu" in out and "tiny-qwen2" in out
    assert "image tokens per image:" in out and "total" in out


def test_list_json_and_pattern(capsys):
    code, out, _ = run(capsys, "list", "lm", "qwen2*", "--json")
    rows = json.loads(out)
    assert code == 0 and rows and all(r["kind"] == "lm" and r["name"].startswith("qwen2") for r in rows)
    code, out, _ = run(capsys, "list", "model", "--json")
    assert "tiny-clip-mlp-qwen2" in [r["name"] for r in json.loads(out)]


def test_show_prints_the_contract(capsys):
    code, out, _ = run(capsys, "show", "clip-vit-l-14-336", "--json")
    data = json.loads(out)
    assert code == 0 and data["kind"] == "vision" and data["source"] == "transformers"
    assert data["contract"]["hidden_size"] == 1024 and data["contract"]["tokens"] == 576
    assert data["contract"]["num_prefix_tokens"] == 1


def test_validate_ok_and_contract_failure(capsys, write_yaml):
    code, out, _ = run(capsys, "validate", "tiny-clip-mlp-qwen2")
    assert code == 0 and out.startswith("ok:")
    bad = write_yaml("model:\n  vision: tiny-clip\n  projector: identity\n  lm: tiny-qwen2\n")
    code, out, err = run(capsys, "validate", str(bad))
    assert code == 2 and "identity" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["build", "--vision", "tiny-clp", "--projector", "linear", "--lm", "tiny-qwen2"], "did you mean 'tiny-clip'"),
        (["build", "--vision", "tiny-clip", "--projector", "linear"], "needs all three"),
        (["build", "no-such-composition"], "neither a YAML file nor a registered composition"),
        (["show", "qwen2-7"], "did you mean"),
    ],
)
def test_user_errors_exit_2_with_a_message(capsys, argv, expected):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("zoo: error:") and expected in err


def test_debug_shows_the_traceback():
    from zoo.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        main(["--debug", "build", "--vision", "nope", "--projector", "linear", "--lm", "tiny-qwen2"])


def test_generate_command_with_an_image_and_streaming(capsys, tmp_path):
    import numpy as np
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(image)
    code, out, err = run(capsys, "generate", "tiny-clip-mlp-qwen2", "--prompt", "what is this?", "--image", str(image),
                         "--max-new-tokens", "4")  # fmt: skip
    assert code == 0, err
    import torch

    import zoo

    torch.manual_seed(0)  # the command's default --seed, set before it builds
    model = zoo.build("tiny-clip-mlp-qwen2").eval()
    processor = model.processor()
    prompt = processor.apply_chat_template([{"role": "user", "content": "<image>\nwhat is this?"}])
    batch = processor(prompt, images=[Image.open(image)])
    expected = processor.decode(model.generate(**batch, max_new_tokens=4)[:, batch["input_ids"].shape[1] :])[0]
    assert out == expected + "\n"
    code, out, err = run(
        capsys, "generate", "tiny-clip-mlp-qwen2", "--prompt", "hi", "--stream", "--max-new-tokens", "3"
    )
    assert code == 0, err
    code, _, err = run(
        capsys, "generate", "tiny-clip-mlp-qwen2", "--prompt", "hi", "--image", str(tmp_path / "none.png")
    )
    assert code == 2 and "--image" in err and "none.png" in err


def test_fsdp_wrap_classes_name_the_block_types(tiny_model):
    names = {cls.__name__ for cls in tiny_model.fsdp_wrap_classes}
    assert names == {"CLIPEncoderLayer", "Qwen2DecoderLayer"}


def test_list_columns_are_as_wide_as_their_longest_cell(capsys):
    code, out, _ = run(capsys, "list")
    rows = out.splitlines()
    longest = max(rows, key=lambda row: len(row.split()[1]))
    assert code == 0 and longest.split()[1] == "siglip-so400m-resampler-minicpm3-4b"  # 35 characters
    starts = {row.index(row.split()[2], len(row.split()[0]) + len(row.split()[1])) for row in rows}
    assert len(starts) == 1  # every source starts in one column: no name runs into it


def test_dtype_override_save_with_meta_and_list_typo(capsys, tmp_path):
    code, out, _ = run(capsys, "build", "tiny-clip-mlp-qwen2", "--dtype", "bf16", "--meta", "--json")
    assert code == 0 and json.loads(out)["dtype"] == "bfloat16"
    code, _, err = run(capsys, "build", "tiny-clip-mlp-qwen2", "--meta", "--save", str(tmp_path / "x"))
    assert code == 2 and "--save needs real weights" in err and not (tmp_path / "x").exists()
    code, _, err = run(capsys, "list", "vison")
    assert code == 2 and "'vison' is neither a kind" in err and "did you mean 'vision'" in err
    code, out, _ = run(capsys, "list", "tiny-clip")
    assert code == 0 and "tiny-clip" in out


def test_a_failing_config_plugin_is_reported(capsys, write_yaml):
    from zoo.core.registry import reset_registry

    reset_registry()
    try:
        bad = write_yaml(
            "plugins: [zoo_no_such_plugin_module]\nmodel:\n  vision: my-tower\n  projector: linear\n  lm: tiny-qwen2\n"
        )
        code, _, err = run(capsys, "validate", str(bad))
        assert code == 2
        assert "zoo_no_such_plugin_module" in err and "failed to load" in err
    finally:
        reset_registry()


def test_the_console_script_flushes_its_output_before_the_fast_exit(tmp_path):
    import os
    import subprocess
    import sys

    from zoo.cli.app import FAST_EXIT, _command_of

    env = {**os.environ, "ZOO_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "zoo", "validate", "tiny-clip-mlp-qwen2", "--json"], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0 and json.loads(result.stdout)["contract"]["image_tokens"] == 16
    result = subprocess.run([sys.executable, "-m", "zoo", "validate", "tiny-clip-mlp-qwen"], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and result.stderr.startswith("zoo: error:") and result.stdout == ""
    assert _command_of(["--plugin", "validate", "--json", "list", "x"]) == "list" and "list" in FAST_EXIT
    assert "train" not in FAST_EXIT and "bench" not in FAST_EXIT  # these exit the usual way
