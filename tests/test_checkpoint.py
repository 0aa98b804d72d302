"""Self-describing checkpoints: round trips with identical logits, the manifest, atomic saves, clear errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import zoo
import zoo.checkpoint.atomic
import zoo.checkpoint.saving
from zoo.checkpoint.loading import load, read_manifest
from zoo.checkpoint.manifest import MANIFEST
from zoo.checkpoint.saving import save
from zoo.checkpoint.state_dict import canonical_state
from zoo.core.builder import build_component
from zoo.core.train_policy import param_groups
from zoo.errors import CheckpointError

HELPER = Path(__file__).with_name("_kill_during_save.py")


def _inputs(model, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(0, 1000, (2, 5), generator=generator)
    image = torch.full((2, model.tokens_per_image), model.image_token_id)
    return {
        "input_ids": torch.cat([text[:, :2], image, text[:, 2:]], dim=1),
        "pixel_values": torch.randn(2, 3, 32, 32, generator=generator),
    }


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(inputs["pixel_values"], inputs["input_ids"]).logits


def test_frozen_tiny_model_round_trip_and_manifest(tmp_path, tiny_model):
    inputs = _inputs(tiny_model)
    directory = zoo.save(tiny_model, tmp_path / "ckpt")
    loaded = load(directory)
    assert torch.equal(_logits(loaded, inputs), _logits(tiny_model, inputs))
    assert not loaded.training and loaded.image_token_id == tiny_model.image_token_id

    manifest = read_manifest(directory)
    assert manifest["format"] == "zoo.checkpoint" and manifest["format_version"] == 2
    assert manifest["zoo_version"] == zoo.__version__
    assert {"torch", "transformers", "peft", "safetensors"} <= set(manifest["versions"])
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["model"] == tiny_model.composition.to_dict()  # no relative paths to rewrite here
    assert manifest["contract"] == tiny_model.contract.to_dict()
    assert manifest["image_token"] == "<image>" and manifest["image_token_id"] == tiny_model.image_token_id
    for kind, plugin in (
        ("vision", "zoo_plugins.clip"),
        ("projector", "zoo_plugins.projectors"),
        ("lm", "zoo_plugins.qwen"),
    ):
        record = manifest["components"][kind]
        assert record["name"] == record["spec"] == tiny_model.composition.slot(kind).name
        assert record["plugin"] == plugin
        expected = json.loads(json.dumps(dataclasses.asdict(tiny_model.component_configs[kind])))
        assert record["config"] == expected
        assert record["contract"] == json.loads(json.dumps(getattr(tiny_model, kind).contract()))
        # tiny components are random init: no checkpoint could rebuild them, so all are saved
        assert record["weights"]["mode"] == "saved" and (directory / record["weights"]["file"]).is_file()
    assert manifest["components"]["projector"]["train"] == "full"
    assert manifest["components"]["lm"]["train"] == "frozen" and "lora" not in manifest["components"]["lm"]
    assert manifest["tokenizer"]["saved"] and (directory / "tokenizer" / "tokenizer.json").is_file()
    assert (
        "<image>" in json.loads((directory / "tokenizer" / "tokenizer.json").read_text())["added_tokens"][-1]["content"]
    )
    assert set(manifest["files"]) >= {"vision.safetensors", "projector.safetensors", "lm.safetensors"}
    for name, entry in manifest["files"].items():  # size and sha256 of every file, tokenizer included
        data = (directory / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    from safetensors import safe_open

    with safe_open(str(directory / "projector.safetensors"), framework="pt") as reader:
        assert reader.metadata()["zoo.generation"] == manifest["generation"]
    assert not list(directory.rglob("*.bin")) and not list(directory.rglob("*.pt"))  # no pickle anywhere


def test_lora_model_round_trip_after_a_training_step(tmp_path):
    torch.manual_seed(0)
    config = {
        "model": {"vision": "tiny-clip", "projector": "mlp2x-gelu", "lm": {"name": "tiny-qwen2", "train": "lora"}}
    }
    model = zoo.build(config)
    inputs = _inputs(model)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-2))
    model(inputs["pixel_values"], inputs["input_ids"], labels=inputs["input_ids"]).loss.backward()
    optimizer.step()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # the adapter is no longer the identity
    model.eval()

    directory = save(model, tmp_path / "ckpt")
    record = read_manifest(directory)["components"]["lm"]
    assert record["train"] == "lora" and record["lora"]["r"] == 16 and "q_proj" in record["lora"]["targets"]
    assert {"adapter_model.safetensors", "adapter_config.json"} <= {
        p.name for p in (directory / "lm_adapter").iterdir()
    }
    from safetensors import safe_open

    with safe_open(str(directory / "lm.safetensors"), "pt") as file:  # the random base, without LoRA tensors
        assert not [k for k in file.keys() if "lora" in k or "base_layer" in k]

    loaded = load(directory)
    assert torch.equal(_logits(loaded, inputs), _logits(model, inputs))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in loaded.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any(n.startswith("projector.") for n in trainable)


def test_load_builds_each_component_once(tmp_path, tiny_model):
    """The reference design built its LM twice at load; zoo builds on meta to plan, then once for real."""
    from zoo.core.registry import get_registry
    from zoo.sdk.weights import building_on_meta

    directory = save(tiny_model, tmp_path / "ckpt")
    registry = get_registry()
    original = registry.get("lm", "tiny-qwen2")
    calls = []

    def counting(config):
        calls.append("meta" if building_on_meta() else "real")
        return original.factory(config)

    registry.remove("lm", "tiny-qwen2")
    registry.add(dataclasses.replace(original, factory=counting), plugin=original.plugin)
    try:
        load(directory)
    finally:
        registry.remove("lm", "tiny-qwen2")
        registry.add(original, plugin=original.plugin)
    assert calls == ["meta", "real"]


def _lm_checkpoint(path: Path, vocab_size: int) -> Path:
    torch.manual_seed(3)
    lm = build_component("lm", "tiny-qwen2", {"arch": {"vocab_size": vocab_size}})
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return path


def test_frozen_checkpoint_lm_is_referenced_with_its_added_rows(tmp_path):
    # vocabulary 1024 == the tokenizer's: adding <image> grows the embeddings by a random row
    lm_dir = _lm_checkpoint(tmp_path / "qwen", vocab_size=1024)
    config = {"model": {"vision": "tiny-clip", "projector": "mlp2x-gelu",
                        "lm": {"name": "hf-causal-lm", "checkpoint": str(lm_dir)}}}  # fmt: skip
    torch.manual_seed(0)
    model = zoo.build(config).eval()
    assert model.lm.vocab_size == 1025
    inputs = _inputs(model)
    directory = save(model, tmp_path / "ckpt")
    record = read_manifest(directory)["components"]["lm"]
    assert record["weights"]["mode"] == "referenced"
    assert record["weights"]["checkpoint"] == str(lm_dir.resolve())
    assert record["weights"]["fingerprint"]["model.safetensors"] == (lm_dir / "model.safetensors").stat().st_size
    assert record["added_rows"] == {"file": "lm.added_rows.safetensors", "from": 1024, "to": 1025}
    assert not (directory / "lm.safetensors").exists()

    with pytest.raises(CheckpointError, match=r"its lm is built from .*qwen.*outside the checkpoint.*bases="):
        load(directory)  # a checkpoint never makes zoo read outside itself on its own
    loaded = load(directory, bases={"lm": lm_dir})
    assert torch.equal(_logits(loaded, inputs), _logits(model, inputs))  # including the logit of the new row

    os.rename(lm_dir, tmp_path / "moved")
    with pytest.raises(CheckpointError, match=r"bases\['lm'\] = .*qwen.* does not exist"):
        load(directory, bases={"lm": lm_dir})
    assert torch.equal(_logits(load(directory, bases={"lm": tmp_path / "moved"}), inputs), _logits(model, inputs))
    os.rename(tmp_path / "moved", lm_dir)
    assert torch.equal(_logits(load(directory, bases="recorded"), inputs), _logits(model, inputs))


def test_a_save_killed_mid_write_leaves_the_previous_checkpoint(tmp_path, tiny_model):
    target = tmp_path / "ckpt"
    inputs = _inputs(tiny_model)
    expected = _logits(tiny_model, inputs)
    save(tiny_model, target)
    manifest_before = (target / MANIFEST).read_text()

    process = subprocess.Popen(
        [sys.executable, str(HELPER), str(target), "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = _read_line(process, timeout=120)
        assert line.startswith("STALLED "), f"helper did not reach the write: {line!r} {process.stderr.read()}"
        temporary = Path(line.split(" ", 1)[1].strip())
        assert temporary.parent == tmp_path and temporary.name.startswith(".ckpt.tmp-")
        assert any(temporary.glob("*.safetensors"))  # the new checkpoint is half written...
        assert (target / MANIFEST).read_text() == manifest_before  # ...beside the untouched old one
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    assert torch.equal(_logits(load(target), inputs), expected)
    assert temporary.exists()  # the killed writer's leftovers stay until the next save
    save(tiny_model, target)
    assert not temporary.exists() and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=1.0):
            return process.stdout.readline()
        if process.poll() is not None:
            return ""
    return ""


def test_a_failed_save_changes_nothing(tmp_path, tiny_model, monkeypatch):
    target = tmp_path / "ckpt"
    save(tiny_model, target)
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}

    def broken(tensors, path, generation):
        raise OSError("disk full")

    monkeypatch.setattr(zoo.checkpoint.saving, "_write_safetensors", broken)
    with pytest.raises(OSError, match="disk full"):
        save(tiny_model, target)
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary directory left


def test_rename_aside_swap_without_renameat2(tmp_path, tiny_model, monkeypatch):
    target = tmp_path / "ckpt"
    save(tiny_model, target)
    monkeypatch.setattr(zoo.checkpoint.atomic, "_exchange", lambda a, b: False)  # e.g. not Linux
    torch.manual_seed(5)
    other = zoo.build("tiny-clip-mlp-qwen2").eval()
    save(other, target)
    inputs = _inputs(other)
    assert torch.equal(_logits(load(target), inputs), _logits(other, inputs))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]

    # a crash between the two renames leaves the old checkpoint aside; the next load puts it back
    os.rename(target, tmp_path / ".ckpt.old-99999999-abc")
    assert torch.equal(_logits(load(target), inputs), _logits(other, inputs))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_save_refuses_to_replace_a_directory_that_is_not_a_checkpoint(tmp_path, tiny_model):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="refusing to write a zoo checkpoint"):
        save(tiny_model, tmp_path / "data")
    assert (tmp_path / "data" / "notes.txt").read_text() == "keep me"


def test_directory_without_manifest(tmp_path):
    with pytest.raises(CheckpointError, match=r"has no manifest.json: it is not a zoo checkpoint"):
        load(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llava"}')
    with pytest.raises(CheckpointError, match=r"zoo.from_hf_llava"):
        load(tmp_path)
    with pytest.raises(CheckpointError, match="no such directory"):
        zoo.load(tmp_path / "missing")


def _edit_manifest(directory: Path, edit) -> None:
    manifest = json.loads((directory / MANIFEST).read_text())
    edit(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_unknown_component_names_its_plugin(tmp_path, tiny_model):
    directory = save(tiny_model, tmp_path / "ckpt")

    def rename(manifest):
        manifest["model"]["model"]["vision"]["name"] = "acme-vit"
        manifest["components"]["vision"].update(name="acme-vit", spec="acme-vit", plugin="acme_zoo.towers")

    _edit_manifest(directory, rename)
    with pytest.raises(CheckpointError) as error:
        load(directory)
    message = str(error.value)
    assert "vision tower 'acme-vit'" in message and "plugin 'acme_zoo.towers'" in message
    assert "install or load that plugin" in message


def test_changed_contract_or_preset_is_reported(tmp_path, tiny_model):
    directory = save(tiny_model, tmp_path / "ckpt")
    _edit_manifest(directory, lambda m: m["contract"].update(image_tokens=49))
    with pytest.raises(CheckpointError, match=r"contract changed.*image_tokens: saved 49, now 16"):
        load(directory)

    directory = save(tiny_model, tmp_path / "ckpt")
    _edit_manifest(directory, lambda m: m["components"]["lm"]["config"]["arch"].update(hidden_size=96))
    with pytest.raises(CheckpointError, match=r"lm 'tiny-qwen2' .*different config.*arch"):
        load(directory)


def test_missing_or_truncated_tensors_are_errors_naming_the_component(tmp_path, tiny_model):
    from safetensors.torch import save_file

    directory = save(tiny_model, tmp_path / "ckpt")
    state = canonical_state(tiny_model.projector)
    state.pop("linear_2.bias")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(directory / "projector.safetensors"))
    data = (directory / "projector.safetensors").read_bytes()
    entry = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _edit_manifest(directory, lambda m: m["files"].update({"projector.safetensors": entry}))
    with pytest.raises(
        CheckpointError, match=r"projector 'mlp2x-gelu'.*missing linear_2.bias; unexpected extra.weight"
    ):
        load(directory)

    directory = save(tiny_model, tmp_path / "ckpt")
    with open(directory / "lm.safetensors", "r+b") as file:
        file.truncate(100)
    with pytest.raises(CheckpointError, match=r"incomplete: lm.safetensors has 100 bytes"):
        load(directory)


def test_canonical_state_keeps_tied_weights_once(tiny_model):
    inner = tiny_model.lm.model
    assert inner.get_input_embeddings().weight is inner.get_output_embeddings().weight  # tiny-qwen2 ties them
    state = canonical_state(tiny_model.lm)
    assert "model.model.embed_tokens.weight" in state and "model.lm_head.weight" not in state


def test_fully_saved_components_load_without_random_init(tmp_path, monkeypatch):
    """Components whose every weight is in the checkpoint are built with parameters on meta and the
    saved tensors become the parameters: no random init is allocated and then overwritten."""
    torch.manual_seed(0)
    model = zoo.build({"model": {"vision": "tiny-clip", "projector": "mlp2x-gelu", "lm": "tiny-qwen2"}}).eval()
    save(model, tmp_path / "ckpt")
    inits = []
    original = torch.nn.Linear.reset_parameters
    monkeypatch.setattr(
        torch.nn.Linear, "reset_parameters", lambda self: inits.append(self.weight.device.type) or original(self)
    )
    loaded = load(tmp_path / "ckpt")
    assert inits and set(inits) == {"meta"}  # every Linear was initialised on meta only
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    lm = loaded.lm.model
    assert lm.config.tie_word_embeddings and lm.lm_head.weight is lm.model.embed_tokens.weight  # tie kept
    assert [p.requires_grad for p in loaded.projector.parameters()] == [True] * 4
    assert not any(p.requires_grad for p in loaded.vision.parameters())
    inputs = _inputs(model)
    assert torch.equal(_logits(loaded, inputs), _logits(model, inputs))
