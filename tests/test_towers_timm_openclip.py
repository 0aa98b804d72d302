"""timm and open_clip vision towers: contracts, parity with the libraries on saved weights, meta presets, errors."""

from __future__ import annotations

import json

import open_clip
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from zoo_plugins.open_clip_towers import TINY_OPEN_CLIP_CONFIG
from zoo_plugins.timm_towers import TINY_TIMM_VIT

from zoo.core.builder import build_component
from zoo.errors import CheckpointError, ConfigError, UnknownNameError

torch.manual_seed(0)
PIXELS = torch.randn(2, 3, 32, 32)


def _save(state: dict[str, torch.Tensor], path) -> str:
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    if str(path).endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return str(path)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- timm ----------------------------------------------------------------------------------------


def test_tiny_timm_vit_contract_and_preprocessing():
    tower = build_component("vision", "tiny-timm-vit", {"select": "all"})
    assert (tower.hidden_size, tower.num_prefix_tokens, tower.grid_size(), tower.num_layers) == (32, 3, (4, 4), 2)
    assert tower.num_prefix_tokens == tower.model.num_prefix_tokens  # CLS + 2 registers, from timm
    assert tower(PIXELS).shape == (2, 3 + 16, 32)
    patch = build_component("vision", "tiny-timm-vit", {"select": "patch", "select_layer": 0})
    assert patch(PIXELS).shape == (2, 16, 32) and patch.num_tokens == 16
    pre = tower.preprocessor
    assert (pre.image_size, pre.mean, pre.std) == (32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # test_vit's timm cfg
    assert pre([Image.new("RGB", (50, 40), "red")]).shape == (1, 3, 32, 32)


def test_image_size_not_a_multiple_of_the_patch_keeps_the_real_patch_size():
    fixed = {"image_size": 36, "arch": {"dynamic_img_size": False}}  # test_vit is dynamic: it needs multiples
    tower = build_component("vision", "tiny-timm-vit", fixed)
    assert (tower.image_size, tower.patch_size, tower.grid_size(), tower.num_tokens) == (36, 8, (4, 4), 16)
    assert tower(torch.randn(1, 3, 36, 36)).shape == (1, tower.num_tokens, 32)
    with pytest.raises(ConfigError, match=r"image_size = 36 is not a multiple of the patch size 8.*use e\.g\. 32"):
        build_component("vision", "tiny-timm-vit", {"image_size": 36})
    clip = build_component("vision", "tiny-open-clip", {"image_size": 36})
    assert (clip.patch_size, clip.grid_size(), clip.num_tokens) == (8, (4, 4), 16)
    assert clip(torch.randn(1, 3, 36, 36)).shape == (1, clip.num_tokens, 64)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_checkpoint_parity_with_timm(tmp_path, suffix):
    reference = timm.create_model(TINY_TIMM_VIT["model_name"], num_classes=0, **TINY_TIMM_VIT["arch"]).eval()
    path = _save(reference.state_dict(), tmp_path / f"vit{suffix}")
    tower = build_component("vision", f"timm:{TINY_TIMM_VIT['model_name']}",
                            {"arch": TINY_TIMM_VIT["arch"], "checkpoint": path, "select": "all"}).eval()  # fmt: skip
    random = build_component("vision", "tiny-timm-vit").eval()
    with torch.no_grad():
        mids = reference.forward_intermediates(
            PIXELS, indices=[0, 1], output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True
        )
        for layer, (patches, prefix) in enumerate(mids, start=1):
            torch.testing.assert_close(tower.hidden_states_upto(PIXELS, layer), torch.cat([prefix, patches], 1))
        last = tower.hidden_states_upto(PIXELS, 2)
        torch.testing.assert_close(reference.norm(last), reference.forward_features(PIXELS))
        torch.testing.assert_close(tower(PIXELS), torch.cat([mids[0][1], mids[0][0]], 1))  # select_layer -2
        assert not torch.allclose(random.hidden_states_upto(PIXELS, 2), last)  # the weights were really loaded


def test_timm_eva_family_matches_timm():
    arch = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    tower = build_component("vision", "timm:eva02_tiny_patch14_224", {"arch": arch, "select_layer": 1}).eval()
    assert (tower.num_prefix_tokens, tower.num_tokens, tower.model.rope is not None) == (1, 16, True)
    with torch.no_grad():
        ((patches, prefix),) = tower.model.forward_intermediates(
            PIXELS, indices=[0], output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True
        )
        torch.testing.assert_close(tower.hidden_states_upto(PIXELS, 1), torch.cat([prefix, patches], 1))
        torch.testing.assert_close(tower(PIXELS), patches)
        torch.testing.assert_close(
            tower.model.norm(tower.hidden_states_upto(PIXELS, 2)), tower.model.forward_features(PIXELS)
        )


def test_timm_siglip_so400m_on_meta():
    tower = build_component("vision", "timm:vit_so400m_patch14_siglip_384", meta=True)
    assert all(p.is_meta for p in tower.parameters())
    assert (tower.hidden_size, tower.num_prefix_tokens, tower.num_patches, tower.num_tokens) == (1152, 0, 729, 729)
    with torch.device("meta"):
        own = timm.create_model("vit_so400m_patch14_siglip_384", num_classes=0)
    assert _params(tower) == _params(own)
    # 428.23 M image params: open_clip docs/model_profile.csv, row ViT-SO400M-14-SigLIP-384 (image_mparams),
    # the same timm trunk (MAP head included, no classifier); the timm model card lists "Params (M): 428.2".
    assert round(_params(tower) / 1e6, 2) == 428.23


def test_timm_errors_name_the_key_and_the_choices(tmp_path):
    with pytest.raises(
        UnknownNameError, match=r"model\.vision\.name = 'timm:vit_bse_patch16_224'.*'vit_base_patch16_224'"
    ):
        build_component("vision", "timm:vit_bse_patch16_224", meta=True)
    with pytest.raises(ConfigError, match=r"'timm:resnet18'.*ResNet, which is not a ViT-style model"):
        build_component("vision", "timm:resnet18", meta=True)
    missing = str(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.vision\.checkpoint = '.*absent\.safetensors': no such file"):
        build_component("vision", "tiny-timm-vit", {"checkpoint": missing}, meta=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"'.*empty': the directory holds none of model\.safetensors"):
        build_component("vision", "tiny-timm-vit", {"checkpoint": str(tmp_path / "empty")}, meta=True)
    other = timm.create_model("test_vit", num_classes=0, **{**TINY_TIMM_VIT["arch"], "depth": 1})
    shallow = _save(other.state_dict(), tmp_path / "shallow.safetensors")
    with pytest.raises(
        CheckpointError, match=r"shallow\.safetensors' does not fit VisionTransformer: \d+ missing keys"
    ):
        build_component("vision", "tiny-timm-vit", {"checkpoint": shallow})


def test_checkpoint_at_another_resolution_is_resampled_by_the_library(tmp_path):
    reference = timm.create_model(TINY_TIMM_VIT["model_name"], num_classes=0, **TINY_TIMM_VIT["arch"])
    timm_file = _save(reference.state_dict(), tmp_path / "vit32.safetensors")
    tower = build_component("vision", "tiny-timm-vit", {"checkpoint": timm_file, "image_size": 48})
    assert (tower.num_tokens, tower(torch.randn(1, 3, 48, 48)).shape) == (36, (1, 36, 32))
    torch.testing.assert_close(tower.model.cls_token, reference.cls_token)
    (tmp_path / "hub_layout").mkdir()  # timm's hub layout: a directory with model.safetensors
    _save(reference.state_dict(), tmp_path / "hub_layout" / "model.safetensors")
    tower = build_component("vision", "tiny-timm-vit", {"checkpoint": str(tmp_path / "hub_layout")})
    torch.testing.assert_close(tower.model.pos_embed, reference.pos_embed)
    clip_file = _save(build_component("vision", "tiny-open-clip").visual.state_dict(), tmp_path / "visual.safetensors")
    tower = build_component("vision", "tiny-open-clip", {"checkpoint": clip_file, "image_size": 48})
    assert (tower.visual.positional_embedding.shape, tower(torch.randn(1, 3, 48, 48)).shape) == ((37, 64), (1, 36, 64))


def test_hub_is_never_reached_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # forces offline even when the config says offline: false
    arch = TINY_TIMM_VIT["arch"]
    assert build_component("vision", "timm:test_vit", {"arch": arch, "offline": False}).num_tokens == 16
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ConfigError, match=r"model\.vision\.offline = false: open_clip towers never download"):
        build_component("vision", "open_clip:ViT-B-16", {"offline": False}, meta=True)


def test_meta_build_reads_no_weight_file(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a weight file")
    for name in ("tiny-timm-vit", "tiny-open-clip"):
        assert build_component("vision", name, {"checkpoint": str(garbage)}, meta=True).num_tokens == 16
        with pytest.raises(CheckpointError, match=r"garbage\.safetensors'.*cannot read"):
            build_component("vision", name, {"checkpoint": str(garbage)})


# -- open_clip -----------------------------------------------------------------------------------


def test_tiny_open_clip_contract_and_preprocessing():
    tower = build_component("vision", "tiny-open-clip", {"select": "all"})
    assert (tower.hidden_size, tower.num_prefix_tokens, tower.grid_size(), tower.num_layers) == (64, 1, (4, 4), 2)
    assert tower(PIXELS).shape == (2, 17, 64)
    assert build_component("vision", "tiny-open-clip")(PIXELS).shape == (2, 16, 64)
    pre = tower.preprocessor
    assert (pre.image_size, pre.mean) == (32, open_clip.OPENAI_DATASET_MEAN)
    assert pre([Image.new("RGB", (50, 40), "blue")]).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_open_clip_checkpoint_parity_with_open_clip(tmp_path, suffix):
    config_file = tmp_path / "zoo-test-tiny-open-clip.json"
    config_file.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(config_file)
    path = _save(open_clip.create_model("zoo-test-tiny-open-clip").state_dict(), tmp_path / f"clip{suffix}")
    reference = open_clip.create_model("zoo-test-tiny-open-clip", pretrained=path).eval()  # open_clip's own loader
    tower = build_component("vision", "tiny-open-clip", {"checkpoint": path, "select": "all"}).eval()
    visual = reference.visual
    visual.output_tokens = True
    with torch.no_grad():
        _, tokens = visual(PIXELS)  # ln_post applied, class token dropped
        last = tower.hidden_states_upto(PIXELS, 2)
        torch.testing.assert_close(visual.ln_post(last)[:, 1:], tokens)
        mids = visual.forward_intermediates(PIXELS, indices=[0], output_fmt="NLC", intermediates_only=True,
                                            output_extra_tokens=True)  # fmt: skip
        expected = torch.cat([mids["image_intermediates_prefix"][0], mids["image_intermediates"][0]], 1)
        torch.testing.assert_close(tower(PIXELS), expected)  # select_layer -2 = after block 1 of 2
        random = build_component("vision", "tiny-open-clip").eval()
        assert not torch.allclose(random.hidden_states_upto(PIXELS, 2), last)


def test_open_clip_timm_trunk_checkpoint_parity(tmp_path):
    config = {**TINY_OPEN_CLIP_CONFIG, "vision_cfg": {"image_size": 160, "timm_model_name": "test_vit",
                                                      "timm_pool": "token", "timm_proj": "linear"}}  # fmt: skip
    config_file = tmp_path / "zoo-test-timm-trunk.json"
    config_file.write_text(json.dumps(config))
    open_clip.add_model_config(config_file)
    path = _save(open_clip.create_model("zoo-test-timm-trunk").state_dict(), tmp_path / "clip.safetensors")
    trunk = open_clip.create_model("zoo-test-timm-trunk", pretrained=path).visual.trunk.eval()
    tower = build_component("vision", "open_clip:zoo-test-timm-trunk", {"checkpoint": path, "select_layer": 3}).eval()
    assert (tower.hidden_size, tower.num_prefix_tokens, tower.num_tokens, tower.num_layers) == (64, 1, 100, 6)
    pixels = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        ((patches, prefix),) = trunk.forward_intermediates(
            pixels, indices=[2], output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True
        )
        torch.testing.assert_close(tower.hidden_states_upto(pixels, 3), torch.cat([prefix, patches], 1))
        torch.testing.assert_close(tower(pixels), patches)
        torch.testing.assert_close(trunk.norm(tower.hidden_states_upto(pixels, 6)), trunk.forward_features(pixels))


def test_open_clip_timm_trunk_patch_size_at_an_image_size_not_a_multiple_of_it(tmp_path):
    config = {**TINY_OPEN_CLIP_CONFIG, "vision_cfg": {"image_size": 224, "timm_model_name": "vit_tiny_patch16_224",
                                                      "timm_pool": "token", "timm_proj": "linear"}}  # fmt: skip
    config_file = tmp_path / "zoo-test-timm-trunk-40.json"
    config_file.write_text(json.dumps(config))
    open_clip.add_model_config(config_file)
    tower = build_component("vision", "open_clip:zoo-test-timm-trunk-40", {"image_size": 40, "offline": True})
    assert (tower.patch_size, tower.grid_size(), tower.num_tokens) == (16, (2, 2), 4)
    assert tower(torch.randn(1, 3, 40, 40)).shape == (1, tower.num_tokens, 192)


def test_open_clip_activation_follows_the_pretrained_tags():
    def activation(name: str, **overrides) -> str:
        tower = build_component("vision", f"open_clip:{name}", overrides, meta=True)
        return type(tower.visual.transformer.resblocks[0].mlp.gelu).__name__

    assert activation("ViT-L-14-336") == "QuickGELU"  # its only tag, openai, was trained with QuickGELU
    assert activation("ViT-L-14-336", arch={"quick_gelu": False}) == "GELU"  # an explicit choice wins
    assert activation("ViT-B-16") == "GELU"  # its tags disagree: the architecture's own default
    assert activation("ViT-B-16", arch={"quick_gelu": True}) == "QuickGELU"


def test_open_clip_vit_l_14_336_on_meta():
    tower = build_component("vision", "open_clip:ViT-L-14-336", meta=True)
    assert all(p.is_meta for p in tower.parameters())
    assert (tower.hidden_size, tower.num_prefix_tokens, tower.num_patches, tower.num_tokens) == (1024, 1, 576, 576)
    # 304.29 M: open_clip docs/model_profile.csv, row ViT-L-14-336, column image_mparams (the whole visual tower).
    assert round(_params(tower) / 1e6, 2) == 304.29


def test_open_clip_eva02_timm_trunk_on_meta():
    tower = build_component("vision", "open_clip:EVA02-L-14", meta=True)
    assert type(tower.visual.trunk).__name__ == "Eva"
    assert (tower.hidden_size, tower.num_prefix_tokens, tower.num_patches) == (1024, 1, 256)
    # 304.11 M: open_clip docs/model_profile.csv, row EVA02-L-14, column image_mparams.
    assert round(_params(tower) / 1e6, 2) == 304.11
    siglip = build_component("vision", "open_clip:ViT-SO400M-14-SigLIP-384", meta=True)
    assert (siglip.num_prefix_tokens, siglip.num_tokens, siglip.preprocessor.mean) == (0, 729, (0.5, 0.5, 0.5))


def test_open_clip_errors_name_the_model():
    with pytest.raises(UnknownNameError, match=r"'open_clip:ViT-L-14-337'.*did you mean 'ViT-L-14-336'"):
        build_component("vision", "open_clip:ViT-L-14-337", meta=True)
    with pytest.raises(ConfigError, match=r"'open_clip:RN50'.*ModifiedResNet, not a ViT"):
        build_component("vision", "open_clip:RN50", meta=True)
    with pytest.raises(ConfigError, match=r"model\.vision\.arch\.widht.*did you mean 'width'"):
        build_component("vision", "tiny-open-clip", {"arch": {"widht": 32}}, meta=True)
    with pytest.raises(CheckpointError, match=r"model\.vision\.checkpoint = '/no/such/dir': no such file"):
        build_component("vision", "open_clip:ViT-B-16", {"checkpoint": "/no/such/dir"}, meta=True)
