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

from zoo.core.plugin_manager import BUILTIN_PLUGINS

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "timm", "open_clip")

# Every built-in plugin module imports and registers without any of HEAVY; factories import the model
# code on first call. (A new built-in must keep to this: it is listed in BUILTIN_PLUGINS.)
TORCH_FREE_PLUGINS = BUILTIN_PLUGINS
# modules whose public names partly resolve lazily (module ``__getattr__``)
LAZY_EXPORTERS = (*TORCH_FREE_PLUGINS, "zoo.sdk.hf", "zoo.sdk")


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
from zoo.core.registry import get_registry
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

    import zoo.sdk.hf
    import zoo.sdk.hf_lm
    import zoo.sdk.hf_vision

    assert clip.CLIPTower is _clip_tower.CLIPTower
    assert timm_towers.TimmVisionTower is _timm_tower.TimmVisionTower
    assert timm_towers.load_strict is _timm_tower.load_strict
    assert open_clip_towers.OpenClipVisionTower is _open_clip_tower.OpenClipVisionTower
    assert open_clip_towers.open_clip_model_config is _open_clip_tower.open_clip_model_config
    assert projectors.sincos_2d is _proj_attention.sincos_2d
    assert projectors.MlpProjector is _proj_mlp.MlpProjector
    assert zoo.sdk.hf.build_language_model is zoo.sdk.hf_lm.build_language_model
    assert zoo.sdk.hf.HFVisionTower is zoo.sdk.hf_vision.HFVisionTower


def test_zoo_list_imports_no_model_library():
    """``zoo list`` (the CLI parser included, with every subcommand) answers without importing torch."""
    script = (
        "import contextlib, io, sys\n"
        "import zoo.cli.app\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert zoo.cli.app.main(['list']) == 0\n"
        "assert 'tiny-clip' in out.getvalue()\n"
        "heavy = sorted({'torch', 'transformers', 'timm', 'open_clip', 'peft'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# -- zoo verify: a hash check imports no plugin and no model library ---------------------------------
MARKER_PLUGIN = """
import os, pathlib
pathlib.Path(os.environ["ZOO_TEST_MARKERS"], __name__).write_text("imported")
"""


def _plant_plugins(root: Path) -> dict[str, str]:
    """Three plugins that leave a marker file when imported: by entry point, by ``ZOO_PLUGINS``, by ``--plugin``."""
    site = root / "site"
    site.mkdir()
    for name in ("ep_marker", "env_marker", "cli_marker"):
        (site / f"{name}.py").write_text(MARKER_PLUGIN, encoding="utf-8")
    dist = site / "zoo_marker-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-marker\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[zoo]\nmarker = ep_marker\n", encoding="utf-8")
    markers = root / "markers"
    markers.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    return {**environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "ZOO_PLUGINS": "env_marker",
            "ZOO_TEST_MARKERS": str(markers)}  # fmt: skip


VERIFY_CHILD = """
import contextlib, io, json, sys
from zoo.cli.app import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "out": out.getvalue(),
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] in
                                    ("torch", "transformers", "safetensors", "zoo_plugins", "plugins")
                                    or m in ("zoo.core.registry", "zoo.core.plugin_manager"))}))
"""


def _zoo_child(env: dict[str, str], *argv: str) -> dict:
    result = subprocess.run([sys.executable, "-c", VERIFY_CHILD, *argv], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_verify_imports_no_plugin_and_no_model_library(tmp_path, tiny_model):
    import zoo

    checkpoint = tmp_path / "ckpt"
    zoo.save(tiny_model, checkpoint)
    env = _plant_plugins(tmp_path)
    markers = Path(env["ZOO_TEST_MARKERS"])
    report = _zoo_child(env, "--plugin", "cli_marker", "verify", str(checkpoint))
    assert report["code"] == 0 and report["out"].startswith("ok: ")
    assert sorted(p.name for p in markers.iterdir()) == []  # no plugin module ran
    assert report["modules"] == []  # no registry or plugin host, no built-in plugin, no torch
    # the control: the same environment makes 'zoo list' import all three plugins
    report = _zoo_child(env, "--plugin", "cli_marker", "list", "vision")
    assert report["code"] == 0 and "tiny-clip" in report["out"]
    assert sorted(p.name for p in markers.iterdir()) == ["cli_marker", "env_marker", "ep_marker"]
    assert "zoo.core.registry" in report["modules"]


def test_verify_still_names_a_changed_file(tmp_path, tiny_model, capsys):
    import zoo
    from zoo.cli.app import main

    checkpoint = tmp_path / "ckpt"
    zoo.save(tiny_model, checkpoint)
    weights = checkpoint / "projector.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert main(["verify", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "failed verification" in err and "projector.safetensors: sha256" in err


# -- zoo validate / zoo show: a checked tiny composition answers without a model library --------------
HEAVY_CHILD = """
import contextlib, io, json, sys
from zoo.cli.app import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(sys.argv[1:])
top = {m.split(".")[0] for m in sys.modules}
print(json.dumps({"code": code, "out": out.getvalue(),
                  "heavy": sorted(top & {"torch", "transformers", "peft", "timm", "open_clip", "safetensors"})}))
"""


def _child(cache: Path, *argv: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    result = subprocess.run([sys.executable, "-c", HEAVY_CHILD, *argv], cwd=REPO, capture_output=True, text=True,
                            env={**environ, "ZOO_CACHE_DIR": str(cache)}, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["validate", "tiny-clip-mlp-qwen2"], ["show", "tiny-clip"],
                                  ["show", "mlp2x-gelu", "--json"], ["validate", "default"]])  # fmt: skip
def test_checking_again_imports_no_model_library(tmp_path, argv):
    first = _child(tmp_path, *argv)
    assert first["code"] == 0 and "torch" in first["heavy"]  # planned (or built) on meta, once
    # only what the components need: no LoRA, timm or open_clip code for these transformers components
    assert not {"peft", "timm", "open_clip"} & set(first["heavy"])
    second = _child(tmp_path, *argv)
    assert second == {**first, "heavy": []}  # the same answer, and no model library imported
