"""Self-contained checkpoints: the bases inside, so that a plain ``zoo.load(DIR)`` loads a converted reference
checkpoint (or any model built from base checkpoints); without them, the load error names every base."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from _qwen1_reference import TINY_QWEN1, write_qwen1_checkpoint
from PIL import Image
from safetensors.torch import save_file

import zoo
from zoo.cli.app import main
from zoo.core.builder import build_component
from zoo.errors import CheckpointError

R, ALPHA = 4, 32
COMPOSITION = {
    "model": {
        "vision": {"name": "tiny-clip", "select_layer": -1, "select": "patch"},
        "projector": {"name": "mlp2x-gelu"},
        "lm": {"name": "tiny-qwen1"},
        "dtype": "float32",
        "image_token": "<|extra_0|>",
    }
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The reference's training output (peft LoRA on Qwen-1 module names, other_params.bin) over a tiny Qwen-1
    directory (with a generation_config.json) and a tiny CLIP directory."""
    root = tmp_path_factory.mktemp("self_contained")
    qwen1 = root / "Qwen-tiny"
    write_qwen1_checkpoint(qwen1, seed=5)
    (qwen1 / "generation_config.json").write_text(json.dumps({"max_new_tokens": 4, "top_k": 2, "do_sample": False}))
    torch.manual_seed(1)
    clip = root / "clip-tiny"
    build_component("vision", "tiny-clip").model.save_pretrained(clip)
    g = torch.Generator().manual_seed(2)
    h, inter = TINY_QWEN1["hidden_size"], TINY_QWEN1["intermediate_size"] // 2
    adapter = {}
    for i in range(TINY_QWEN1["num_hidden_layers"]):
        for module, rows in (("attn.c_attn", 3 * h), ("mlp.w1", inter), ("mlp.w2", inter)):
            prefix = f"base_model.model.transformer.h.{i}.{module}"
            adapter[f"{prefix}.lora_A.weight"] = torch.randn(R, h, generator=g) * 0.2  # [r, in]
            adapter[f"{prefix}.lora_B.weight"] = torch.randn(rows, R, generator=g) * 0.2  # trained: B is not zero
    source = root / "output" / "checkpoint-1000"
    source.mkdir(parents=True)
    save_file(adapter, str(source / "adapter_model.safetensors"))
    (source / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": R, "lora_alpha": ALPHA, "lora_dropout": 0.1,
        "target_modules": ["c_attn", "w1", "w2"], "bias": "none"}))  # fmt: skip
    projector = {"0.weight": torch.randn(64, 32, generator=g) * 0.2, "0.bias": torch.randn(64, generator=g) * 0.1,
                 "2.weight": torch.randn(64, 64, generator=g) * 0.2, "2.bias": torch.randn(64, generator=g) * 0.1}  # fmt: skip
    torch.save(projector, source / "other_params.bin")
    (root / "model.yaml").write_text(yaml.safe_dump(COMPOSITION))
    return {"root": root, "source": source, "qwen1": qwen1, "clip": clip, "yaml": root / "model.yaml"}


def _convert(ref, out, qwen1, clip, *extra: str) -> None:
    args = ["convert", "--from-vlm-learning", str(ref["source"]), str(out), "--lm-checkpoint", str(qwen1),
            "--vision-checkpoint", str(clip), "--model", str(ref["yaml"]), *extra]  # fmt: skip
    assert main(args) == 0


def _outputs(model):
    image = Image.fromarray((torch.arange(32 * 32 * 3) % 251).reshape(32, 32, 3).byte().numpy())
    batch = model.processor()("<|extra_0|>\nWhat is in this image?", images=[image])
    with torch.no_grad():
        logits = model(**batch).logits  # [1, T, V]
        with model.lm.model.disable_adapter():
            base = model(**batch).logits
    return logits, base, model.generate(**batch, max_new_tokens=6, eos_token_id=999)


def test_by_reference_the_load_error_names_every_base(reference, capsys):
    out = reference["root"] / "by-reference"
    _convert(reference, out, reference["qwen1"], reference["clip"])
    everything = (
        r"its lm is built from '.*Qwen-tiny' and its vision from '.*clip-tiny', outside the checkpoint directory.*"
        r"bases=\{'lm': PATH, 'vision': PATH\} to zoo.load or --base lm=PATH --base vision=PATH.*--self-contained"
    )
    with pytest.raises(CheckpointError, match=everything):
        zoo.load(out)
    with pytest.raises(CheckpointError, match=r"its vision is built from '.*clip-tiny', outside.*--base vision=PATH"):
        zoo.load(out, bases={"lm": reference["qwen1"]})  # the ones still missing
    assert main(["generate", str(out), "--prompt", "hi"]) == 2
    assert "--base lm=PATH --base vision=PATH" in capsys.readouterr().err


def test_self_contained_checkpoint_loads_alone_with_the_same_logits(reference, tmp_path):
    by_reference = reference["root"] / "by-reference-2"
    _convert(reference, by_reference, reference["qwen1"], reference["clip"])
    expected = zoo.load(by_reference, bases={"lm": reference["qwen1"], "vision": reference["clip"]})
    # convert from copies of the bases, then delete them: the checkpoint must not need them any more
    qwen1, clip = tmp_path / "bases" / "Qwen-tiny", tmp_path / "bases" / "clip-tiny"
    shutil.copytree(reference["qwen1"], qwen1)
    shutil.copytree(reference["clip"], clip)
    out = tmp_path / "self-contained"
    _convert(reference, out, qwen1, clip, "--self-contained")
    shutil.rmtree(tmp_path / "bases")

    model = zoo.load(out)  # a plain load: no bases
    logits, base, tokens = _outputs(model)
    want_logits, want_base, want_tokens = _outputs(expected)
    assert torch.equal(logits, want_logits) and torch.equal(base, want_base) and torch.equal(tokens, want_tokens)
    assert (logits - base).abs().max().item() > 1e-2  # the converted adapter is on: it changes the logits
    # generation follows the Qwen-1 directory's generation_config.json, kept inside too
    assert (model.lm.model.generation_config.max_new_tokens, model.lm.model.generation_config.top_k) == (4, 2)

    manifest = json.loads((out / "manifest.json").read_text())
    lm, vision = manifest["components"]["lm"], manifest["components"]["vision"]
    assert lm["base"] == {"dir": "lm_base", "from": str(qwen1.resolve())} and lm["weights"]["mode"] == "saved"
    assert vision["base"] == {"dir": "vision_base", "from": str(clip.resolve())}
    assert lm["lora"]["r"] == R and "added_rows" not in lm
    # the bases' weights are zoo's safetensors; their other files come along, none of their weight files
    assert sorted(p.name for p in (out / "lm_base").iterdir()) == [
        "config.json", "generation_config.json", "qwen.tiktoken", "tokenizer_config.json"]  # fmt: skip
    assert sorted(p.name for p in (out / "vision_base").iterdir()) == ["config.json"]
    assert (out / "lm.safetensors").is_file() and (out / "vision.safetensors").is_file()
    with pytest.raises(CheckpointError, match=r"bases names 'lm', but only no slot"):
        zoo.load(out, bases={"lm": reference["qwen1"]})

    zoo.save(model, tmp_path / "again")  # the user's loop: a self-contained load saves again, self-contained
    again = zoo.load(tmp_path / "again")
    state, reloaded = model.state_dict(), again.state_dict()
    assert state.keys() == reloaded.keys() and all(torch.equal(state[k], reloaded[k]) for k in state)
    text = (tmp_path / "again" / "manifest.json").read_text()
    assert "zoo-tokenizer-" not in text and "-base-" not in text  # no temporary copy is recorded
    assert json.loads(text)["components"]["lm"]["base"]["from"] == str(qwen1.resolve())


def test_save_self_contained_keeps_added_vocabulary_rows_and_lora(tmp_path):
    """``zoo.save(..., self_contained=True)`` on a transformers-layout base whose vocabulary grows (<image>)."""
    torch.manual_seed(3)
    base = build_component("lm", "tiny-qwen2", {"arch": {"vocab_size": 1024}})  # == the tokenizer: <image> grows it
    base.model.save_pretrained(tmp_path / "qwen2")
    base.tokenizer.save_pretrained(tmp_path / "qwen2")
    config = {"model": {"vision": "tiny-clip", "projector": "mlp2x-gelu",
                        "lm": {"name": "hf-causal-lm", "checkpoint": str(tmp_path / "qwen2"), "train": "lora"}}}  # fmt: skip
    torch.manual_seed(0)
    model = zoo.build(config).eval()
    assert model.lm.vocab_size == 1025
    for name, param in model.lm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)  # a trained adapter
    out = zoo.save(model, tmp_path / "ckpt", self_contained=True)
    shutil.rmtree(tmp_path / "qwen2")
    loaded = zoo.load(out)
    ids = torch.tensor([[3, 50, 1024, 7, 900]])  # the added row (<image>'s id) included
    with torch.no_grad():
        logits = loaded.lm.model(input_ids=ids).logits  # [1, 5, 1025]
        assert torch.equal(logits, model.lm.model(input_ids=ids).logits)
        with loaded.lm.model.disable_adapter():
            assert (logits - loaded.lm.model(input_ids=ids).logits).abs().max().item() > 1e-3  # the adapter is on
    record = json.loads((out / "manifest.json").read_text())["components"]["lm"]
    assert record["weights"]["mode"] == "saved" and "added_rows" not in record and "lora" in record


def test_self_contained_refuses_a_base_it_cannot_copy(tmp_path, monkeypatch):
    import zoo.checkpoint.saving as checkpoint_save

    torch.manual_seed(3)
    base = build_component("lm", "tiny-qwen2")
    base.model.save_pretrained(tmp_path / "qwen2")
    base.tokenizer.save_pretrained(tmp_path / "qwen2")
    (tmp_path / "qwen2" / "huge.dat").write_bytes(b"x" * 2048)
    monkeypatch.setattr(checkpoint_save, "MAX_BASE_FILE_BYTES", 1024)
    model = zoo.build({"model": {"vision": "tiny-clip", "projector": "mlp2x-gelu",
                                 "lm": {"name": "hf-causal-lm", "checkpoint": str(tmp_path / "qwen2")}}})  # fmt: skip
    with pytest.raises(CheckpointError, match=r"self_contained: .*huge.dat.*2,048 bytes"):
        zoo.save(model, tmp_path / "ckpt", self_contained=True)
    assert not (tmp_path / "ckpt").exists()
