"""Sizes read from files are bounded before anything is built; chat templates render within bounds.

A manifest, a Llava ``config.json`` or a YAML ``arch`` asking for a million layers is refused in one
line before transformers constructs a config (which alone takes seconds) or zoo builds a module (minutes
on meta); a chat template that expands without bound ends in one ``ZooError`` line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_hf_llava import _write_llava

import zoo
from zoo.checkpoint.manifest import MANIFEST
from zoo.checkpoint.saving import save
from zoo.cli.app import main
from zoo.errors import ConfigError, ZooError
from zoo.interop.llava import from_hf_llava
from zoo.sdk.hf import tiny_tokenizer_path
from zoo.sdk.limits import InputLimitError, check_arch_sizes
from zoo.sdk.template_render import render_chat_template

MILLION = 1_000_000


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def warm():
    """Import and build once, so that the timings below measure the refusal, not the first imports."""
    zoo.build("tiny-clip-mlp-qwen2", meta=True)


def test_a_million_layers_in_a_manifest_is_refused_in_under_two_seconds(tmp_path):
    directory = save(zoo.build("tiny-clip-mlp-qwen2"), tmp_path / "ckpt")
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["model"]["model"]["lm"]["arch"] = {"num_hidden_layers": MILLION}
    manifest["components"]["lm"]["config"]["arch"]["num_hidden_layers"] = MILLION
    (directory / MANIFEST).write_text(json.dumps(manifest))
    start = time.perf_counter()
    with pytest.raises(ZooError, match=r"model\.lm\.arch\.num_hidden_layers = 1000000 is out of range") as error:
        zoo.load(directory)
    assert time.perf_counter() - start < 2
    assert "parameters" in str(error.value)  # the estimate of what it would have cost


def test_a_million_layers_in_a_llava_config_is_refused_in_under_two_seconds(tmp_path, capsys):
    llava = tmp_path / "llava"
    _write_llava(llava)
    config = json.loads((llava / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] = MILLION
    (llava / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    with pytest.raises(InputLimitError, match=r"config\.json: text_config\.num_hidden_layers = 1000000 is out"):
        from_hf_llava(llava)
    assert time.perf_counter() - start < 2
    capsys.readouterr()  # what writing the fixture printed
    start = time.perf_counter()
    assert main(["convert", "--from-hf-llava", str(llava), str(tmp_path / "out")]) == 2
    assert time.perf_counter() - start < 2
    assert "text_config.num_hidden_layers = 1000000" in _one_line(capsys)
    config["text_config"]["num_hidden_layers"] = 2
    config["vision_config"]["image_size"] = 10**9
    (llava / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputLimitError, match=r"vision_config\.image_size = 1000000000 is out of range"):
        from_hf_llava(llava)


def test_a_million_layers_in_yaml_and_in_a_checkpoint_config_is_one_line(write_yaml, tmp_path, capsys):
    path = write_yaml(
        "model: {vision: tiny-clip, projector: mlp2x-gelu, lm: {name: tiny-qwen2, arch: {num_hidden_layers: 1000000}}}"
    )
    start = time.perf_counter()
    assert main(["validate", str(path)]) == 2
    assert time.perf_counter() - start < 2
    assert "model.lm.arch.num_hidden_layers = 1000000 is out of range" in _one_line(capsys)
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "config.json").write_text(json.dumps({"model_type": "qwen2", "num_hidden_layers": MILLION}))
    with pytest.raises(InputLimitError, match=r"lm/config\.json: num_hidden_layers = 1000000"):
        zoo.build({"model": {"vision": "tiny-clip", "projector": "mlp2x-gelu",
                             "lm": {"name": "hf-causal-lm", "checkpoint": str(lm)}}}, meta=True)  # fmt: skip


@pytest.mark.parametrize(
    ("slot", "arch", "message"),
    [
        ("lm", {"hidden_size": 100, "num_attention_heads": 7},
         r"model\.lm\.arch\.hidden_size = 100 is not a multiple of model\.lm\.arch\.num_attention_heads = 7"),
        ("lm", {"num_attention_heads": 4, "num_key_value_heads": 3},
         r"num_attention_heads = 4 is not a multiple of model\.lm\.arch\.num_key_value_heads = 3"),
        ("vision", {"num_attention_heads": 5},
         r"model\.vision\.arch\.hidden_size = 32 is not a multiple of model\.vision\.arch\.num_attention_heads = 5"),
    ],
)  # fmt: skip
def test_heads_that_do_not_divide_the_width_name_the_keys(slot, arch, message):
    slots = {"vision": "tiny-clip", "projector": "mlp2x-gelu", "lm": "tiny-qwen2"}
    slots[slot] = {"name": slots[slot], "arch": arch}
    with pytest.raises(ConfigError, match=message):
        zoo.build({"model": slots}, meta=True)


def test_every_registered_preset_fits_the_bounds():
    from zoo.core.registry import get_registry

    for spec in get_registry().list():
        arch = spec.defaults.get("arch")
        if isinstance(arch, dict):
            check_arch_sizes(arch, f"{spec.name}.arch")  # 7B-72B presets included: no false refusals


def test_too_many_pinpoints_are_refused():
    pinpoints = [[32 * (1 + i // 20), 32 * (1 + i % 20)] for i in range(300)]
    data = {"vision": {"name": "tiny-clip", "anyres": {"grid_pinpoints": pinpoints}},
            "projector": "mlp2x-gelu", "lm": "tiny-qwen2"}  # fmt: skip
    with pytest.raises(InputLimitError, match=r"grid_pinpoints lists 300 resolutions; at most 256"):
        zoo.build({"model": data}, meta=True)


# -- chat templates ---------------------------------------------------------------------------------
@pytest.fixture
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_path()))


MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "rendered more than 16,777,216 characters"),
        ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
         "built a value of"),
        ("{% set ns = namespace(s=[1]) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
         "built a value of"),
        ("{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('x') }}", "built a value of"),
        ("{% for i in range(10**9) %}x{% endfor %}", "Range too big"),
        ("{{ raise_exception('this template refuses') }}", "this template refuses"),
    ],
)  # fmt: skip
def test_a_template_that_expands_without_bound_is_one_zoo_error(tokenizer, template, message):
    from zoo.train.chat import ChatEncoder

    tokenizer.chat_template = template
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]}, replace_extra_special_tokens=False)
    encoder = ChatEncoder(tokenizer, image_token="<image>", tokens_per_image=4)
    start = time.perf_counter()
    with pytest.raises(ZooError, match=message):
        encoder.render(MESSAGES)
    assert time.perf_counter() - start < 5


def test_a_template_that_loops_without_output_is_stopped_by_the_clock(tokenizer):
    tokenizer.chat_template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    start = time.perf_counter()
    with pytest.raises(InputLimitError, match=r"ran for more than 0\.5 s"):
        render_chat_template(tokenizer, MESSAGES, add_generation_prompt=True, max_seconds=0.5)
    assert time.perf_counter() - start < 3


def test_an_ordinary_template_renders_as_transformers_renders_it(tokenizer):
    ours = render_chat_template(tokenizer, MESSAGES, add_generation_prompt=True)
    assert ours == tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    tokenizer.chat_template = "x" * (1024**2 + 1)
    with pytest.raises(InputLimitError, match=r"chat template is 1,048,577 characters"):
        render_chat_template(tokenizer, MESSAGES, add_generation_prompt=True)


CHILD = textwrap.dedent(
    """
    import resource, sys
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    from transformers import AutoTokenizer
    from zoo.errors import ZooError
    from zoo.sdk.hf import tiny_tokenizer_path
    from zoo.sdk.template_render import render_chat_template
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_path()))
    tokenizer.chat_template = "{{ 'x' * 10**12 }}"
    resource.setrlimit(resource.RLIMIT_AS, (vm + 4 * 1024**3, vm + 4 * 1024**3))
    try:
        render_chat_template(tokenizer, [{"role": "user", "content": "hi"}], add_generation_prompt=True)
    except ZooError as error:
        print(type(error).__name__, error)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to set a memory limit")
def test_a_template_that_exhausts_memory_is_one_zoo_error():
    """Under a memory limit (so that no machine is put at risk) ``'x' * 10**12`` is a MemoryError inside jinja."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("TemplateError the chat template ran out of memory"), result.stdout
