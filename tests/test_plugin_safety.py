"""Plugins cannot take zoo down or blame the user: exits, interrupts, bad specs, clashes, lies, paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from zoo.cli.app import main
from zoo.core.registry import get_registry
from zoo.errors import ContractError, PluginError

PLUGIN_FILES = Path(__file__).parent / "plugin_files"
TINY = ["--projector", "linear", "--lm", "tiny-qwen2"]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("exit_at_import.py", "SystemExit: 3"),
        ("interrupt_at_import.py", "KeyboardInterrupt"),
        ("exit_in_hook.py", "SystemExit: bye from a hook"),
    ],
)
def test_exit_and_interrupt_in_plugin_code_are_reported_with_the_plugin_name(fresh_registry, file, expected):
    registry = get_registry([str(PLUGIN_FILES / file)])
    (failure,) = registry.host.failures
    assert failure.name.endswith(file) and expected in failure.error
    assert registry.get("projector", "linear")  # the rest keeps working


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_ctrl_c_during_a_hung_plugin_import_exits_130_with_one_line(tmp_path, as_json):
    ready = tmp_path / "ready"
    env = {**os.environ, "ZOO_TEST_READY": str(ready)}
    env.pop("ZOO_STRICT_PLUGINS", None)
    argv = ["--plugin", str(PLUGIN_FILES / "hang_at_import.py"), "list", "projector", *(["--json"] if as_json else [])]
    process = subprocess.Popen([sys.executable, "-m", "zoo", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():  # the built-ins load first, then the hanging plugin
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == 130
    if as_json:
        assert json.loads(out) == {"error": "interrupted"} and err == ""
    else:
        assert err.strip().splitlines() == ["zoo: interrupted"] and out == ""


def test_exit_in_plugin_code_is_fatal_in_strict_mode(fresh_registry, monkeypatch):
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"exit_at_import\.py.*failed to load: SystemExit: 3"):
        get_registry([str(PLUGIN_FILES / "exit_at_import.py")])


def test_the_cli_survives_sys_exit_in_a_plugin(fresh_registry, capsys):
    code, out, err = _run(capsys, "--plugin", str(PLUGIN_FILES / "exit_at_import.py"), "list", "projector", "linear")
    assert code == 0 and "linear" in out
    assert "exit_at_import.py" in err and "SystemExit: 3" in err


def test_a_module_without_hookimpls_is_a_warning(fresh_registry):
    registry = get_registry([str(PLUGIN_FILES / "no_hookimpl.py")])
    assert registry.host.failures == []
    (note,) = [w for w in registry.host.warnings() if "no_hookimpl.py" in w]
    assert "registers nothing" in note and "zoo_register_projectors lack the @zoo.hookimpl decorator" in note


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("regex", "is not a valid regular expression"),
        ("name", "its name is int 42; expected a non-empty string"),
        ("space", "name 'has space' is not valid"),
        ("factory", "factory 'nope' is not callable"),
        ("config", "is not a dataclass"),
        ("defaults", "defaults set 'dpeth', which ProjectorConfig has no field for"),
        ("group", "pattern group 'nope' is not a field of ProjectorConfig"),
    ],
)
def test_bad_specs_fail_at_registration_blaming_the_plugin(fresh_registry, monkeypatch, capsys, bad, expected):
    monkeypatch.setenv("ZOO_TEST_BAD_SPEC", bad)
    registry = get_registry([str(PLUGIN_FILES / "bad_specs.py")])
    (failure,) = registry.host.failures
    assert "bad_specs.py" in failure.error and "registered a bad ProjectorSpec" in failure.error
    assert expected in failure.error
    # unrelated lookups and listings keep working
    assert registry.resolve("projector", "mlp3x-gelu")[0].name == "mlp<N>x-gelu"
    code, out, _ = _run(capsys, "list", "projector")
    assert code == 0 and "mlp2x-gelu" in out


def test_a_factory_returning_the_wrong_type_blames_its_plugin(fresh_registry, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_TEST_BAD_SPEC", "wrong-type")
    plugin = str(PLUGIN_FILES / "bad_specs.py")
    code, _, err = _run(capsys, "--plugin", plugin, "validate", "--vision", "tiny-clip", "--projector",
                        "returns-a-string", "--lm", "tiny-qwen2")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "factory of plugin" in err and "bad_specs.py" in err and "instead of a zoo.Projector" in err


def test_validate_stops_a_lying_tower(fresh_registry, capsys):
    plugin = str(PLUGIN_FILES / "lying_components.py")
    code, _, err = _run(capsys, "--plugin", plugin, "validate", "--vision", "lying-tower", *TINY)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "vision tower 'lying-tower'" in err and "lying_components.py" in err
    assert "declares [images, num_tokens, hidden_size] = [1, 16, 32]" in err and "shape [1, 16, 48]" in err


def test_validate_stops_a_lying_projector(fresh_registry, capsys):
    plugin = str(PLUGIN_FILES / "lying_components.py")
    code, _, err = _run(capsys, "--plugin", plugin, "validate", "--vision", "tiny-clip", "--projector",
                        "lying-projector", "--lm", "tiny-qwen2")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "projector 'lying-projector'" in err and "lying_components.py" in err
    assert "num_output_tokens, out_dim] = [1, 4, 64]" in err and "shape [1, 16, 64]" in err


def test_build_raises_a_contract_error_for_a_liar(fresh_registry):
    import zoo

    plugin = str(PLUGIN_FILES / "lying_components.py")
    with pytest.raises(ContractError, match="lying-tower"):
        zoo.build({"model": {"vision": "lying-tower", "projector": "linear", "lm": "tiny-qwen2"}}, plugins=[plugin])


def test_relative_plugin_paths_are_resolved_against_the_config_folder(fresh_registry, tmp_path, monkeypatch):
    import zoo

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "plug.py").write_text((PLUGIN_FILES / "good_plugin.py").read_text(), encoding="utf-8")
    decoy = tmp_path / "cwd"
    decoy.mkdir()
    marker = tmp_path / "decoy-ran"
    (decoy / "plug.py").write_text(f"open({str(marker)!r}, 'w').close()\n", encoding="utf-8")
    (configs / "model.yaml").write_text(
        "plugins: [plug.py]\nmodel:\n  vision: tiny-clip\n  projector: test-double\n  lm: tiny-qwen2\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(decoy)
    checked = zoo.plan(configs / "model.yaml")
    assert checked.specs["projector"].plugin == str(configs / "plug.py")
    assert not marker.exists()


def test_a_bare_module_name_never_imports_a_file_of_the_working_directory(fresh_registry, tmp_path, monkeypatch):
    (tmp_path / "zoo_plugins_decoy").write_text("raise SystemExit('decoy imported')\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    registry = get_registry(["zoo_plugins_decoy"])
    (failure,) = registry.host.failures
    assert "ModuleNotFoundError" in failure.error


def test_a_plugin_file_named_twice_loads_once_silently(fresh_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_PLUGINS", str(PLUGIN_FILES / "good_plugin.py"))
    monkeypatch.chdir(PLUGIN_FILES)
    registry = get_registry(["./good_plugin.py", str(PLUGIN_FILES / "good_plugin.py")])
    assert registry.host.failures == [] and registry.host.warnings() == []
    assert registry.get("projector", "test-double")


def _fake_distribution(site: Path, dist: str, module: str, body: str) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(body), encoding="utf-8")
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[zoo]\n{module} = {module}\n", encoding="utf-8")
    (info / "top_level.txt").write_text(f"{module}\n", encoding="utf-8")


CLASH = """
import zoo
from zoo.sdk.interfaces import Projector


@zoo.hookimpl
def zoo_register_projectors(register):
    register(zoo.ProjectorSpec(name="clash-proj", factory=Projector, description="{who}"))
"""


def test_a_name_clash_between_two_installed_plugins_fails_both_and_the_rest_works(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _fake_distribution(site, "zoo-clash-a", "zoo_clash_a", CLASH.format(who="a"))
    _fake_distribution(site, "zoo-clash-b", "zoo_clash_b", CLASH.format(who="b"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("ZOO_STRICT_PLUGINS", None)

    def zoo(*args):
        return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True, env=env,
                              timeout=300)  # fmt: skip

    plugins = zoo("plugins", "--json")
    assert plugins.returncode == 0, plugins.stderr
    failed = {f["name"]: f for f in json.loads(plugins.stdout)["failed"]}
    assert set(failed) == {"zoo_clash_a", "zoo_clash_b"}
    for name in failed:
        assert failed[name]["distribution"] == name.replace("_", "-")
        assert "zoo-clash-a" in failed[name]["error"] and "zoo-clash-b" in failed[name]["error"]
    listed = zoo("list", "projector")
    assert listed.returncode == 0 and "mlp2x-gelu" in listed.stdout and "clash-proj" not in listed.stdout
    assert "Traceback" not in listed.stderr
    # an installed plugin named again on the command line loads once, silently
    again = zoo("--plugin", "zoo_clash_a", "plugins", "--json")
    assert again.returncode == 0 and "already registered" not in again.stderr + again.stdout
    assert "Traceback" not in again.stderr
