"""Training policy: frozen / full / LoRA per component, per-component learning rates, checkpointing."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.core.train_policy import param_groups
from zoo.errors import ConfigError

LORA = {
    "model": {
        "vision": {"name": "tiny-clip", "train": "full", "lr": 1.0e-5},
        "projector": {"name": "mlp2x-gelu", "lr": 1.0e-3},
        "lm": {"name": "tiny-qwen2", "train": "lora", "lr": 2.0e-4, "lora": {"r": 4, "alpha": 8}},
    }
}


def test_lora_policy_wraps_the_lm_and_counts_trainable_parameters():
    torch.manual_seed(0)
    model = zoo.build(LORA)
    counts = model.parameter_counts()
    lm_trainable = [n for n, p in model.lm.named_parameters() if p.requires_grad]
    assert lm_trainable and all("lora_" in n for n in lm_trainable)
    targets = set(model.lm.lora_targets)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lm_trainable} == targets
    assert counts["lm"]["trainable"] == sum(p.numel() for n, p in model.lm.named_parameters() if "lora_" in n)
    assert counts["vision"]["trainable"] == counts["vision"]["params"]
    assert model.summary()["params_trainable"] == sum(c["trainable"] for c in counts.values())


def test_param_groups_carry_per_component_learning_rates():
    model = zoo.build(LORA)
    groups = {g["name"]: g for g in param_groups(model, default_lr=0.5)}
    assert {k: g["lr"] for k, g in groups.items()} == {"vision": 1.0e-5, "projector": 1.0e-3, "lm": 2.0e-4}
    optimizer = torch.optim.SGD(list(groups.values()))
    assert len(optimizer.param_groups) == 3


def test_lora_step_changes_only_adapters_and_projector():
    torch.manual_seed(0)
    model = zoo.build({"model": {**LORA["model"], "vision": "tiny-clip"}}).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = model.processor()("hello world, hello", padding_side="right")
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    torch.optim.SGD(param_groups(model, 0.1), lr=0.1).step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(("lora_B" in n) or n.startswith("projector.") for n in changed), sorted(changed)[:5]


def test_unknown_lora_target_is_a_clear_error():
    config = {"model": {**LORA["model"], "lm": {"name": "tiny-qwen2", "train": "lora", "lora": {"targets": ["qkv"]}}}}
    with pytest.raises(
        ConfigError,
        match=r"model\.lm\.lora\.targets = \['qkv'\]: \['qkv'\] are not linear modules of 'tiny-qwen2'; its linear modules are \[.*'q_proj'",
    ):
        zoo.build(config)


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing):
        torch.manual_seed(0)
        spec = {"model": {**LORA["model"], "gradient_checkpointing": checkpointing}}
        model = zoo.build(spec).train()
        for module in model.modules():  # dropout off so both runs are deterministic
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        batch = model.processor()("some words to learn", padding_side="right")
        model(**batch, labels=batch["input_ids"]).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and plain
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-5), name


@pytest.mark.parametrize(
    ("lm", "message"),
    [
        (
            {"name": "tiny-qwen2", "train": "lora", "lora": {"r": 0}},
            r"model\.lm\.lora\.r = 0 is not valid; it must be a positive integer",
        ),
        (
            {"name": "tiny-qwen2", "train": "lora", "lora": {"dropout": 1.5}},
            r"model\.lm\.lora\.dropout = 1\.5 is not valid; it must be in \[0, 1\)",
        ),
        ({"name": "tiny-qwen2", "lora": {"r": 4}}, r"model\.lm\.lora is set but model\.lm\.train = 'frozen'"),
        (
            {"name": "tiny-qwen2", "train": "lora", "lora_targets": ["nope"]},
            r"model\.lm\.lora_targets = \['nope'\]: \['nope'\] are not linear modules",
        ),
    ],
)
def test_bad_lora_settings_are_one_line_errors(lm, message):
    with pytest.raises(ConfigError, match=message):
        zoo.build({"model": {"vision": "tiny-clip", "projector": "mlp2x-gelu", "lm": lm}})
