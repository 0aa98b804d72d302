"""Tests of the transformers-backed vision towers (``zoo_plugins.clip``, ``.siglip``, ``.dinov2``)."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from zoo.core.builder import build_component
from zoo.core.registry import get_registry
from zoo.errors import CheckpointError, ConfigError
from zoo.sdk.specs import VisionTowerConfig

# name -> (hidden, prefix tokens, patch tokens, encoder layer class, registering plugin)
TINY = {
    "tiny-clip": (32, 1, 16, "CLIPEncoderLayer", "zoo_plugins.clip"),
    "tiny-siglip": (32, 0, 16, "SiglipEncoderLayer", "zoo_plugins.siglip"),
    "tiny-siglip2": (48, 0, 64, "SiglipEncoderLayer", "zoo_plugins.siglip"),
    "tiny-dinov2": (32, 1, 16, "Dinov2Layer", "zoo_plugins.dinov2"),
    "tiny-dinov2-reg": (32, 5, 16, "Dinov2WithRegistersLayer", "zoo_plugins.dinov2"),
}


def build(name: str, **overrides):
    torch.manual_seed(0)
    return build_component("vision", name, overrides)


def pixels(tower, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, tower.image_size, tower.image_size, generator=torch.Generator().manual_seed(1))


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("select", ["patch", "all"])
def test_tiny_forward_shapes_and_contract(name, select):
    hidden, prefix, patches, layer_class, plugin = TINY[name]
    tower = build(name, select=select)
    out = tower(pixels(tower))
    expected = patches + (prefix if select == "all" else 0)
    assert out.shape == (2, expected, hidden) and tower.num_tokens == expected
    assert (tower.hidden_size, tower.num_prefix_tokens, tower.num_layers) == (hidden, prefix, 2)
    assert [c.__name__ for c in tower.fsdp_wrap_classes] == [layer_class]
    assert tower.source == "transformers" and torch.isfinite(out).all()
    spec = get_registry().get("vision", name)
    assert spec.source == "transformers" and spec.plugin == plugin


@pytest.mark.parametrize("name", TINY)
def test_hidden_states_upto_equals_transformers_and_skips_later_blocks(name):
    tower = build(name)
    x = pixels(tower)
    with torch.no_grad():
        reference = tower.model(x, output_hidden_states=True).hidden_states
        assert len(reference) == tower.num_layers + 1
        ran = []
        hooks = [b.register_forward_hook(lambda *_, i=i: ran.append(i)) for i, b in enumerate(tower.blocks)]
        try:
            for layer in range(tower.num_layers + 1):
                ran.clear()
                assert torch.equal(tower.hidden_states_upto(x, layer), reference[layer]), f"layer {layer}"
                assert ran == list(range(layer)), f"layer {layer} ran blocks {ran}"
        finally:
            for hook in hooks:
                hook.remove()
        # forward = select_layer -2 (block 1 of 2), prefix dropped
        assert torch.equal(tower(x), reference[1][:, tower.num_prefix_tokens :])


@pytest.mark.parametrize("name", TINY)
def test_save_pretrained_checkpoint_loads_back_identically(name, tmp_path):
    tower = build(name, select="all")
    tower.model.save_pretrained(tmp_path / "ckpt")
    loaded = build_component("vision", name, {"checkpoint": str(tmp_path / "ckpt"), "select": "all"})
    x = pixels(tower)
    with torch.no_grad():
        assert torch.equal(loaded(x), tower(x))
    assert loaded.contract() == tower.contract()


@pytest.mark.parametrize(
    ("name", "full_model", "full_config"),
    [("tiny-clip", "CLIPModel", "CLIPConfig"), ("tiny-siglip", "SiglipModel", "SiglipConfig")],
)
def test_full_two_tower_checkpoint_gives_its_vision_part(name, full_model, full_config, tmp_path):
    import transformers

    arch = dict(get_registry().get("vision", name).defaults["arch"])
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
            "vocab_size": 99, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}  # fmt: skip
    torch.manual_seed(3)
    full = getattr(transformers, full_model)(getattr(transformers, full_config)(vision_config=arch, text_config=text))
    full.eval().save_pretrained(tmp_path / "full")
    tower = build_component("vision", name, {"checkpoint": str(tmp_path / "full"), "select_layer": -1})
    x = pixels(tower)
    with torch.no_grad():
        expected = full.vision_model(x, output_hidden_states=True).hidden_states[-1]
        assert torch.equal(tower(x), expected[:, tower.num_prefix_tokens :])


def test_safetensors_state_dict_file_with_or_without_full_model_prefix(tmp_path):
    tower = build("tiny-siglip")
    state = {k: v.contiguous() for k, v in tower.model.state_dict().items()}
    save_file(state, tmp_path / "vision.safetensors")
    save_file(
        {f"vision_model.{k}": v for k, v in state.items()} | {"logit_scale": torch.ones(1)},
        tmp_path / "full.safetensors",
    )
    x = pixels(tower)
    for file in ("vision.safetensors", "full.safetensors"):
        loaded = build_component("vision", "tiny-siglip", {"checkpoint": str(tmp_path / file)})
        with torch.no_grad():
            assert torch.equal(loaded(x), tower(x)), file
    save_file(
        {"embeddings.patch_embedding.weight": state["embeddings.patch_embedding.weight"]}, tmp_path / "bad.safetensors"
    )
    with pytest.raises(CheckpointError, match=r"model\.vision\.checkpoint = .*bad\.safetensors.*missing"):
        build_component("vision", "tiny-siglip", {"checkpoint": str(tmp_path / "bad.safetensors")})


def test_meta_build_reads_only_the_checkpoint_config(tmp_path):
    torch.manual_seed(0)
    wider = build_component("vision", "tiny-clip", {"arch": {"hidden_size": 64, "num_hidden_layers": 3}})
    wider.model.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()  # a meta build must not need the weights
    meta = build_component("vision", "tiny-clip", {"checkpoint": str(tmp_path / "ckpt")}, meta=True)
    assert (meta.hidden_size, meta.num_layers) == (64, 3) and meta.model.embeddings.patch_embedding.weight.is_meta
    with pytest.raises(CheckpointError, match=r"model\.vision\.checkpoint"):
        build_component("vision", "tiny-clip", {"checkpoint": str(tmp_path / "ckpt")})


def test_checkpoint_errors_name_the_key_and_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match=r"model\.vision\.checkpoint = '.*nowhere'"):
        build_component("vision", "tiny-clip", {"checkpoint": str(missing)})
    build("tiny-dinov2").model.save_pretrained(tmp_path / "dino")
    with pytest.raises(CheckpointError, match=r"model_type 'dinov2'.*not a CLIP model"):
        build_component("vision", "tiny-clip", {"checkpoint": str(tmp_path / "dino")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        build_component("vision", "tiny-siglip", {"checkpoint": str(tmp_path / "empty")})


def test_corrupt_weight_file_is_a_checkpoint_error_naming_the_key_and_path(tmp_path):
    build("tiny-clip").model.save_pretrained(tmp_path / "dir")
    (tmp_path / "dir" / "model.safetensors").write_bytes(b"garbage")
    (tmp_path / "file.safetensors").write_bytes(b"garbage")
    for target in (tmp_path / "dir", tmp_path / "file.safetensors"):
        where = re.escape(f"model.vision.checkpoint = '{target}'")
        with pytest.raises(CheckpointError, match=rf"{where}.*SafetensorError"):
            build_component("vision", "tiny-clip", {"checkpoint": str(target)})


def test_directory_checkpoint_with_a_mis_shaped_weight_names_it(tmp_path):
    build("tiny-clip").model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    key = next(k for k in state if k.endswith("post_layernorm.weight"))
    state[key] = torch.ones(3)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"wrong shape for {key} \(checkpoint \[3\], model \[32\]\)"):
        build_component("vision", "tiny-clip", {"checkpoint": str(tmp_path)})


def test_dtype_is_honoured_by_the_factory_for_random_and_loaded_towers(tmp_path):
    spec = get_registry().get("vision", "tiny-dinov2")  # the factory itself, without the builder's final cast
    tower = spec.factory(VisionTowerConfig(arch=dict(spec.defaults["arch"]), dtype="bfloat16"))
    assert {p.dtype for p in tower.parameters()} == {torch.bfloat16}
    assert tower(pixels(tower)).dtype == torch.bfloat16
    build("tiny-dinov2").model.save_pretrained(tmp_path / "ckpt")
    loaded = spec.factory(VisionTowerConfig(checkpoint=str(tmp_path / "ckpt"), dtype="bfloat16"))
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}


def test_image_size_override_interpolates_positions():
    tower = build("tiny-clip", image_size=48, select="all")
    assert tower.grid_size() == (6, 6) and tower.num_tokens == 37
    x = pixels(tower)
    with torch.no_grad():
        expected = tower.model(x, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states[1]
        assert torch.equal(tower(x), expected)
    assert tower.preprocessor.image_size == 48
    with pytest.raises(ConfigError, match=r"model\.vision\.image_size = 4 is smaller than the patch size 8"):
        build("tiny-clip", image_size=4)


def test_unknown_arch_field_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.vision\.arch\.hiden_size .*did you mean 'hidden_size'"):
        build("tiny-siglip", arch={"hiden_size": 64})


def test_arch_values_transformers_rejects_are_config_errors():
    with pytest.raises(  # named by zoo before transformers sees it: both keys, both numbers
        ConfigError,
        match=r"model\.vision\.arch\.hidden_size = 32 is not a multiple of model\.vision\.arch\.num_attention_heads = 5",
    ):
        build("tiny-clip", arch={"num_attention_heads": 5})
    with pytest.raises(ConfigError, match=r"model\.vision\.arch\.hidden_size = '64': TypeError: .*expected int"):
        build("tiny-clip", arch={"hidden_size": "64"})


# name -> (mean, std, image size): the processor is the family's own transformers class
PREPROCESSING = {
    "tiny-clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), 32),
    "tiny-siglip2": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 32),
    "tiny-dinov2-reg": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 28),
}


@pytest.mark.parametrize("name", PREPROCESSING)
def test_preprocessing_of_a_pil_image(name):
    mean, std, size = PREPROCESSING[name]
    processor = build(name).preprocessor
    assert (processor.image_size, processor.mean, processor.std) == (size, mean, std)
    grey = Image.new("RGB", (70, 45), (128, 128, 128))
    batch = processor([grey, grey.convert("L")])
    assert batch.shape == (2, 3, size, size)
    expected = (128 / 255 - torch.tensor(mean)) / torch.tensor(std)  # a flat image stays flat after resizing
    torch.testing.assert_close(batch.mean(dim=(2, 3)), expected.expand(2, 3), atol=2e-2, rtol=0)


# name -> (params of the transformers vision model, published figure, tolerance, patch tokens, all tokens)
# Published vision-tower sizes: open_clip docs/model_profile.csv, column image_mparams
# (github.com/mlfoundations/open_clip/blob/main/docs/model_profile.csv); for CLIP those include the image
# projection (width x embed_dim), which transformers keeps in CLIPModel.visual_projection, so it is added.
FULL = {
    # openai/clip-vit-large-patch14: ViT-L-14 303.97M = 303,179,776 + 1024 x 768 projection
    "clip-vit-l-14": (303_179_776, 303.97e6, 1024 * 768, 256, 257),
    # openai/clip-vit-large-patch14-336: ViT-L-14-336 304.29M; 576 patches + CLS
    "clip-vit-l-14-336": (303_507_456, 304.29e6, 1024 * 768, 576, 577),
    # openai/clip-vit-base-patch16: ViT-B-16 86.19M = 85,799,424 + 768 x 512 projection
    "clip-vit-b-16": (85_799_424, 86.19e6, 768 * 512, 196, 197),
    # google/siglip-base-patch16-224: ViT-B-16-SigLIP 92.88M (with the attention-pool head)
    "siglip-base-16-224": (92_884_224, 92.88e6, 0, 196, 196),
    # google/siglip-so400m-patch14-384: ViT-SO400M-14-SigLIP-384 428.23M; no CLS, all 729 tokens kept
    "siglip-so400m-14-384": (428_225_600, 428.23e6, 0, 729, 729),
}
# google/siglip2-so400m-patch16-384 (SigLIP 2 paper, arXiv 2502.14786: "So400m", ~400M): same width/depth as
# the /14 model above; patch 16 adds 3*(16^2-14^2)*1152 patch weights and drops (729-576)*1152 positions.
FULL["siglip2-so400m-16-384"] = (428_256_704, 428.23e6 + 3 * (16**2 - 14**2) * 1152 - 153 * 1152, 0, 576, 576)
# DINOv2 README (github.com/facebookresearch/dinov2, "Pretrained models"): ViT-L/14 distilled, 300 M params.
# transformers' count adds the 518 px position table (1370 x 1024) and the mask token; registers add 4 x 1024.
FULL["dinov2-large-14"] = (304_368_640, 300e6, 0, 256, 257)
FULL["dinov2-large-14-reg"] = (304_372_736, 300e6, 0, 256, 261)


@pytest.mark.parametrize("name", FULL)
def test_full_size_presets_on_meta_match_published_sizes(name):
    params, published, projection, patch_tokens, all_tokens = FULL[name]
    tolerance = 0.02 if name.startswith("dinov2") else 0.0002  # DINOv2's figure is rounded to 300 M
    patch = build_component("vision", name, {"select": "patch", "select_layer": -1}, meta=True)
    everything = build_component("vision", name, {"select": "all"}, meta=True)
    assert all(p.is_meta for p in patch.parameters())
    assert num_params(patch) == params
    assert abs(params + projection - published) <= tolerance * published
    assert (patch.num_tokens, everything.num_tokens) == (patch_tokens, all_tokens)
    assert get_registry().get("vision", name).source == "transformers"
