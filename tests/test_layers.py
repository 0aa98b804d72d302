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
            "from zoo.core.builder import build_component",
            "plugins-use-the-sdk",
            "zoo_plugins.qwen -> zoo.core.builder",
        ),
        # an example package importing a non-SDK module
        (
            "zoo_example_plugin",
            "from zoo.sdk.hf import Family",
            "plugins-use-the-sdk",
            "zoo_example_plugin -> zoo.sdk.hf",
        ),
        # the SDK reaching up into the checkpoint wing
        ("zoo.sdk.weights", "import zoo.checkpoint.loading", "wings", "zoo.sdk.weights -> zoo.checkpoint.loading"),
        # the core importing a command (upward across the wings)
        ("zoo.core.builder", "import zoo.cli.train", "wings", "zoo.core.builder -> zoo.cli.train"),
        # the train wing importing the interop wing (siblings that must not import each other)
        ("zoo.train.run", "import zoo.interop.llava", "wings", "zoo.train.run -> zoo.interop.llava"),
        # the checkpoint wing reaching into interop to word an error (the cycle issue 19 removed)
        (
            "zoo.checkpoint.snapshot",
            "import zoo.interop.vlm_learning",
            "wings",
            "zoo.checkpoint.snapshot -> zoo.interop.vlm_learning",
        ),
        # two modules of one wing importing each other
        ("zoo.sdk.hf_lm", "import zoo.sdk.hf", "no-cycles", "hf_lm -> .hf"),
        # a shared option parser importing a command that imports it
        ("zoo.cli.load_options", "import zoo.cli.convert", "no-cycles", "No cycles are allowed in zoo.cli."),
        # the core importing a built-in plugin by module rather than by name
        (
            "zoo.core.registry",
            "import zoo_plugins.qwen",
            "core-imports-no-plugin",
            "zoo.core.registry -> zoo_plugins.qwen",
        ),
    ],
)
def test_a_planted_import_breaks_its_contract(tmp_path, module, line, contract, edge):
    root = _tree(tmp_path)
    _plant(root, module, line)
    result = _lint(root, "--contract", contract)
    assert result.returncode != 0, result.stdout
    assert "0 kept, 1 broken" in result.stdout, result.stdout
    assert edge in result.stdout, result.stdout
