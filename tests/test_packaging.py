"""Packaging: the wheel carries zoo, zoo_plugins (from plugins/), the registry and the tiny tokenizer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_works_outside_the_repo(tmp_path):
    wheels = tmp_path / "wheels"
    source = tmp_path / "src"  # build from a copy: setuptools writes build/ next to the sources
    shutil.copytree(
        REPO, source, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "bench-out", "*.egg-info", "__pycache__")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("zoo_vlm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "zoo/registry.yaml" in names and "zoo_plugins/clip.py" in names and "zoo/sdk/__init__.py" in names
    assert any(n.startswith("zoo/assets/tiny_tokenizer/") for n in names)
    for wing in ("sdk", "core", "checkpoint", "interop", "train", "cli", "bench"):  # every wing is packaged
        assert f"zoo/{wing}/__init__.py" in names, wing
    assert not any(n.startswith("plugins/") for n in names)  # no top-level 'plugins' package
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    script = (
        f"import zoo, zoo_plugins; assert zoo.__file__.startswith({str(site)!r}), zoo.__file__; "
        "m = zoo.build('tiny-clip-mlp-qwen2'); print(m.tokens_per_image)"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 0
