"""zoo's package layout (issue 19): a few wings at the top, and every flat module path of 0.1.0 still imports,
with a DeprecationWarning, as the very module of its new path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo._moved import MOVED

WINGS = {"sdk", "core", "checkpoint", "interop", "train", "cli", "bench"}


def test_the_top_of_zoo_is_the_wings_and_a_few_public_modules():
    top = Path(zoo.__file__).parent
    packages = {p.name for p in top.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in top.glob("*.py")}
    assert packages == WINGS | {"assets"}
    assert modules == {"__init__", "__main__", "_moved", "errors", "testing"}


def test_every_old_module_path_is_the_new_module_with_a_warning():
    code = (
        "import importlib, json, sys, warnings\n"
        "from zoo._moved import MOVED\n"
        "out = {}\n"
        "for old, new in MOVED.items():\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module(old)\n"
        "    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]\n"
        "    out[old] = [module is importlib.import_module(new), module.__name__, messages]\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.splitlines()[-1])
    for old, new in MOVED.items():
        same, name, messages = found[old]
        assert same and name == new, (old, name)  # one module object: monkeypatching the old path patches the new
        assert f"module {old} is deprecated since zoo 0.1.0 and will be removed in zoo 0.2.0; import {new}" in messages


def test_the_moved_paths_are_not_files_any_more():
    top = Path(zoo.__file__).parent
    for old in MOVED:
        assert not (top / (old.split(".", 1)[1] + ".py")).exists(), old


def _old_names() -> list[tuple[str, str, str, str]]:
    import importlib

    rows = []
    for package in ("zoo.checkpoint", "zoo.train", "zoo.cli"):
        for old, (module, new, _) in importlib.import_module(package)._DEPRECATED.items():
            rows.append((package, old, module, new))
    return rows


@pytest.mark.parametrize(("package", "old", "module", "new"), _old_names())
def test_names_of_a_flat_module_that_became_a_wing_resolve_with_a_warning(package, old, module, new):
    import importlib

    with pytest.warns(DeprecationWarning, match=rf"{package}\.{old} is deprecated .* use {module}\.{new}"):
        value = getattr(importlib.import_module(package), old)
    assert value is getattr(importlib.import_module(module), new)


def test_the_old_names_cover_the_public_api_of_the_0_1_0_modules():
    import zoo.checkpoint
    import zoo.cli
    import zoo.train

    assert {"load", "save", "load_state_into", "verify", "Snapshot", "MANIFEST"} <= set(zoo.checkpoint._DEPRECATED)
    assert {"train", "TrainResult", "load_train_config", "resume_point"} <= set(zoo.train._DEPRECATED)
    assert {"make_parser", "EXTRA_COMMANDS", "cmd_list", "FAST_EXIT"} <= set(zoo.cli._DEPRECATED)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        zoo.checkpoint.nothing  # noqa: B018


def test_the_console_script_of_0_1_0_still_resolves():
    import zoo.cli
    from zoo.cli import app

    assert zoo.cli.console is app.console and zoo.cli.main is app.main
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        zoo.cli.nothing  # noqa: B018


@pytest.mark.parametrize(("module", "old"), [("zoo.sdk.specs", "KINDS"), ("zoo.core.config", "SLOT_KEYS")])
def test_the_merged_slot_tuples_resolve_to_the_one_definition(module, old):
    import importlib

    from zoo.sdk.specs import SLOTS

    with pytest.warns(DeprecationWarning, match=rf"{module}\.{old} is deprecated .* use zoo\.sdk\.specs\.SLOTS"):
        assert getattr(importlib.import_module(module), old) is SLOTS


@pytest.mark.parametrize("module", ["zoo", "zoo.cli"])
def test_python_dash_m_runs_the_command(module):
    result = subprocess.run([sys.executable, "-m", module, "list", "vision", "tiny-clip"], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("vision  tiny-clip")
