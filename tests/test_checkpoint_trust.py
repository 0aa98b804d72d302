"""A checkpoint is data: hostile manifests neither run code nor reach outside the directory; every
malformed field is one CheckpointError naming it (hand-written cases and a hypothesis fuzz); hashes."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo
from zoo.checkpoint.loading import load
from zoo.checkpoint.manifest import MANIFEST, parse_manifest, validate_manifest
from zoo.checkpoint.saving import save
from zoo.checkpoint.snapshot import verify
from zoo.cli.app import main
from zoo.errors import CheckpointError

HOSTILE = Path(__file__).with_name("_hostile_load.py")
MARKER_CODE = "import pathlib; pathlib.Path({marker!r}).write_text('ran')\n"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One saved tiny checkpoint; tests copy it before tampering."""
    torch.manual_seed(0)
    model = zoo.build("tiny-clip-mlp-qwen2").eval()
    return save(model, tmp_path_factory.mktemp("template") / "ckpt")


def _copy(template: Path, where: Path) -> Path:
    shutil.copytree(template, where)
    return where


def _edit(directory: Path, edit) -> None:
    manifest = json.loads((directory / MANIFEST).read_text())
    edit(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))


def _relist(directory: Path, name: str) -> None:
    """Record ``name``'s current size and hash in the manifest (a tamperer who knows the format)."""
    data = (directory / name).read_bytes()
    _edit(
        directory, lambda m: m["files"].update({name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}})
    )


# -- hostile checkpoints -----------------------------------------------------------------------------
def test_hostile_checkpoints_run_no_code_and_open_nothing_outside(template, tmp_path):
    outside = tmp_path / "OUTSIDE_zoo_secret"
    outside.mkdir()
    marker = tmp_path / "code-ran"
    shutil.copy(template / "projector.safetensors", outside / "secret.safetensors")
    (outside / "config.json").write_text("{}")
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "evil_module.py").write_text(MARKER_CODE.format(marker=str(marker)))
    cases: dict[str, Path] = {}

    def case(name: str, edit=None) -> Path:
        directory = _copy(template, tmp_path / name)
        if edit is not None:
            _edit(directory, edit)
        cases[name] = directory
        return directory

    def evil_vision(plugin: str):
        def edit(m):
            m["model"]["plugins"] = [plugin]
            m["model"]["model"]["vision"]["name"] = "evil-vit"
            m["components"]["vision"].update(name="evil-vit", plugin=plugin, package="evil-pkg")

        return edit

    plugin_file = case("plugin-file")
    (plugin_file / "evil.py").write_text(MARKER_CODE.format(marker=str(marker)))
    _edit(plugin_file, evil_vision(str(plugin_file / "evil.py")))
    case("plugin-module", evil_vision("evil_module"))
    case("plugin-module-known-names", lambda m: m["model"].update(plugins=["evil_module"]))

    def trust(m):
        m["model"]["model"]["lm"]["trust_remote_code"] = True
        m["components"]["lm"]["config"]["trust_remote_code"] = True

    case("trust-remote-code", trust)

    def weights_at(path: str):
        def edit(m):
            m["components"]["projector"]["weights"]["file"] = path
            m["files"][path] = m["files"]["projector.safetensors"]

        return edit

    case("dotdot", weights_at("../OUTSIDE_zoo_secret/secret.safetensors"))
    case("absolute", weights_at(str(outside / "secret.safetensors")))
    case("nested-dotdot", weights_at("sub/../../OUTSIDE_zoo_secret/secret.safetensors"))
    for name, link in (
        ("symlink-relative", "../OUTSIDE_zoo_secret/secret.safetensors"),
        ("symlink-absolute", str(outside / "secret.safetensors")),
    ):
        directory = case(name)
        (directory / "projector.safetensors").unlink()
        (directory / "projector.safetensors").symlink_to(link)
    directory = case("symlink-dir")
    shutil.rmtree(directory / "tokenizer")
    (directory / "tokenizer").symlink_to(outside)

    def referenced(m):
        m["components"]["vision"]["weights"] = {"mode": "referenced", "checkpoint": str(outside), "fingerprint": {}}
        m["components"]["vision"]["config"]["checkpoint"] = str(outside)
        m["model"]["model"]["vision"]["checkpoint"] = str(outside)

    case("referenced-outside", referenced)
    inside = case("symlink-inside")  # a link that stays inside is followed: this one loads
    (inside / "weights").mkdir()
    os.rename(inside / "projector.safetensors", inside / "weights" / "projector.safetensors")
    (inside / "projector.safetensors").symlink_to("weights/../weights/projector.safetensors")

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(modules), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, str(HOSTILE), str(outside), *map(str, cases.values())],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    results = {Path(r["dir"]).name: r for r in lines[:-1]}
    assert not marker.exists(), "a checkpoint ran code"
    assert lines[-1] == {"outside": []}, lines[-1]
    expected = {
        "plugin-file": r"vision tower 'evil-vit' was registered by plugin '.*evil.py' \(package 'evil-pkg'\)",
        "plugin-module": r"plugin 'evil_module' \(package 'evil-pkg'\).*never imports a plugin a checkpoint names",
        "trust-remote-code": r"asks for trust_remote_code.*--trust-remote-code",
        "dotdot": r"files = '\.\./OUTSIDE.*has an empty, '\.' or '\.\.' part",
        "absolute": r"files = '/.*is absolute",
        "nested-dotdot": r"'\.\.' part",
        "symlink-relative": r"'projector.safetensors' is a symlink that leads outside the checkpoint directory",
        "symlink-absolute": r"'projector.safetensors' is a symlink to an absolute path",
        "symlink-dir": r"'tokenizer' is a symlink to an absolute path",
        "referenced-outside": r"its vision is built from .*OUTSIDE.*outside the checkpoint directory.*--base vision=",
    }
    import re

    for name, pattern in expected.items():
        assert results[name]["result"] == "CheckpointError", (name, results[name])
        assert re.search(pattern, results[name]["message"]), (name, results[name]["message"])
    assert results["plugin-module-known-names"]["result"] == "loaded"  # the plugins list is ignored, not run
    assert results["symlink-inside"]["result"] == "loaded"


def test_trust_remote_code_comes_from_the_caller(template, tmp_path, capsys):
    directory = _copy(template, tmp_path / "ckpt")

    def trust(m):
        m["model"]["model"]["lm"]["trust_remote_code"] = True
        m["components"]["lm"]["config"]["trust_remote_code"] = True

    _edit(directory, trust)
    with pytest.raises(CheckpointError, match=r"pass trust_remote_code=True to zoo\.load"):
        load(directory)
    assert load(directory, trust_remote_code=True).lm.model is not None  # the caller opted in
    code = main(["generate", str(directory), "--prompt", "hi", "--max-new-tokens", "1"])
    assert code == 2 and "--trust-remote-code" in capsys.readouterr().err
    code = main(["generate", str(directory), "--prompt", "hi", "--max-new-tokens", "1", "--trust-remote-code"])
    assert code == 0


# -- malformed manifests -----------------------------------------------------------------------------
def _manifest(template: Path) -> dict:
    return json.loads((template / MANIFEST).read_text())


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("format_version",), -7, r"format_version = -7: expected an integer from 1 to 2"),
        (("format_version",), "2", r"format_version = '2'"),
        (("format_version",), True, r"format_version = True"),
        (("components",), [], r"components = \[\]: expected a JSON object"),
        (("components", "lm"), "x", r"components.lm = 'x'"),
        (("components", "lm", "weights"), None, r"components.lm.weights"),
        (("components", "lm", "weights", "mode"), "pickled", r"components.lm.weights.mode = 'pickled'"),
        (("components", "projector", "weights", "file"), 3, r"components.projector.weights.file = 3"),
        (("components", "projector", "weights", "file"), "", r"components.projector.weights.file = '' is empty"),
        (("components", "lm", "added_rows"), {"file": "lm.safetensors", "from": 5, "to": 2}, r"added_rows.to = 2"),
        (("files", "lm.safetensors"), {"size": -1, "sha256": "0" * 64}, r"files\['lm.safetensors'\].size = -1"),
        (("files", "lm.safetensors"), {"size": 1, "sha256": "xyz"}, r"files\['lm.safetensors'\].sha256 = 'xyz'"),
        (("files", "lm.safetensors"), [1], r"files\['lm.safetensors'\] = \[1\]"),
        (("generation",), "not hex!", r"generation = 'not hex!'"),
        (("tokenizer", "dir"), "../x", r"tokenizer.dir = '../x'"),
        (("image_token_id",), 1.5, r"image_token_id = 1.5"),
    ],
)
def test_each_malformed_field_is_one_error_naming_it(template, path, value, field):
    manifest = _manifest(template)
    node = manifest
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(CheckpointError, match=field):
        validate_manifest(manifest, "ckpt")


def test_a_file_the_manifest_needs_but_does_not_list(template):
    manifest = _manifest(template)
    del manifest["files"]["projector.safetensors"]
    with pytest.raises(
        CheckpointError, match=r"components.projector.weights.file = 'projector.safetensors' is not listed"
    ):
        validate_manifest(manifest, "ckpt")


def test_newer_format_and_deep_nesting(template):
    manifest = _manifest(template)
    manifest["format_version"] = 99
    with pytest.raises(CheckpointError, match=r"format_version 99 is newer than the newest this zoo reads \(2\)"):
        validate_manifest(manifest, "ckpt")
    deep = b'{"format": "zoo.checkpoint", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    with pytest.raises(CheckpointError, match="nests 100001 levels deep"):
        parse_manifest(deep, "ckpt")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        parse_manifest(b"\xff\xfe", "ckpt")


def _mutations(value, depth=0):
    """A strategy of manifests derived from ``value`` by replacing one node with junk."""
    junk = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    )
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, (*path, key))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, (*path, index))

    walk(value, ())

    def apply(choice):
        path, replacement, drop = choice
        mutated = copy.deepcopy(value)
        if not path:
            return replacement
        node = mutated
        for key in path[:-1]:
            node = node[key]
        if drop and isinstance(node, dict):
            node.pop(path[-1], None)
        else:
            node[path[-1]] = replacement
        return mutated

    return st.tuples(st.sampled_from(paths), junk, st.booleans()).map(apply)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_manifests_raise_only_checkpoint_errors(template, data):
    manifest = data.draw(_mutations(_manifest(template)))
    try:
        validate_manifest(manifest, "fuzz")
        parse_manifest(json.dumps(manifest).encode(), "fuzz")
    except CheckpointError:
        pass


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
@pytest.mark.slow
def test_fuzzed_manifests_through_the_whole_load(template, tmp_path_factory, data):
    """Manifests that pass validation go on to the plan and the build: still only zoo errors escape."""
    directory = _copy(template, tmp_path_factory.mktemp("fuzz") / "ckpt")
    manifest = _manifest(template)
    section = data.draw(st.sampled_from(["model", "contract", "components"]))
    manifest[section] = data.draw(_mutations(manifest[section]))
    (directory / MANIFEST).write_text(json.dumps(manifest))
    try:
        load(directory)
    except zoo.ZooError:
        pass


# -- tensors and integrity ---------------------------------------------------------------------------
def test_wrong_dtypes_and_truncated_files_are_checkpoint_errors(template, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = _copy(template, tmp_path / "f64")
    state = load_file(str(directory / "projector.safetensors"))
    save_file({k: v.double() for k, v in state.items()}, str(directory / "projector.safetensors"))
    _relist(directory, "projector.safetensors")
    with pytest.raises(CheckpointError, match=r"projector .*wrong dtype: .*saved float64, model float32"):
        load(directory)
    save_file({k: v.to(torch.int32) for k, v in state.items()}, str(directory / "projector.safetensors"))
    _relist(directory, "projector.safetensors")
    with pytest.raises(CheckpointError, match=r"saved int32, model float32"):
        load(directory)

    directory = _copy(template, tmp_path / "short")
    data = (directory / "lm.safetensors").read_bytes()
    (directory / "lm.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"incomplete: lm.safetensors has \d+ bytes, the manifest says \d+"):
        load(directory)
    _relist(directory, "lm.safetensors")  # a truncation the manifest agrees with
    with pytest.raises(CheckpointError, match=r"lm.safetensors cannot be read as safetensors"):
        load(directory)


def test_verify_detects_a_flipped_byte(template, tmp_path, capsys):
    directory = _copy(template, tmp_path / "ckpt")
    assert main(["verify", str(directory)]) == 0
    assert "match the manifest" in capsys.readouterr().out
    assert verify(directory)["files"] == len(_manifest(template)["files"])
    data = bytearray((directory / "lm.safetensors").read_bytes())
    data[-3] ^= 0x01  # inside the tensor data: the header still parses, the load would not notice
    (directory / "lm.safetensors").write_bytes(bytes(data))
    assert main(["verify", str(directory)]) == 2
    err = capsys.readouterr().err
    assert "lm.safetensors: sha256" in err and err.count("\n") == 1
    with pytest.raises(CheckpointError, match=r"failed verification: lm.safetensors: sha256"):
        load(directory, verify=True)
    load(directory)  # without verify, only sizes are checked


def test_nested_base_paths_need_the_callers_trust(tmp_path, capsys):
    """A fused tower's sub-tower built from a checkpoint: a path below the slot is read only with --base recorded."""
    torch.manual_seed(0)
    siglip = tmp_path / "siglip"
    zoo.build(
        {"model": {"vision": "tiny-siglip", "projector": "mlp2x-gelu", "lm": "tiny-qwen2"}}
    ).vision.model.save_pretrained(siglip)
    towers = [{"name": "tiny-dinov2"}, {"name": "tiny-siglip", "checkpoint": str(siglip)}]
    model = zoo.build(
        {"model": {"vision": {"name": "fused", "towers": towers}, "projector": "mlp2x-gelu", "lm": "tiny-qwen2"}}
    )
    directory = save(model.eval(), tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=r"model.vision.towers\[1\].checkpoint = '.*siglip' names a path outside"):
        load(directory)
    loaded = load(directory, bases="recorded")
    pixels = torch.randn(1, *model.vision.pixel_shape)
    with torch.no_grad():
        assert torch.equal(loaded.vision(pixels), model.vision(pixels))
    code = main(["generate", str(directory), "--prompt", "hi", "--base", "vision"])
    assert code == 2 and "expected SLOT=PATH" in capsys.readouterr().err


def test_format_version_1_checkpoints_still_load(template, tmp_path):
    directory = _copy(template, tmp_path / "v1")

    def downgrade(m):
        m["format_version"] = 1
        del m["generation"]
        m["files"] = {name: entry["size"] for name, entry in m["files"].items()}

    _edit(directory, downgrade)
    load(directory)
    with pytest.raises(CheckpointError, match=r"lm.safetensors: no sha256 recorded \(format_version 1\)"):
        verify(directory)
