"""The README's tower and LM plugin examples (examples/zoo-example-backbones), installed like a user would.

The package is pip-installed into a private site dir; every check runs in a fresh interpreter that finds
it through its ``zoo`` entry point: listing imports no model library, both components pass ``zoo.testing``,
an ``arch`` typo is named, and the README shows the files verbatim.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "zoo-example-backbones"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


def _python(code: str, site: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_readme_shows_the_example_files_verbatim():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("__init__.py", "convnext.py"):
        source = (EXAMPLE / "zoo_example_backbones" / name).read_text(encoding="utf-8").rstrip()
        assert f"```python\n{source}\n```" in readme, name


def test_listing_finds_both_and_imports_no_model_library(site):
    report = _python(
        "import json, sys\n"
        "from zoo.core.registry import get_registry\n"
        "registry = get_registry()\n"
        "names = [s.name for s in registry.list('vision', 'tiny-convnext') + registry.list('lm', 'tiny-gemma')]\n"
        "heavy = sorted({'torch', 'transformers', 'timm', 'open_clip'} & set(sys.modules))\n"
        "print(json.dumps({'names': names, 'heavy': heavy, 'failures': [f.error for f in registry.host.failures]}))",
        site,
    )
    assert report == {"names": ["tiny-convnext", "tiny-gemma"], "heavy": [], "failures": []}


def test_conformance_composition_and_arch_typo(site):
    report = _python(
        "import json, zoo, zoo.testing as t\n"
        "from zoo.errors import ConfigError\n"
        "towers = [t.check_vision_tower('tiny-convnext', select_layer=s) for s in (-2, 2, 0)]\n"
        "lm = t.check_language_model('tiny-gemma')\n"
        "model = zoo.build({'model': {'vision': 'tiny-convnext', 'projector': 'mlp2x-gelu', 'lm': 'tiny-gemma'}})\n"
        "typos = []\n"
        "for kind, arch in (('vision', {'hidden_size': [8]}), ('lm', {'hiden_size': 8})):\n"
        "    try:\n"
        "        zoo.core.builder.build_component(kind, {'vision': 'tiny-convnext', 'lm': 'tiny-gemma'}[kind],\n"
        "                                    {'arch': arch}, meta=True)\n"
        "    except ConfigError as error:\n"
        "        typos.append(str(error))\n"
        "print(json.dumps({'shapes': [x['output_shape'] for x in towers], 'lm': lm['hidden_size'],\n"
        "                  'tokens': model.tokens_per_image, 'typos': typos}))",
        site,
    )
    assert report["shapes"] == [[2, 16, 32], [2, 64, 24], [2, 256, 16]]  # stage 3, stage 2, stem: widths differ
    assert report["lm"] == 64 and report["tokens"] == 16
    assert (
        "model.vision.arch.hidden_size is not a field of ConvNextConfig; did you mean 'hidden_sizes'"
        in report["typos"][0]
    )
    assert "model.lm.arch.hiden_size is not a field of GemmaConfig; did you mean 'hidden_size'" in report["typos"][1]
