"""``zoo.core.plan_cache``: a checked composition is not planned again, and nothing that matters is missed.

The key covers the configuration, every local file it names, zoo's own files and the libraries'
versions; third-party components are planned every time. Each test uses its own cache folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import zoo.core.builder
from zoo.cli.validation import check
from zoo.core.plan_cache import code_listing
from zoo.errors import ContractError

PLUGIN_FILES = Path(__file__).parent / "plugin_files"
TINY = "model:\n  vision: tiny-clip\n  projector: {projector}\n  lm: {lm}\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("ZOO_CACHE_DIR", str(folder))
    return folder / "plans"


@pytest.fixture
def plans(monkeypatch):
    """Count the real plans (``zoo.core.builder.plan`` calls)."""
    calls = []
    real = zoo.core.builder.plan

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(zoo.core.builder, "plan", counting)
    return calls


def test_a_second_check_reuses_the_plan(cache, plans, write_yaml):
    path = write_yaml(TINY.format(projector="mlp2x-gelu", lm="tiny-qwen2"))
    first = check(path)
    assert first.ok and len(plans) == 1 and len(list(cache.glob("*.json"))) == 1
    second = check(path)
    assert second.ok and len(plans) == 1  # not planned again
    assert second.summary == first.summary and second.summary["contract"]["image_tokens"] == 16
    # another configuration is another entry
    path.write_text(TINY.format(projector="{name: resampler, num_queries: 4}", lm="tiny-qwen2"))
    third = check(path)
    assert third.ok and len(plans) == 2 and third.summary["contract"]["image_tokens"] == 4


def test_a_cached_error_comes_back_with_its_type_and_key(cache, plans, write_yaml):
    path = write_yaml(TINY.format(projector="identity", lm="tiny-qwen2"))  # 32 -> 64: a contract error
    (first,) = check(path).problems
    (second,) = check(path).problems
    assert len(plans) == 1
    assert first == second and first.error == "ContractError" and "identity" in first.message
    from zoo.cli.validation import plan_summary
    from zoo.core.config import load_model_config

    with pytest.raises(ContractError, match="identity"):
        plan_summary(load_model_config(path))


def test_an_edited_checkpoint_is_planned_again(cache, plans, tmp_path, write_yaml):
    from zoo.core.builder import build_component

    lm = build_component("lm", "tiny-qwen2")
    checkpoint = tmp_path / "lm"
    lm.model.save_pretrained(checkpoint)
    lm.tokenizer.save_pretrained(checkpoint)
    path = write_yaml(TINY.format(projector="mlp2x-gelu", lm=f"{{name: hf-causal-lm, checkpoint: {checkpoint}}}"))
    assert check(path).summary["contract"]["lm_hidden_size"] == 64
    config = json.loads((checkpoint / "config.json").read_text())
    config["hidden_size"] = 96  # same length on disk: the content, not the size, must tell
    (checkpoint / "config.json").write_text(json.dumps(config))
    result = check(path)
    assert result.ok, result.problems
    assert result.summary["contract"]["lm_hidden_size"] == 96 and len(plans) == 2


def test_third_party_components_are_verified_every_time(cache, plans, fresh_registry):
    from zoo.core.config import parse_model_config

    data = {"plugins": [str(PLUGIN_FILES / "lying_components.py")],
            "model": {"vision": "lying-tower", "projector": "mlp2x-gelu", "lm": "tiny-qwen2"}}  # fmt: skip
    for _ in range(2):
        (problem,) = check(parse_model_config(data)).problems
        assert "vision tower 'lying-tower'" in problem.message and "declares" in problem.message
    assert len(plans) == 2 and not list(cache.glob("*.json"))


def test_no_cache_and_a_corrupt_entry(cache, plans, write_yaml, monkeypatch):
    path = write_yaml(TINY.format(projector="mlp2x-gelu", lm="tiny-qwen2"))
    monkeypatch.setenv("ZOO_NO_CACHE", "1")
    assert check(path).ok and check(path).ok and len(plans) == 2 and not cache.exists()
    monkeypatch.delenv("ZOO_NO_CACHE")
    assert check(path).ok and len(plans) == 3
    (entry,) = cache.glob("*.json")
    entry.write_text('{"format": 1, "value": [')  # cut short
    assert check(path).ok and len(plans) == 4  # ignored, planned, rewritten
    assert json.loads(entry.read_text())["value"]["contract"]["image_tokens"] == 16
    assert check(path).ok and len(plans) == 4


def test_the_code_listing_sees_a_same_size_edit(tmp_path):
    module = tmp_path / "pkg" / "mod.py"
    module.parent.mkdir()
    module.write_text("X = 1\n")
    before = code_listing([tmp_path / "pkg"])
    stat = module.stat()
    module.write_text("X = 2\n")
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    assert code_listing([tmp_path / "pkg"]) != before
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "mod.pyc").write_bytes(b"x")
    assert len(code_listing([tmp_path / "pkg"])) == 1  # bytecode is not code to list


def test_a_meta_build_of_built_in_components_is_answered_from_the_cache(cache, plans, capsys):
    from zoo.cli.app import main

    argv = ["build", "--vision", "tiny-clip", "--projector", "mlp2x-gelu", "--lm", "tiny-qwen2", "--meta", "--json"]
    outputs = []
    for _ in range(2):
        assert main(argv) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    first, second = outputs
    assert len(plans) == 1  # built once
    assert (first["cached"], second["cached"]) == (False, True)
    for key in ("components", "params_total", "params_trainable", "image_tokens", "contract", "dtype"):
        assert second[key] == first[key], key
    assert main([*argv[:-2], "--dtype", "bfloat16", "--meta", "--json"]) == 0  # another config: built
    assert json.loads(capsys.readouterr().out)["cached"] is False and len(plans) == 2


def test_a_meta_build_with_a_third_party_component_is_built_every_time(cache, plans, capsys, fresh_registry):
    from zoo.cli.app import main

    plugin = str(PLUGIN_FILES / "batchnorm_tower.py")
    argv = ["--plugin", plugin, "build", "--vision", "tiny-bn-tower", "--projector", "mlp2x-gelu", "--lm",
            "tiny-qwen2", "--meta", "--json"]  # fmt: skip
    for _ in range(2):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["cached"] is False
    assert len(plans) == 2
