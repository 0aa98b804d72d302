"""The import contracts of ``pyproject.toml`` (``[tool.importlinter]``): they hold, and a planted import breaks them.

Each check runs ``lint-imports`` in a fresh interpreter on a copy of the tree laid out as installed
(``zoo``, ``zoo_plugins``, the two example plugin packages) in a temporary directory, so that a planted
import never touches the repository. Skipped when import-linter (the ``test`` extra) is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

REPO = Path(__file__).resolve().parents[1]
# package name in the copy -> its source in the repository
PACKAGES = {
    "zoo": REPO / "zoo",
    "zoo_plugins": REPO / "plugins",
    "zoo_example_plugin": REPO / "examples" / "zoo-example-plugin" / "zoo_example_plugin",
    "zoo_example_backbones": REPO / "examples" / "zoo-example-backbones" / "zoo_example_backbones",
}
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _tree(root: Path) -> Path:
    for name, source in PACKAGES.items():
        shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def _lint(root: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(root)  # the copy, ahead of any installed zoo
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache", "--no-logo", *options],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _plant(root: Path, module: str, line: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = root / module.replace(".", "/") / "__init__.py"
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # planted by tests/test_layers.py\n")


def test_the_contracts_hold_on_the_tree(tmp_path):
    result = _lint(_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "edge"),
    [
        # a built-in plugin reaching into the builder instead of zoo.sdk
        (
            "zoo_plugins.qwen",
            "from zoo.builder import build_component",
            "plugins-use-the-sdk",
            "zoo_plugins.qwen -> zoo.builder",
        ),
        # an example package importing a non-SDK module
        ("zoo_example_plugin", "from zoo.hf import Family", "plugins-use-the-sdk", "zoo_example_plugin -> zoo.hf"),
        # the SDK reaching up into the checkpoint code
        ("zoo.weights", "import zoo.checkpoint", "sdk-stays-low", "zoo.weights -> zoo.checkpoint"),
        # a core module importing a command (upward across the layers)
        ("zoo.builder", "import zoo.train_command", "layers", "zoo.builder -> zoo.train_command"),
        # two commands importing each other (one layer of independent modules)
        ("zoo.eval_command", "import zoo.train_command", "layers", "zoo.eval_command -> zoo.train_command"),
        # the core importing a built-in plugin by module rather than by name
        ("zoo.registry", "import zoo_plugins.qwen", "core-imports-no-plugin", "zoo.registry -> zoo_plugins.qwen"),
    ],
)
def test_a_planted_import_breaks_its_contract(tmp_path, module, line, contract, edge):
    root = _tree(tmp_path)
    _plant(root, module, line)
    result = _lint(root, "--contract", contract)
    assert result.returncode != 0, result.stdout
    assert "0 kept, 1 broken" in result.stdout, result.stdout
    assert edge in result.stdout, result.stdout
