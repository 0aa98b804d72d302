"""Every tiny tower x every projector x every tiny LM composes and runs a forward pass.

Parametrised from the registry, so a newly registered plugin is covered without editing this file.
Components are built once per module and reused across compositions.
"""

from __future__ import annotations

import functools

import pytest
import torch

import zoo
from zoo.core.builder import build, build_component, plan
from zoo.core.registry import get_registry
from zoo.errors import ContractError

REGISTRY = get_registry()
TOWERS = [s.name for s in REGISTRY.list("vision", "tiny-*")]
LMS = [s.name for s in REGISTRY.list("lm", "tiny-*")]
# Pattern specs list under a display name (mlp<N>x-gelu); test one concrete instance of each.
PROJECTORS = [s.name if not s.pattern else s.name.replace("<N>", "3") for s in REGISTRY.list("projector")]
PROJECTORS = [p for p in PROJECTORS if "<" not in p]


@functools.cache
def _component(kind: str, name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_component(kind, name).eval()


@pytest.mark.parametrize("lm", LMS)
@pytest.mark.parametrize("projector", PROJECTORS)
@pytest.mark.parametrize("tower", TOWERS)
def test_composition_builds_and_runs(tower, projector, lm):
    vision_module, lm_module = _component("vision", tower), _component("lm", lm)
    config = {"model": {"vision": tower, "projector": projector, "lm": lm}}
    square = round(vision_module.num_tokens**0.5) ** 2 == vision_module.num_tokens
    if projector == "identity" and vision_module.hidden_size != lm_module.hidden_size:
        with pytest.raises(ContractError, match=f"{vision_module.hidden_size}.*{lm_module.hidden_size}"):
            plan(config)
        return
    if projector in ("pixel-shuffle", "resampler") and not square:
        with pytest.raises(ContractError, match="square"):
            plan(config)
        return
    model = build(plan(config), prebuilt={"vision": vision_module, "lm": lm_module}).eval()
    processor = model.processor()
    image = torch.rand(1, *vision_module.pixel_shape)  # [1, C, H, W]
    ids = processor.tokenizer("x", add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([[model.image_token_id] * model.tokens_per_image + ids])  # [1, M + t]
    with torch.no_grad():
        out = model(pixel_values=image, input_ids=input_ids, labels=input_ids)
    assert out.logits.shape == (1, input_ids.shape[1], lm_module.vocab_size)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)


def test_grid_covers_the_catalogue():
    assert {"tiny-clip", "tiny-siglip", "tiny-dinov2", "tiny-timm-vit", "tiny-open-clip"} <= set(TOWERS)
    assert {"identity", "linear", "mlp2x-gelu", "mlp3x-gelu", "resampler", "perceiver", "pixel-shuffle"} <= set(
        PROJECTORS
    )
    assert {"tiny-qwen2", "tiny-qwen3", "tiny-minicpm3", "tiny-llama"} <= set(LMS)
    assert zoo.list_components("lm", "tiny-*") == LMS
