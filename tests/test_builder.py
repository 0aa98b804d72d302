"""The builder and the contract: meta builds of full-size presets, inference of dims, contract errors."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.core.builder import plan
from zoo.errors import ContractError


def test_meta_build_of_the_reference_composition_reports_published_sizes():
    model = zoo.build(
        {"model": {"vision": "clip-vit-l-14-336", "projector": "mlp2x-gelu", "lm": "qwen2-7b"}}, meta=True
    )
    summary = model.summary()
    # Qwen2-7B model card / config.json: 7,615,616,512 parameters (untied 152,064 x 3,584 head).
    assert summary["components"]["lm"]["params"] == 7_615_616_512
    # LLaVA-1.5 style projector 1024 -> 3584 -> 3584 with biases.
    assert summary["components"]["projector"]["params"] == 16_522_240
    assert summary["image_tokens"] == 576  # (336 / 14)^2 patches, CLS dropped
    assert all(p.device.type == "meta" for p in model.parameters())
    # speed is a goal measured in benchmarks/meta_build.py, not asserted here (timed asserts flake on busy machines)


def test_projector_dims_are_inferred():
    checked = plan("tiny-clip-mlp-qwen2")
    vision, projector, lm = (checked.meta_modules[k] for k in ("vision", "projector", "lm"))
    assert projector.in_dim == vision.hidden_size and projector.out_dim == lm.hidden_size
    assert checked.contract.image_tokens == vision.num_tokens


def test_explicit_dims_must_agree():
    with pytest.raises(ContractError) as info:
        plan({"model": {"vision": "tiny-clip", "projector": {"name": "mlp2x-gelu", "in_dim": 999}, "lm": "tiny-qwen2"}})
    message = str(info.value)
    vision_width = plan("tiny-clip-mlp-qwen2").contract.vision_hidden_size
    assert "model.projector.in_dim = 999" in message and f"hidden_size {vision_width}" in message
    assert "'tiny-clip'" in message and "remove model.projector.in_dim" in message


def test_identity_projector_between_different_widths_fails_the_contract():
    with pytest.raises(ContractError) as info:
        plan({"model": {"vision": "tiny-clip", "projector": "identity", "lm": "tiny-qwen2"}})
    message = str(info.value)
    contract = plan("tiny-clip-mlp-qwen2").contract
    assert str(contract.vision_hidden_size) in message and str(contract.lm_hidden_size) in message
    assert "identity" in message


def test_pixel_shuffle_on_a_non_square_grid_fails_with_a_clear_message():
    with pytest.raises(ContractError) as info:
        plan(
            {
                "model": {
                    "vision": {"name": "tiny-clip", "select": "all"},
                    "projector": "pixel-shuffle",
                    "lm": "tiny-qwen2",
                }
            }
        )
    message = str(info.value)
    assert "'pixel-shuffle'" in message and "'tiny-clip'" in message and "select = 'all'" in message
    assert "square" in message


def test_build_is_deterministic_under_a_seed_and_policy_is_applied():
    torch.manual_seed(0)
    a = zoo.build("tiny-clip-mlp-qwen2")
    torch.manual_seed(0)
    b = zoo.build("tiny-clip-mlp-qwen2")
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    counts = a.parameter_counts()
    assert counts["vision"]["trainable"] == 0 and counts["lm"]["trainable"] == 0
    assert counts["projector"]["trainable"] == counts["projector"]["params"] > 0


def test_dtype_applies_to_every_component():
    model = zoo.build(
        {"model": {"vision": "tiny-clip", "projector": "mlp2x-gelu", "lm": "tiny-qwen2", "dtype": "bf16"}}
    )
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_every_registered_composition_builds():
    """Tiny compositions build for real and run; full-size ones build on meta (no weights here)."""
    registry = zoo.get_registry()
    names = registry.list_compositions()
    assert "tiny-clip-mlp-qwen2" in names and len(names) >= 5
    for name in names:
        tiny = name.startswith("tiny-")
        model = zoo.build(name, meta=not tiny)
        side = model.vision.image_size
        assert model.image_tokens_for(side, side) >= model.contract.image_tokens > 0
        if model.anyres is None:
            assert model.tokens_per_image == model.contract.image_tokens
        if tiny:
            ids = torch.tensor([[model.image_token_id] * model.image_tokens_for(side, side) + [1, 2, 3]])
            pixels = torch.rand(1, *model.vision.pixel_shape)  # [1, C, H, W]
            sizes = None
            if model.anyres is not None:  # any-res: the global view and the tiles of a side x side image
                pixels = torch.rand(1, model.anyres.num_tiles(side, side), *model.vision.pixel_shape)  # [1, T, C, H, W]
                sizes = torch.tensor([[side, side]])
            with torch.no_grad():
                logits = model(pixel_values=pixels, input_ids=ids, image_sizes=sizes).logits
            assert logits.shape[:2] == ids.shape and torch.isfinite(logits).all(), name
