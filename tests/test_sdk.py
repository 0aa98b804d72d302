"""The plugin SDK (``zoo.sdk``): its public names are a deliberate list, cheap to import, all resolvable and
documented; renamed names warn for one minor version; ``build_component`` builds by name like the builder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
import zoo.sdk
from zoo.errors import ConfigError, UnknownNameError, suggest
from zoo.sdk.deprecation import removal_version

REPO = Path(__file__).resolve().parents[1]

# The SDK's public names. A change here is a change of zoo's promise to plugin authors: update
# docs/plugin-sdk.md (with the version) and, for a removal or rename, keep the old name in
# zoo.sdk._DEPRECATED for one minor version.
SNAPSHOT = [
    "CheckpointError",
    "ConfigError",
    "ContractError",
    "Family",
    "GENERIC",
    "HFVisionTower",
    "ImagePreprocessor",
    "LLAMA_LORA_TARGETS",
    "LanguageModel",
    "LanguageModelConfig",
    "LanguageModelSpec",
    "PluginError",
    "Projector",
    "ProjectorConfig",
    "ProjectorSpec",
    "TINY_EOS_ID",
    "TINY_PAD_ID",
    "TINY_VOCAB_SIZE",
    "UnknownNameError",
    "VisionTower",
    "VisionTowerConfig",
    "VisionTowerSpec",
    "ZooError",
    "apply_generation_settings",
    "build_component",
    "building_on_meta",
    "check_arch_fields",
    "check_arch_sizes",
    "check_confined_file",
    "checkpoint_directory",
    "confined_directory",
    "hf_tower_factory",
    "hookimpl",
    "hub_offline",
    "lm_directories",
    "lm_spec",
    "load_state_dict_file",
    "loading_problems",
    "make_hf_config",
    "read_generation_config",
    "read_json_file",
    "require_path",
    "suggest",
    "tiny_tokenizer_path",
    "torch_dtype_of",
]


def _python(code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_public_names_match_the_snapshot():
    assert sorted(zoo.sdk.__all__) == sorted(SNAPSHOT)
    assert len(set(zoo.sdk.__all__)) == len(zoo.sdk.__all__)


def test_importing_the_sdk_loads_no_model_library():
    report = _python(
        "import json, sys\n"
        "import zoo.sdk\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'timm', 'open_clip', 'peft') if m in sys.modules)\n"
        "core = sorted(m for m in ('zoo.core.builder', 'zoo.core.registry', 'zoo.checkpoint.loading', 'zoo.cli.app') if m in sys.modules)\n"
        "print(json.dumps({'heavy': heavy, 'core': core}))"
    )
    assert report == {"heavy": [], "core": []}


def test_every_public_name_resolves_to_the_object_zoo_uses():
    for name in zoo.sdk.__all__:
        assert getattr(zoo.sdk, name) is not None, name
    assert set(zoo.sdk.__all__) <= set(dir(zoo.sdk))
    # one object under both spellings: a plugin's spec or subclass is the one the builder checks
    from zoo.sdk.hf_vision import HFVisionTower
    from zoo.sdk.interfaces import VisionTower
    from zoo.sdk.weights import load_state_dict_file

    assert zoo.sdk.hookimpl is zoo.hookimpl
    assert zoo.sdk.VisionTowerSpec is zoo.VisionTowerSpec
    assert zoo.sdk.VisionTower is VisionTower is zoo.VisionTower
    assert zoo.sdk.HFVisionTower is HFVisionTower
    assert zoo.sdk.load_state_dict_file is load_state_dict_file
    with pytest.raises(AttributeError, match="no attribute 'build'"):
        zoo.sdk.build  # noqa: B018  (the builder is not part of the SDK)


def test_the_sdk_page_documents_every_name_and_hook():
    page = (REPO / "docs" / "plugin-sdk.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Za-z_]\w*)[`(]", page, flags=re.MULTILINE))
    hooks = {n for n in documented if n.startswith("zoo_register_")}
    assert documented - hooks == set(zoo.sdk.__all__)
    from zoo.sdk import hookspecs

    assert hooks == {n for n in dir(hookspecs) if n.startswith("zoo_")}
    rows = [row for row in page.splitlines() if re.match(r"^\| `", row) and "Old name" not in row]
    assert all("| 0.1.0 |" in row for row in rows if not row.startswith("| `zoo.fused")), "every name has a version"


def test_a_renamed_sdk_name_keeps_working_with_a_warning(monkeypatch):
    monkeypatch.setitem(zoo.sdk._DEPRECATED, "did_you_mean", ("zoo.errors", "suggest", "0.1.0"))
    with pytest.warns(DeprecationWarning, match=r"zoo\.sdk\.did_you_mean is deprecated since zoo 0\.1\.0") as caught:
        value = zoo.sdk.did_you_mean
    assert value is suggest
    message = str(caught[0].message)
    assert "will be removed in zoo 0.2.0; use zoo.errors.suggest" in message
    assert caught[0].filename == __file__  # the warning points at the line that used the old name
    with pytest.raises(AttributeError):
        zoo.sdk.not_a_name  # noqa: B018


def test_zoo_fused_is_a_deprecated_alias_of_the_fused_plugin():
    code = (
        "import warnings, sys\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from zoo.fused import FusedTower\n"
        "import zoo_plugins.fused\n"
        "assert FusedTower is zoo_plugins.fused.FusedTower\n"
        "assert sys.modules['zoo.fused'] is zoo_plugins.fused\n"
        "print([str(w.message) for w in caught if w.category is DeprecationWarning])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "module zoo.fused is deprecated since zoo 0.1.0 and will be removed in zoo 0.2.0; import " \
        "zoo_plugins.fused" in result.stdout  # fmt: skip


def test_removal_is_one_minor_version_later():
    assert removal_version("0.1.0") == "0.2.0"
    assert removal_version("1.9.3") == "1.10.0"


def test_build_component_builds_by_name_on_the_callers_device():
    tower = zoo.sdk.build_component("vision", "tiny-clip", {"select": "all"})
    assert isinstance(tower, zoo.sdk.VisionTower) and tower.select == "all"
    assert tower.num_tokens == 17  # 4x4 patches + CLS
    with torch.device("meta"):
        projector = zoo.sdk.build_component("projector", "mlp2x-gelu", {"in_dim": 32, "out_dim": 64})
    assert {p.device.type for p in projector.parameters()} == {"meta"}
    half = zoo.sdk.build_component("projector", "linear", {"in_dim": 8, "out_dim": 8}, dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


def test_build_component_errors_name_the_key():
    with pytest.raises(UnknownNameError, match=r"model\.vision\.towers\[3\]\.name.*did you mean 'tiny-siglip'"):
        zoo.sdk.build_component("vision", "tiny-siglp", key="model.vision.towers[3]")
    with pytest.raises(ConfigError, match=r"model\.vision\.towers\[0\]\.selct"):
        zoo.sdk.build_component("vision", "tiny-siglip", {"selct": "all"}, key="model.vision.towers[0]")
    with pytest.raises(ConfigError, match=r"kind = 'tower' is not a component kind"):
        zoo.sdk.build_component("tower", "tiny-siglip")


def test_build_component_works_before_the_builder_is_imported():
    report = _python(
        "import json, sys\n"
        "import zoo.sdk\n"
        "before = 'zoo.core.builder' in sys.modules\n"
        "tower = zoo.sdk.build_component('vision', 'tiny-siglip')\n"
        "print(json.dumps({'before': before, 'tokens': tower.num_tokens}))"
    )
    assert report == {"before": False, "tokens": 16}
