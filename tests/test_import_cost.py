"""Import cost: registering and listing built-in components imports no model library, so ``zoo list`` is instant.

Each check runs in a fresh interpreter (this test process has torch loaded already) and reports which of
torch / transformers / timm / open_clip got imported, and by which plugin module.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.plugin_manager import BUILTIN_PLUGINS

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "timm", "open_clip")

# Every built-in plugin module imports and registers without any of HEAVY; factories import the model
# code on first call. (A new built-in must keep to this: it is listed in BUILTIN_PLUGINS.)
TORCH_FREE_PLUGINS = BUILTIN_PLUGINS
# modules whose public names partly resolve lazily (module ``__getattr__``)
LAZY_EXPORTERS = (*TORCH_FREE_PLUGINS, "zoo.hf", "zoo.sdk")


def _run(code: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**environ, **env}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_plugin_modules_import_no_model_library():
    code = f"""
import importlib, json, sys
heavy = {HEAVY!r}
for name in {TORCH_FREE_PLUGINS!r}:
    importlib.import_module(name)
    loaded = sorted(m for m in heavy if m in sys.modules)
    if loaded:
        print(json.dumps({{"culprit": name, "loaded": loaded}}))
        break
else:
    print(json.dumps({{"culprit": None, "loaded": []}}))
"""
    report = _run(code)
    assert report == {"culprit": None, "loaded": []}, f"{report['culprit']} imports {report['loaded']} at import time"


def test_registering_and_listing_imports_no_model_library():
    blocked = [name for name in BUILTIN_PLUGINS if name not in TORCH_FREE_PLUGINS]
    blocked += [ep.name for ep in importlib.metadata.entry_points(group="zoo")]  # third-party plugins: not ours
    code = f"""
import json, sys
from zoo.registry import get_registry
registry = get_registry()
specs = registry.list()
print(json.dumps({{
    "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules),
    "plugins": sorted({{spec.plugin for spec in specs}}),
    "failures": [f.error for f in registry.host.failures],
    "kinds": sorted({{spec.kind for spec in specs}}),
}}))
"""
    report = _run(code, ZOO_DISABLE_PLUGINS=",".join(blocked))
    assert report["failures"] == []
    assert report["plugins"] == sorted(TORCH_FREE_PLUGINS)  # every torch-free plugin registered something
    assert report["kinds"] == ["lm", "projector", "vision"]
    assert report["loaded"] == [], f"listing imported {report['loaded']}"


@pytest.mark.parametrize("module_name", LAZY_EXPORTERS)
def test_public_names_resolve_and_unknown_names_raise(module_name):
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert missing == []
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        _ = module.NoSuchName


def test_lazy_names_are_the_implementation_objects():
    from zoo_plugins import (
        _clip_tower,
        _open_clip_tower,
        _proj_attention,
        _proj_mlp,
        _timm_tower,
        clip,
        open_clip_towers,
        projectors,
        timm_towers,
    )

    import zoo.hf
    import zoo.hf_lm
    import zoo.hf_vision

    assert clip.CLIPTower is _clip_tower.CLIPTower
    assert timm_towers.TimmVisionTower is _timm_tower.TimmVisionTower
    assert timm_towers.load_strict is _timm_tower.load_strict
    assert open_clip_towers.OpenClipVisionTower is _open_clip_tower.OpenClipVisionTower
    assert open_clip_towers.open_clip_model_config is _open_clip_tower.open_clip_model_config
    assert projectors.sincos_2d is _proj_attention.sincos_2d
    assert projectors.MlpProjector is _proj_mlp.MlpProjector
    assert zoo.hf.build_language_model is zoo.hf_lm.build_language_model
    assert zoo.hf.HFVisionTower is zoo.hf_vision.HFVisionTower


def test_zoo_list_imports_no_model_library():
    """``zoo list`` (the CLI parser included, with every subcommand) answers without importing torch."""
    script = (
        "import contextlib, io, sys\n"
        "import zoo.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert zoo.cli.main(['list']) == 0\n"
        "assert 'tiny-clip' in out.getvalue()\n"
        "heavy = sorted({'torch', 'transformers', 'timm', 'open_clip', 'peft'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
