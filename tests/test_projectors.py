"""Tests of the built-in projector catalogue (``zoo_plugins.projectors``), built through the registry."""

from __future__ import annotations

import pytest
import torch
from zoo_plugins.projectors import default_num_heads, sincos_2d, space_to_depth

from zoo.core.builder import build_component
from zoo.core.registry import get_registry
from zoo.errors import ConfigError, ContractError

IN_DIM, OUT_DIM, TOKENS = 32, 48, 16  # a 4x4 grid, divisible by the pixel-shuffle factor 2
PROJECTORS = ["identity", "linear", "mlp2x-gelu", "mlp3x-gelu", "resampler", "perceiver", "pixel-shuffle"]
SMALL = {"resampler": {"num_queries": 8}, "perceiver": {"num_queries": 8, "depth": 2}}


def build(name: str, in_dim: int = IN_DIM, out_dim: int | None = None, **options):
    """Build a projector by registry name, the way the builder does (identity: out_dim = in_dim)."""
    if out_dim is None:
        out_dim = in_dim if name == "identity" else OUT_DIM
    return build_component("projector", name, {**SMALL.get(name, {}), **options}, in_dim=in_dim, out_dim=out_dim)


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", PROJECTORS)
def test_output_shape_matches_declared_tokens(name):
    torch.manual_seed(0)
    projector = build(name)
    features = torch.randn(3, TOKENS, projector.in_dim)
    out = projector(features)
    assert out.shape == (3, projector.num_output_tokens(TOKENS), projector.out_dim)
    assert projector.check_input_tokens(TOKENS) is None
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in PROJECTORS if n != "identity"])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    projector = build(name)
    features = torch.randn(2, TOKENS, IN_DIM, requires_grad=True)
    projector(features).square().mean().backward()
    missing = [n for n, p in projector.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached {missing}"
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_identity_passes_features_and_gradients_through():
    projector = build("identity")
    features = torch.randn(2, TOKENS, IN_DIM, requires_grad=True)
    out = projector(features)
    assert torch.equal(out, features)
    out.sum().backward()
    assert torch.equal(features.grad, torch.ones_like(features))
    assert num_params(projector) == 0


def test_identity_with_mismatched_dims_raises_contract_error():
    with pytest.raises(ContractError) as error:
        build("identity", in_dim=1024, out_dim=3584)
    assert "1024" in str(error.value) and "3584" in str(error.value)


def test_mlp_init_statistics():
    torch.manual_seed(0)
    projector = build("mlp2x-gelu", in_dim=256, out_dim=256)
    for layer in projector.linears:
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.05)
        assert layer.weight.mean().abs().item() < 1e-3
        assert torch.count_nonzero(layer.bias) == 0


def test_mlp_pattern_resolves_depth_from_name():
    registry = get_registry()
    spec, implied = registry.resolve("projector", "mlp3x-gelu")
    assert spec.name == "mlp<N>x-gelu" and implied == {"depth": "3"}
    assert registry.resolve("projector", "mlp2x-gelu")[0].name == "mlp2x-gelu"  # exact name wins
    projector = build("mlp3x-gelu")
    assert projector.depth == 3
    linears = [m for m in projector.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    assert [name for name, _ in projector.named_children() if name.startswith("linear")] == [
        "linear_1",
        "linear_2",
        "linear_3",
    ]
    assert len([m for m in build("mlp1x-gelu").modules() if isinstance(m, torch.nn.Linear)]) == 1
    assert "mlp2x-gelu" in [s.name for s in registry.list("projector", "mlp*")]


@pytest.mark.parametrize(
    ("name", "options", "needle"),
    [
        ("mlp0x-gelu", {}, "model.projector.depth = 0"),
        ("mlp2x-gelu", {"depth": 3}, "mlp3x-gelu"),
        ("linear", {"depth": 2}, "mlp2x-gelu"),
        ("perceiver", {"num_heads": 5}, "num_heads = 5"),
        ("pixel-shuffle", {"factor": 0}, "model.projector.factor = 0"),
        ("resampler", {"num_queries": 0}, "model.projector.num_queries = 0"),
    ],
)
def test_bad_options_raise_config_error_naming_the_key(name, options, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        build(name, **options)


def test_missing_dims_name_the_yaml_key():
    spec, _ = get_registry().resolve("projector", "linear")
    with pytest.raises(ConfigError, match=r"model\.projector\.in_dim"):
        spec.factory(spec.config_cls(depth=1, out_dim=8))


def test_mlp2x_gelu_matches_transformers_llava_projector():
    from transformers import CLIPVisionConfig, LlavaConfig, Qwen2Config
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=IN_DIM, num_attention_heads=4, intermediate_size=64),
        text_config=Qwen2Config(
            hidden_size=OUT_DIM, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, vocab_size=100
        ),
    )
    reference = LlavaMultiModalProjector(config)
    ours = build("mlp2x-gelu")
    reference.load_state_dict(ours.state_dict(), strict=True)  # rename-free copy
    features = torch.randn(2, TOKENS, IN_DIM)
    torch.testing.assert_close(reference(features), ours(features))


def test_mlp2x_gelu_parameter_count_llava_style_for_qwen2_7b():
    # CLIP ViT-L/14 (1024) -> Qwen2-7B (hidden 3584): 1024*3584 + 3584 + 3584*3584 + 3584.
    projector = build_component("projector", "mlp2x-gelu", in_dim=1024, out_dim=3584, meta=True)
    assert num_params(projector) == 16_522_240
    # LLaVA-1.5-7B (CLIP ViT-L 1024 -> Vicuna-7B 4096): the ~21M projector of the LLaVA-1.5 paper.
    llava15 = build_component("projector", "mlp2x-gelu", in_dim=1024, out_dim=4096, meta=True)
    assert num_params(llava15) == 20_979_712


def test_pixel_shuffle_tokens_and_messages():
    projector = build("pixel-shuffle", in_dim=8, out_dim=16, factor=2)
    assert projector.requires_square_grid
    assert projector.num_output_tokens(576) == 144
    assert projector.check_input_tokens(576) is None
    not_square = projector.check_input_tokens(575)
    assert "n_in=575" in not_square and "24" in not_square and "factor=2" in not_square
    odd_side = projector.check_input_tokens(25)
    assert "n_in=25" in odd_side and "5x5" in odd_side and "factor=2" in odd_side
    with pytest.raises(ContractError, match="n_in=575"):
        projector.num_output_tokens(575)
    with pytest.raises(ContractError, match="side 5"):
        projector(torch.randn(1, 25, 8))
    three = build("pixel-shuffle", in_dim=8, out_dim=16, factor=3)
    assert three.num_output_tokens(576) == 64 and three.check_input_tokens(256) is not None


def test_space_to_depth_folds_each_block_in_row_major_order():
    grid = torch.arange(16.0).reshape(1, 16, 1)  # a 4x4 grid, value = row * 4 + col
    folded = space_to_depth(grid, 2)
    assert folded.shape == (1, 4, 4)
    assert folded[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_resampler_heads_default_and_divisibility():
    assert default_num_heads(3584) == 28  # Qwen2-7B width: 128-dim heads
    assert default_num_heads(48) == 1
    assert default_num_heads(400) == 2  # 400 // 128 = 3 does not divide 400
    big = build_component("projector", "resampler", in_dim=1024, out_dim=3584, meta=True)
    assert big.num_heads == 28 and big.attn.num_heads == 28
    assert big.num_output_tokens(576) == 64
    assert build("resampler").num_heads == 1
    assert build("resampler", out_dim=256).num_heads == 2
    assert build("resampler", num_heads=4).attn.num_heads == 4
    with pytest.raises(ConfigError) as error:
        build("resampler", num_heads=5)
    assert "num_heads = 5" in str(error.value) and "out_dim=48" in str(error.value)


def test_resampler_kv_proj_only_when_widths_differ():
    assert isinstance(build("resampler").kv_proj, torch.nn.Linear)
    assert isinstance(build("resampler", out_dim=IN_DIM).kv_proj, torch.nn.Identity)


def test_resampler_uses_2d_positions_and_needs_a_square_grid():
    torch.manual_seed(0)
    projector = build("resampler")
    assert projector.requires_square_grid and "575" in projector.check_input_tokens(575)
    features = torch.randn(1, TOKENS, IN_DIM)
    shuffled = features[:, torch.randperm(TOKENS)]
    assert not torch.allclose(projector(features), projector(shuffled), atol=1e-5)  # positions matter
    with pytest.raises(ContractError, match="15"):
        projector(torch.randn(1, 15, IN_DIM))


def test_sincos_2d_positions_are_distinct_and_padded():
    positions = sincos_2d(32, 4)
    assert positions.shape == (16, 32)
    assert torch.cdist(positions, positions).add(torch.eye(16)).min() > 0.1
    padded = sincos_2d(34, 3)
    assert padded.shape == (9, 34) and torch.count_nonzero(padded[:, 32:]) == 0


def test_perceiver_structure_and_token_order_invariance():
    torch.manual_seed(0)
    projector = build("perceiver", depth=3, num_heads=4)
    assert len(projector.layers) == 3 and projector.num_heads == 4
    assert projector.num_output_tokens(123) == 8 and projector.check_input_tokens(123) is None
    features = torch.randn(2, 10, IN_DIM)
    shuffled = features[:, torch.randperm(10)]
    torch.testing.assert_close(projector(features), projector(shuffled), atol=1e-5, rtol=1e-5)
    assert get_registry().get("projector", "perceiver").defaults["depth"] == 6  # Flamingo's depth


@pytest.mark.parametrize("name", PROJECTORS)
def test_dtype_and_meta_build(name):
    bf16 = build_component("projector", name, SMALL.get(name), in_dim=IN_DIM, out_dim=_out(name), dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    out = bf16(torch.randn(2, TOKENS, IN_DIM, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16
    meta = build_component("projector", name, SMALL.get(name), in_dim=IN_DIM, out_dim=_out(name), meta=True)
    assert all(p.is_meta for p in meta.parameters())
    assert num_params(meta) == num_params(bf16)
    assert meta.num_output_tokens(TOKENS) == bf16.num_output_tokens(TOKENS)


def _out(name: str) -> int:
    return IN_DIM if name == "identity" else OUT_DIM
