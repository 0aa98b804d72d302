"""Import of the VLM-learning reference's checkpoints: peft adapter over Qwen-1 + other_params.bin -> zoo."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from _qwen1_reference import TINY_QWEN1, qwen1_forward, write_qwen1_checkpoint
from PIL import Image
from torch import nn

import zoo
from zoo.cli.app import main
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


def _qwen1_skeleton(config: dict) -> nn.Module:
    """The module tree of QWenLMHeadModel's blocks (names and shapes only), for peft to wrap."""
    h, inter = config["hidden_size"], config["intermediate_size"] // 2
    root, transformer = nn.Module(), nn.Module()
    blocks = []
    for _ in range(config["num_hidden_layers"]):
        block, attn, mlp = nn.Module(), nn.Module(), nn.Module()
        attn.c_attn, attn.c_proj = nn.Linear(h, 3 * h), nn.Linear(h, h, bias=False)
        mlp.w1, mlp.w2, mlp.c_proj = nn.Linear(h, inter, bias=False), nn.Linear(h, inter, bias=False), nn.Linear(inter, h, bias=False)  # fmt: skip
        block.attn, block.mlp = attn, mlp
        blocks.append(block)
    transformer.h = nn.ModuleList(blocks)
    root.transformer = transformer
    return root


class _NotATensor:
    """Something a legacy pickle may hold besides tensors."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A Qwen-1 dir and a reference-format training output over it (adapter with non-zero B, projector)."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("vlm_learning")
    state = write_qwen1_checkpoint(root / "Qwen-tiny", seed=3)
    torch.manual_seed(0)
    peft_model = get_peft_model(
        _qwen1_skeleton(TINY_QWEN1),
        LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.1, target_modules=["c_attn", "w1", "w2"]),
    )
    lora = {}
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            with torch.no_grad():
                b.normal_(std=0.2)  # a trained adapter: B is no longer zero
            lora[name.removeprefix("base_model.model.")] = (a.detach().clone(), b.detach().clone())
    source = root / "output" / "checkpoint-1000"
    peft_model.save_pretrained(str(source))
    config = json.loads((source / "adapter_config.json").read_text())
    (source / "adapter_config.json").write_text(json.dumps({**config, "task_type": "CAUSAL_LM"}))
    g = torch.Generator().manual_seed(1)
    projector = {"0.weight": torch.randn(64, 32, generator=g) * 0.2, "0.bias": torch.randn(64, generator=g) * 0.1,
                 "2.weight": torch.randn(64, 64, generator=g) * 0.2, "2.bias": torch.randn(64, generator=g) * 0.1}  # fmt: skip
    torch.save(projector, source / "other_params.bin")
    (root / "model.yaml").write_text(yaml.safe_dump(COMPOSITION))
    return {"root": root, "source": source, "qwen1": root / "Qwen-tiny", "state": state, "lora": lora,
            "projector": projector, "yaml": root / "model.yaml"}  # fmt: skip


def test_converted_checkpoint_has_the_reference_logits(reference, capsys):
    ref, out = reference, reference["root"] / "zoo-ckpt"
    code = main(["convert", "--from-vlm-learning", str(ref["source"]), str(out), "--lm-checkpoint", str(ref["qwen1"]),
                 "--model", str(ref["yaml"])])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    model = zoo.load(out, bases={"lm": str(ref["qwen1"])})  # the Qwen-1 base stays where it is
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["components"]["lm"]["lora"]["r"] == R and manifest["components"]["lm"]["lora"]["alpha"] == ALPHA
    assert manifest["components"]["lm"]["lora"]["targets"] == ["gate_proj", "k_proj", "q_proj", "up_proj", "v_proj"]
    image = Image.fromarray((torch.rand(32, 32, 3) * 255).byte().numpy())
    batch = model.processor()("<|extra_0|>\nWhat is in this image?", images=[image])
    with torch.no_grad():
        ours = model(**batch).logits  # [1, T, V]
        with model.lm.model.disable_adapter():
            without = model(**batch).logits
        features = model.vision(batch["pixel_values"])  # [1, N, 32], the same frozen tower in both
    p = ref["projector"]
    projected = F.linear(F.gelu(F.linear(features, p["0.weight"], p["0.bias"])), p["2.weight"], p["2.bias"])
    ids = batch["input_ids"]
    embeds = F.embedding(ids, ref["state"]["transformer.wte.weight"])  # [1, T, H]
    embeds[ids == model.image_token_id] = projected.reshape(-1, 64)
    expected = qwen1_forward(ref["state"], TINY_QWEN1, inputs_embeds=embeds, lora=ref["lora"], lora_scale=ALPHA / R)
    assert (ours - expected).abs().max().item() <= 1e-5
    # the adapter matters: without it the logits are the base model's, far from the adapted ones
    base = qwen1_forward(ref["state"], TINY_QWEN1, inputs_embeds=embeds)
    assert (without - base).abs().max().item() <= 1e-5
    assert (ours - without).abs().max().item() > 1e-2
    # cached generation from inputs_embeds (wrong with the remote code) agrees with the cache-free loop
    cached = model.generate(**batch, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert torch.equal(cached, model.generate(**batch, max_new_tokens=6, use_cache=False))


def test_other_params_with_anything_else_is_refused(reference, tmp_path):
    import shutil

    source = tmp_path / "src"
    shutil.copytree(reference["source"], source)
    torch.save({**reference["projector"], "3.weight": torch.zeros(1)}, source / "other_params.bin")
    with pytest.raises(CheckpointError, match=r"unexpected \['3.weight'\]"):
        zoo.from_vlm_learning(source, reference["qwen1"], model=COMPOSITION)
    torch.save({**reference["projector"], "step": _NotATensor()}, source / "other_params.bin")
    with pytest.raises(CheckpointError, match="cannot read it as plain tensors"):
        zoo.from_vlm_learning(source, reference["qwen1"], model=COMPOSITION)


def test_generate_and_load_point_to_the_convert_command(reference, capsys):
    assert main(["generate", str(reference["source"]), "--prompt", "hi"]) == 2
    assert "zoo convert --from-vlm-learning" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="VLM-learning"):
        zoo.load(reference["source"])


def test_convert_needs_the_base_model(reference, capsys):
    assert main(["convert", "--from-vlm-learning", str(reference["source"]), str(reference["root"] / "x")]) == 2
    assert "--lm-checkpoint" in capsys.readouterr().err


def test_readme_counts_of_the_composition_and_the_reference():
    """The numbers the README compares: zoo's composition on meta, and the reference's LoRA over Qwen-7B."""
    from peft import LoraConfig, get_peft_model
    from zoo_plugins.qwen1 import QWEN1_PUBLISHED

    summary = zoo.build("vlm-learning-qwen-7b", meta=True).summary()
    assert (summary["params_total"], summary["params_trainable"]) == (8_269_879_296, 245_374_976)
    assert summary["image_tokens"] == 256
    with torch.device("meta"):
        reference_lm = get_peft_model(
            _qwen1_skeleton(QWEN1_PUBLISHED["qwen-7b"][0]),
            LoraConfig(r=128, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn", "w1", "w2"]),
        )
    reference_lora = sum(p.numel() for n, p in reference_lm.named_parameters() if "lora_" in n)
    assert reference_lora == 190_840_832
    assert summary["components"]["lm"]["trainable"] - reference_lora == 32 * 2 * 128 * 4096  # q/k/v's own A


def test_lora_conversion_is_exact_and_names_what_it_cannot_convert():
    from zoo.interop.vlm_learning import convert_lora_state

    prefix = "base_model.model.transformer.h.0."
    a, b = torch.randn(4, 8), torch.randn(24, 4)  # c_attn of hidden 8: B stacks q, k, v rows
    converted, targets = convert_lora_state({prefix + "attn.c_attn.lora_A.weight": a, prefix + "attn.c_attn.lora_B.weight": b,
                                             prefix + "mlp.w2.lora_A.weight": a, prefix + "mlp.w2.lora_B.weight": b[:16]})  # fmt: skip
    assert targets == ["gate_proj", "k_proj", "q_proj", "v_proj"]
    new = "base_model.model.model.layers.0."
    fused = torch.cat([converted[f"{new}self_attn.{n}_proj.lora_B.weight"] for n in "qkv"]) @ a  # [24, 8]
    assert torch.equal(fused, b @ a)
    assert all(torch.equal(converted[f"{new}self_attn.{n}_proj.lora_A.weight"], a) for n in "qkv")
    assert torch.equal(converted[f"{new}mlp.gate_proj.lora_B.weight"], b[:16])  # w2 is the gate
    with pytest.raises(CheckpointError, match=r"transformer\.wte\.lora_A"):
        convert_lora_state({"base_model.model.transformer.wte.lora_A.weight": a})
    with pytest.raises(CheckpointError, match="lora_A without its pair"):
        convert_lora_state({prefix + "mlp.w1.lora_A.weight": a})


def test_a_converted_checkpoint_saves_again_bit_exact(reference, tmp_path):
    """The user's loop on an imported reference model: load -> save -> load keeps every tensor."""
    ref, out = reference, tmp_path / "zoo-ckpt"
    assert main(["convert", "--from-vlm-learning", str(ref["source"]), str(out), "--lm-checkpoint", str(ref["qwen1"]),
                 "--model", str(ref["yaml"])]) == 0  # fmt: skip
    first = zoo.load(out, bases={"lm": str(ref["qwen1"])})
    zoo.save(first, tmp_path / "again")
    second = zoo.load(tmp_path / "again", bases={"lm": str(ref["qwen1"])})
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert first.composition.to_dict() == second.composition.to_dict()
    assert "zoo-tokenizer-" not in (tmp_path / "again" / "manifest.json").read_text()
