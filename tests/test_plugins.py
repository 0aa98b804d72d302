"""Plugin discovery: built-ins, files, env, entry points; broken plugins reported, not fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.cli.app import main
from zoo.core.plugin_manager import BUILTIN_PLUGINS
from zoo.core.registry import get_registry
from zoo.errors import PluginError, UnknownNameError

REPO = Path(__file__).resolve().parents[1]
PLUGIN_FILES = REPO / "tests" / "plugin_files"


def test_builtins_load_as_ordinary_plugins(fresh_registry):
    registry = get_registry()
    names = [p.name for p in registry.host.loaded]
    assert names[: len(BUILTIN_PLUGINS)] == list(BUILTIN_PLUGINS)
    assert registry.host.failures == []
    assert registry.get("vision", "tiny-clip").plugin == "zoo_plugins.clip"
    assert registry.get("projector", "mlp2x-gelu").plugin == "zoo_plugins.projectors"


def test_plugin_file_from_config_registers(fresh_registry):
    registry = get_registry([str(PLUGIN_FILES / "good_plugin.py")])
    spec = registry.get("projector", "test-double")
    assert spec.plugin.endswith("good_plugin.py")


def test_broken_plugin_is_reported_and_others_work(fresh_registry):
    registry = get_registry([str(PLUGIN_FILES / "broken_plugin.py"), str(PLUGIN_FILES / "good_plugin.py")])
    (failure,) = registry.host.failures
    assert failure.name.endswith("broken_plugin.py")
    assert "zoo_this_module_does_not_exist" in failure.error
    assert "test-double" in [s.name for s in registry.list("projector")]
    assert "broken_plugin.py" in registry.host.warnings()[0]


def test_strict_mode_makes_a_broken_plugin_fatal(fresh_registry, monkeypatch):
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    monkeypatch.setenv("ZOO_PLUGINS", str(PLUGIN_FILES / "broken_plugin.py"))
    with pytest.raises(PluginError, match=r"broken_plugin\.py.*failed to load.*zoo_this_module_does_not_exist"):
        get_registry()


def test_misspelled_hook_is_an_error_with_a_did_you_mean(fresh_registry):
    registry = get_registry([str(PLUGIN_FILES / "misspelled_hook.py")])
    (failure,) = registry.host.failures
    assert "implements unknown hook 'zoo_register_vision_tower'" in failure.error
    assert "did you mean 'zoo_register_vision_towers'?" in failure.error
    known = failure.error.split("zoo's hooks are ")[1].strip().split(", ")
    assert known == ["zoo_register_language_models", "zoo_register_projectors", "zoo_register_vision_towers"]


def test_a_clash_with_a_builtin_name_disables_the_newcomer_only(fresh_registry):
    registry = get_registry([str(PLUGIN_FILES / "duplicate_plugin.py")])
    (failure,) = registry.host.failures
    assert "projector 'linear' is registered by two plugins" in failure.error
    assert "zoo_plugins.projectors" in failure.error and "duplicate_plugin.py" in failure.error
    assert registry.get("projector", "linear").plugin == "zoo_plugins.projectors"


def test_a_clash_with_a_builtin_name_is_fatal_in_strict_mode(fresh_registry, monkeypatch):
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"'linear' is registered by two plugins.*duplicate_plugin\.py"):
        get_registry([str(PLUGIN_FILES / "duplicate_plugin.py")])


def test_raising_hook_is_reported(fresh_registry):
    registry = get_registry([str(PLUGIN_FILES / "raising_hook.py")])
    (failure,) = registry.host.failures
    assert "boom in hook" in failure.error
    assert registry.get("projector", "linear")  # the built-ins still work


def test_disable_list_skips_a_plugin(fresh_registry, monkeypatch):
    monkeypatch.setenv("ZOO_DISABLE_PLUGINS", "zoo_plugins.llama")
    registry = get_registry()
    assert not registry.list("lm", "tiny-llama")
    assert registry.list("lm", "tiny-qwen2")


def test_a_name_of_a_disabled_plugin_is_an_error_naming_the_variable(fresh_registry, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_DISABLE_PLUGINS", "zoo_plugins.llama")
    note = r"ZOO_DISABLE_PLUGINS skips plugin 'zoo_plugins\.llama' \(its components are unknown until it is enabled\)"
    with pytest.raises(UnknownNameError, match=r"model\.lm\.name = 'tiny-llama' is not a registered .*" + note):
        get_registry().resolve("lm", "tiny-llama", key="model.lm.name")
    assert main(["show", "tiny-llama"]) == 2
    assert "ZOO_DISABLE_PLUGINS skips plugin 'zoo_plugins.llama'" in capsys.readouterr().err


def test_an_unknown_name_without_disabled_plugins_does_not_mention_the_variable(fresh_registry):
    with pytest.raises(UnknownNameError) as caught:
        get_registry().resolve("lm", "tiny-lama", key="model.lm.name")
    assert "ZOO_DISABLE_PLUGINS" not in str(caught.value) and "did you mean 'tiny-llama'" in str(caught.value)


def test_a_plugin_given_with_dash_dash_plugin_is_reported_as_the_command_line(fresh_registry, capsys):
    good, broken = str(PLUGIN_FILES / "good_plugin.py"), str(PLUGIN_FILES / "broken_plugin.py")
    assert main(["--plugin", good, "--plugin", broken, "plugins", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [(p["origin"], p["components"]) for p in report["loaded"] if p["name"] == good] == [("--plugin", 1)]
    assert [f["origin"] for f in report["failed"] if f["name"] == broken] == ["--plugin"]
    assert f"plugin {broken!r} (--plugin) failed to load" in captured.err
    # in text: one line per plugin, "1 component" in the singular, columns as wide as the longest name
    assert main(["--plugin", good, "plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (line,) = [line for line in lines if line.startswith(good)]
    assert line.split()[1:] == ["--plugin", "1", "component"]
    assert any(line.split()[2:4] == ["7", "components"] for line in lines)
    assert len({line.index(line.split()[1]) for line in lines if "FAILED" not in line}) == 1  # one origin column


def _zoo(args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_cli_survives_a_broken_plugin_file():
    result = _zoo(["--plugin", str(PLUGIN_FILES / "broken_plugin.py"), "list", "projector"])
    assert result.returncode == 0, result.stderr
    assert "mlp2x-gelu" in result.stdout
    assert "broken_plugin.py" in result.stderr and "failed to load" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def example_plugin_site(tmp_path_factory):
    """The example plugin package installed (with its entry point) into a private site dir."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO / "examples" / "zoo-example-plugin")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


def test_example_plugin_entry_point_shows_in_list(example_plugin_site):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(example_plugin_site), os.environ.get("PYTHONPATH", "")])}
    listed = _zoo(["list", "projector", "example-*", "--json"], env=env)
    assert listed.returncode == 0, listed.stderr
    assert '"example-mlp-relu"' in listed.stdout
    plugins = _zoo(["plugins"], env=env)
    assert "example" in plugins.stdout and "entrypoint" in plugins.stdout and "zoo-example-plugin" in plugins.stdout
    built = _zoo(
        ["build", "--vision", "tiny-clip", "--projector", "example-mlp-relu", "--lm", "tiny-qwen2", "--json"], env=env
    )
    assert built.returncode == 0, built.stderr
    assert '"example-mlp-relu"' in built.stdout


def test_plugins_listed_in_a_config_file_are_loaded(fresh_registry, tmp_path):
    import zoo

    config = tmp_path / "model.yaml"
    config.write_text(
        f"plugins: [{str(PLUGIN_FILES / 'good_plugin.py')!r}]\n"
        "model:\n  vision: tiny-clip\n  projector: test-double\n  lm: tiny-qwen2\n",
        encoding="utf-8",
    )
    model = zoo.build(config)
    assert type(model.projector).__name__ == "Double"
    assert model.composition.plugins == (str(PLUGIN_FILES / "good_plugin.py"),)


def test_a_plugin_registering_the_wrong_kind_is_reported_not_fatal(fresh_registry):
    registry = get_registry([str(PLUGIN_FILES / "wrong_kind_plugin.py")])
    (failure,) = registry.host.failures
    assert "passed a ProjectorSpec ('oops') to zoo_register_vision_towers; expected a VisionTowerSpec" in failure.error
    assert not registry.list("vision", "wrong-kind-ok")  # its partial registrations are dropped
    assert registry.list("vision", "tiny-clip")
