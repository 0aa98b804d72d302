"""Shared fixtures: a fresh registry per test that changes plugins, small seeded models, tmp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zoo.core.registry import reset_registry

PLUGIN_FILES = Path(__file__).parent / "plugin_files"


@pytest.fixture(autouse=True, scope="session")
def _feature_cache_in_a_temporary_folder(tmp_path_factory):
    """zoo's caches (the plan cache, the feature cache of trainings) go to a folder of this test run, never
    to the user's ``~/.cache``."""
    patch = pytest.MonkeyPatch()
    patch.setenv("ZOO_CACHE_DIR", str(tmp_path_factory.mktemp("zoo-cache")))
    patch.delenv("ZOO_NO_CACHE", raising=False)
    yield
    patch.undo()


@pytest.fixture
def fresh_registry(monkeypatch):
    """Reset the process-wide registry before and after the test (for plugin-loading tests)."""
    for name in ("ZOO_PLUGINS", "ZOO_STRICT_PLUGINS", "ZOO_DISABLE_PLUGINS", "ZOO_TRACE_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    reset_registry()
    yield
    reset_registry()


@pytest.fixture
def tiny_model():
    """The registry's tiny composition, seeded, in eval mode."""
    import zoo

    torch.manual_seed(0)
    return zoo.build("tiny-clip-mlp-qwen2").eval()


@pytest.fixture
def write_yaml(tmp_path):
    """Write a YAML text to a file in tmp_path and return its path."""

    def write(text: str, name: str = "model.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
