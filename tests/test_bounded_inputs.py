"""Inputs that try to exhaust the machine end in one line and exit 2, before anything is allocated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zoo.cli.app import main
from zoo.core.config import load_model_config
from zoo.errors import ConfigError
from zoo.sdk.limits import InputLimitError, brief
from zoo.sdk.yaml_io import MAX_YAML_BYTES, load_yaml_text

GOOD = "model:\n  vision: tiny-clip\n  projector: mlp2x-gelu\n  lm: {name: tiny-qwen2%s}\n"


def billion_laughs(levels: int = 10) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\nmodel: *a9\n"


def _zoo_one_line(capsys, *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error:"), err
    return lines[0]


# -- the YAML loader --------------------------------------------------------------------------------
def test_billion_laughs_is_refused_while_composing():
    with pytest.raises(InputLimitError, match=r"expands to more than .* nodes.*billion-laughs"):
        load_yaml_text(billion_laughs(), "laughs.yaml")


def test_a_few_aliases_still_work():
    data = load_yaml_text("base: &b {r: 4}\nlm: {lora: *b}\nother: {<<: *b, r: 8}\n")
    assert data == {"base": {"r": 4}, "lm": {"lora": {"r": 4}}, "other": {"r": 8}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 5000 + "]" * 5000, "nesting deeper than 64"),
        ("a: " + "{b: " * 200 + "1" + "}" * 200, "nesting deeper than 64"),
        ("a: &x [*x]", "recursive aliases are refused"),
        ("model: 1\nother: 2\nmodel: 3\n", r"line 3: duplicate key 'model' \(first set on line 1\)"),
        ("r: " + "9" * 5000, "an integer of 5000 characters is refused"),
        ("r: 9223372036854775808", "does not fit in 64 bits"),
    ],
)
def test_hostile_yaml_is_one_config_error(text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_yaml_text(text, "x.yaml")


def test_oversized_yaml_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_YAML_BYTES + 1))
    with pytest.raises(InputLimitError, match="bytes are refused"):
        load_model_config(path)


def test_error_messages_never_print_an_unbounded_value():
    assert len(brief("x" * 10**6)) < 100
    assert brief(10**5000) == "<integer of 16610 bits>"
    nested: list = []
    for _ in range(10_000):
        nested = [nested, nested]
    assert len(brief(nested)) < 100
    with pytest.raises(ConfigError) as info:
        load_model_config({"model": {"vision": "tiny-clip", "projector": "linear", "lm": "tiny-qwen2",
                                     "dtype": "x" * 100_000}})  # fmt: skip
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (", lr: .nan", r"model\.lm\.lr = nan is not valid; expected a finite number > 0"),
        (", lr: -.inf", r"model\.lm\.lr = -inf is not valid"),
        (", lr: 0", r"model\.lm\.lr = 0\.0 is not valid"),
        (", train: lora, lora: {r: 1000000000000}", r"model\.lm\.lora\.r = 1000000000000 is out of range"),
        (", train: lora, lora: {dropout: .nan}", r"model\.lm\.lora\.dropout = nan is not valid"),
    ],
)
def test_numbers_that_mean_nothing_are_refused(write_yaml, extra, expected):
    with pytest.raises(ConfigError, match=expected):
        load_model_config(write_yaml(GOOD % extra))


def test_lora_rank_is_bounded_by_the_lm_width(capsys, write_yaml):
    line = _zoo_one_line(capsys, "validate", str(write_yaml(GOOD % ", train: lora, lora: {r: 100000}")))
    assert "model.lm.lora.r = 100000 is larger than the width of 'tiny-qwen2' (64)" in line


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (100000, r"model.vision.image_size = 100000 is out of range; expected 1..4096 pixels"),
        (4, "is smaller than the patch size 8"),
        (4096, "one image becomes 262144 tokens but language model 'tiny-qwen2' has a context of"),
    ],
)
def test_image_size_is_bounded_by_what_the_tower_and_lm_can_use(capsys, write_yaml, size, expected):
    config = write_yaml(GOOD.replace("vision: tiny-clip", f"vision: {{name: tiny-clip, image_size: {size}}}") % "")
    assert expected in _zoo_one_line(capsys, "validate", str(config))


def test_a_full_size_composition_without_weights_needs_meta(capsys):
    line = _zoo_one_line(capsys, "build", "clip-l336-mlp-qwen2-7b")
    assert "would allocate about" in line and "GiB of random weights" in line
    assert "model.lm ('qwen2-7b'" in line and "--meta" in line and "checkpoint" in line
    assert main(["build", "clip-l336-mlp-qwen2-7b", "--meta", "--json"]) == 0


def test_validate_rejects_what_build_rejects(capsys, write_yaml):
    config = write_yaml("model:\n  vision: tiny-clip\n  projector: linear\n  lm: tiny-qwen2\n  image_token: the\n")
    for command in ("validate", "build"):
        line = _zoo_one_line(capsys, command, str(config))
        assert "model.image_token = 'the' is an ordinary token of 'tiny-qwen2'" in line


# -- files that are not files -----------------------------------------------------------------------
def test_dev_zero_as_a_config(capsys):
    line = _zoo_one_line(capsys, "validate", "/dev/zero")
    assert "'/dev/zero' is not a regular file" in line


def test_a_fifo_as_a_config_and_as_an_image_does_not_hang(capsys, tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    assert "is not a regular file" in _zoo_one_line(capsys, "validate", str(fifo))
    image = tmp_path / "pipe.png"
    os.mkfifo(image)
    line = _zoo_one_line(capsys, "generate", "tiny-clip-mlp-qwen2", "--prompt", "hi", "--image", str(image))
    assert "--image" in line and "is not a regular file" in line


# -- generation limits ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--max-new-tokens", "0", "--max-new-tokens = 0 is not valid; expected an integer >= 1"),
        ("--max-new-tokens", "-5", "--max-new-tokens = -5 is not valid"),
        ("--max-new-tokens", "100000000", "--max-new-tokens = 100000000 goes past the model's context"),
        ("--temperature", "-1", "--temperature = -1.0 is not valid; expected a finite number > 0"),
        ("--temperature", "inf", "--temperature = inf is not valid"),
        ("--top-p", "nan", "--top-p = nan is not valid; expected a number in (0, 1]"),
        ("--top-p", "2", "--top-p = 2.0 is not valid"),
        ("--max-new-tokens", "9" * 5000, "invalid int value"),
    ],
)
def test_generation_options_are_checked_before_the_model_runs(capsys, option, value, expected):
    line = _zoo_one_line(capsys, "generate", "tiny-clip-mlp-qwen2", "--prompt", "hi", option, value)
    assert expected in line and len(line) < 400


def test_huge_max_new_tokens_says_how_many_fit(capsys):
    line = _zoo_one_line(capsys, "generate", "tiny-clip-mlp-qwen2", "--prompt", "hi", "--max-new-tokens", "10**8"
                         .replace("10**8", "100000000"))  # fmt: skip
    assert "use at most" in line and "prompt tokens + 100000000 >" in line


# -- under a real memory limit, in a child process ----------------------------------------------------
CHILD = textwrap.dedent(
    """
    import resource, sys
    import zoo.core.builder  # the heavy imports first: the limit is for what the input costs
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    limit = vm + 768 * 1024**2
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from zoo.cli.app import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("what", ["laughs", "dev-zero", "fifo"])
def test_under_a_memory_limit_hostile_configs_end_in_one_line(tmp_path, what):
    if what == "laughs":
        target = tmp_path / "laughs.yaml"
        target.write_text(billion_laughs(), encoding="utf-8")
    elif what == "fifo":
        target = tmp_path / "fifo.yaml"
        os.mkfifo(target)
    else:
        target = Path("/dev/zero")
    for extra in ([], ["--json"]):
        result = subprocess.run([sys.executable, "-c", CHILD, "validate", str(target), *extra], capture_output=True,
                                text=True, timeout=300)  # fmt: skip
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
        if extra:
            assert "error" in json.loads(result.stdout)
        else:
            (line,) = [x for x in result.stderr.splitlines() if x.strip()]
            assert line.startswith("zoo: error:")
