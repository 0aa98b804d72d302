"""Interop with transformers' LlavaForConditionalGeneration: import, export, processor and CLI parity.

Every Llava here is random and tiny (CLIP / SigLIP vision 32 px, Qwen2 text hidden 48) and written
with ``save_pretrained`` into tmp_path, then read back through the real loading code.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import zoo
from zoo.cli.app import main
from zoo.core.builder import build_component
from zoo.errors import CheckpointError, ZooError
from zoo.interop.llava import from_hf_llava, hf_llava_composition, save_hf_llava, to_hf_llava

TOLERANCE = 1e-5
TOKENS = 16  # (32 px / patch 8)^2 patches; CLIP's CLS dropped by 'default', SigLIP has none


def _tokenizer():
    from transformers import AutoTokenizer

    from zoo.sdk.hf import tiny_tokenizer_path

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_path()))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]}, replace_extra_special_tokens=False)
    return tokenizer


def _write_llava(
    path,
    *,
    vision: str = "clip",
    strategy: str = "default",
    layer: int = -2,
    seed: int = 0,
    vocab_size: int = 1040,
    image_token_index: int | None = None,
):
    """A random tiny transformers Llava saved to ``path`` with its tokenizer (the image token added), or
    without any tokenizer when ``image_token_index`` is given (a weights-only directory)."""
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    tokenizer = _tokenizer() if image_token_index is None else None
    image_id = tokenizer.convert_tokens_to_ids("<image>") if tokenizer is not None else image_token_index
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "patch_size": 8, "image_size": 32}  # fmt: skip
    if vision == "clip":
        vision_config = CLIPVisionConfig(**shape, hidden_act="quick_gelu")
    else:
        vision_config = SiglipVisionConfig(**shape)
    text_config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=False, bos_token_id=1021, eos_token_id=1023, pad_token_id=1021,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_id,
        image_seq_length=TOKENS,
        vision_feature_select_strategy=strategy,
        vision_feature_layer=layer,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return model, image_id


def _batch(image_id: int, tokens: int = TOKENS, seed: int = 1) -> dict[str, torch.Tensor]:
    """Two left-padded prompts: one with two images, one with one image (three images in all)."""
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(0, 1000, (2, 6), generator=generator)
    image = [image_id] * tokens
    first = [*text[0, :2].tolist(), *image, text[0, 2].item(), *image, *text[0, 3:].tolist()]
    second = [*text[1, :3].tolist(), *image, *text[1, 3:].tolist()]
    pad = 1021
    width = max(len(first), len(second))
    rows = [[pad] * (width - len(r)) + r for r in (first, second)]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in (first, second)]
    return {
        "input_ids": torch.tensor(rows),
        "attention_mask": torch.tensor(mask),
        "pixel_values": torch.randn(3, 3, 32, 32, generator=generator),
    }


def _zoo_logits(model, batch):
    with torch.no_grad():
        return model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]).logits


def _hf_logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_import_matches_transformers_logits_and_generation(tmp_path):
    hf, image_id = _write_llava(tmp_path / "llava")
    model = from_hf_llava(tmp_path / "llava")
    assert model.image_token_id == image_id and model.tokens_per_image == TOKENS
    assert model.composition.vision.name == "tiny-clip" and model.composition.lm.name == "tiny-qwen2"
    assert (
        model.composition.vision.options["select"] == "patch" and model.composition.vision.options["select_layer"] == -2
    )
    assert not any(p.is_meta for p in model.parameters())  # built empty, every parameter taken from the file
    lm = model.lm.model
    if lm.config.tie_word_embeddings:
        assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    batch = _batch(image_id)
    assert (_zoo_logits(model, batch) - _hf_logits(hf, batch)).abs().max() <= TOLERANCE

    options = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 1021, "eos_token_id": 1023}
    with torch.no_grad():
        ours = model.generate(batch["input_ids"], batch["pixel_values"], batch["attention_mask"], **options)
        theirs = hf.generate(**batch, **options)
    assert ours.shape[1] > batch["input_ids"].shape[1]
    assert torch.equal(ours, theirs)


def test_import_weights_only_directory_with_a_vocabulary_larger_than_any_tokenizer(tmp_path):
    """No tokenizer files: rows from text_config.vocab_size, the image id from image_token_index, none attached."""
    hf, image_id = _write_llava(tmp_path / "llava", vocab_size=5000, image_token_index=4321)
    data = hf_llava_composition(tmp_path / "llava")["model"]
    assert data["image_token_id"] == 4321 and data["lm"]["tiny_tokenizer"] is False and "tokenizer" not in data["lm"]
    model = from_hf_llava(tmp_path / "llava")
    assert model.image_token_id == 4321 and model.lm.vocab_size == 5000 and not model.lm.has_tokenizer
    batch = _batch(image_id)
    assert (_zoo_logits(model, batch) - _hf_logits(hf, batch)).abs().max() <= TOLERANCE
    with pytest.raises(ZooError, match=r"no tokenizer.*model\.lm\.tokenizer = AutoTokenizer"):
        model.processor()

    zoo.save(model, tmp_path / "zoo")  # the composition carries image_token_id: a reload needs no tokenizer either
    loaded = zoo.load(tmp_path / "zoo")
    assert loaded.image_token_id == 4321 and not loaded.lm.has_tokenizer
    assert (_zoo_logits(loaded, batch) - _hf_logits(hf, batch)).abs().max() <= TOLERANCE
    save_hf_llava(loaded, tmp_path / "back")  # and exports again, still without a tokenizer
    assert json.loads((tmp_path / "back" / "config.json").read_text())["image_token_index"] == 4321

    tokenizer = _tokenizer()  # a tokenizer whose '<image>' is not id 4321: the processor says so
    model.lm.tokenizer = tokenizer
    with pytest.raises(ZooError, match=r"the id 1024, but the model's image token id is 4321"):
        model.processor()


def test_import_composition_overrides_only_what_differs(tmp_path):
    _write_llava(tmp_path / "llava", layer=-1, strategy="full")
    data = hf_llava_composition(tmp_path / "llava")["model"]
    assert data["vision"] == {"name": "tiny-clip", "select_layer": -1, "select": "all"}  # same arch as tiny-clip
    assert data["lm"]["arch"]["hidden_size"] == 48 and "num_hidden_layers" not in data["lm"]["arch"]
    assert data["image_token"] == "<image>" and data["projector"] == {"name": "mlp2x-gelu"}


def test_import_full_strategy_and_last_layer_match(tmp_path):
    hf, image_id = _write_llava(tmp_path / "llava", layer=-1, strategy="full")
    model = from_hf_llava(tmp_path / "llava")
    assert model.tokens_per_image == TOKENS + 1  # 'full' keeps CLIP's CLS
    batch = _batch(image_id, tokens=TOKENS + 1)
    assert (_zoo_logits(model, batch) - _hf_logits(hf, batch)).abs().max() <= TOLERANCE


def test_import_siglip_full_keeps_every_patch(tmp_path):
    hf, image_id = _write_llava(tmp_path / "llava", vision="siglip", strategy="full")
    model = from_hf_llava(tmp_path / "llava")
    assert model.composition.vision.name == "tiny-siglip" and model.tokens_per_image == TOKENS
    batch = _batch(image_id)
    assert (_zoo_logits(model, batch) - _hf_logits(hf, batch)).abs().max() <= TOLERANCE


def test_import_refuses_siglip_default_strategy(tmp_path):
    _write_llava(tmp_path / "llava", vision="siglip", strategy="default")
    with pytest.raises(ZooError, match=r"vision_feature_select_strategy = 'default'.*real patch"):
        from_hf_llava(tmp_path / "llava")


def test_import_refuses_a_directory_that_is_not_llava(tmp_path):
    lm = build_component("lm", "tiny-qwen2")
    lm.model.save_pretrained(tmp_path / "qwen")
    with pytest.raises(CheckpointError, match="model_type is 'qwen2', not 'llava'"):
        from_hf_llava(tmp_path / "qwen")
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        from_hf_llava(tmp_path)


def _trained_lora_model(vision: str = "tiny-clip"):
    torch.manual_seed(0)
    config = {"model": {"vision": vision, "projector": "mlp2x-gelu", "lm": {"name": "tiny-qwen2", "train": "lora"}}}
    model = zoo.build(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)  # a trained adapter: B is zero only at init
    return model.eval()


def test_export_merges_lora_and_reloads_with_the_same_logits(tmp_path):
    from transformers import LlavaForConditionalGeneration

    model = _trained_lora_model()
    batch = _batch(model.image_token_id)
    before = _zoo_logits(model, batch)
    in_memory = to_hf_llava(model).eval()
    assert (_hf_logits(in_memory, batch) - before).abs().max() <= TOLERANCE
    assert in_memory.model.vision_tower.embeddings.patch_embedding.weight is (
        model.vision.model.embeddings.patch_embedding.weight
    )  # shared, not copied
    assert torch.equal(_zoo_logits(model, batch), before)  # merging did not touch the zoo model

    save_hf_llava(model, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "llava" and config["image_token_index"] == model.image_token_id
    assert config["vision_feature_select_strategy"] == "default" and config["vision_feature_layer"] == -2
    assert config["image_seq_length"] == model.tokens_per_image
    reloaded = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    assert (_hf_logits(reloaded, batch) - before).abs().max() <= TOLERANCE


PUBLISHED_PREFIXES = ("vision_tower.vision_model.", "multi_modal_projector.", "language_model.model.",
                      "language_model.lm_head.")  # fmt: skip


@pytest.mark.parametrize(
    ("vision", "lm"),
    [("tiny-clip", "tiny-qwen2"), ("tiny-clip", "tiny-llama"), ("tiny-siglip", "tiny-qwen3"),
     ("tiny-siglip", "tiny-llama")],
)  # fmt: skip
def test_export_writes_the_llava_hf_key_layout(tmp_path, vision, lm):
    """Every tensor under its llava-hf key (what vLLM and transformers 4.x read), equal to zoo's own."""
    from safetensors.torch import load_file
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(0)
    model = zoo.build({"model": {"vision": vision, "projector": "mlp2x-gelu", "lm": lm}}).eval()
    save_hf_llava(model, tmp_path / "hf")
    saved = load_file(tmp_path / "hf" / "model.safetensors")
    causal = model.lm.model
    expected = {
        **{f"vision_tower.vision_model.{k}": v for k, v in model.vision.model.state_dict().items()},
        **{f"multi_modal_projector.{k}": v for k, v in model.projector.state_dict().items()},
        **{f"language_model.model.{k}": v for k, v in causal.base_model.state_dict().items()},
    }
    if not causal.config.tie_word_embeddings:  # a tied head is the embedding matrix: stored once
        expected["language_model.lm_head.weight"] = causal.get_output_embeddings().weight
    assert sorted(saved) == sorted(expected)
    assert all(key.startswith(PUBLISHED_PREFIXES) for key in saved)
    for key, tensor in expected.items():
        assert torch.equal(saved[key], tensor), key

    reloaded, info = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    batch = _batch(model.image_token_id, tokens=model.tokens_per_image)
    assert (_hf_logits(reloaded.eval(), batch) - _zoo_logits(model, batch)).abs().max() <= TOLERANCE
    back = from_hf_llava(tmp_path / "hf")  # import reads the published layout too
    assert (_zoo_logits(back, batch) - _zoo_logits(model, batch)).abs().max() <= TOLERANCE


def test_import_refuses_a_directory_with_missing_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    _write_llava(tmp_path / "llava")
    file = tmp_path / "llava" / "model.safetensors"
    tensors = load_file(file)
    dropped = next(k for k in tensors if "projector.linear_2.weight" in k)
    save_file({k: v for k, v in tensors.items() if k != dropped}, file, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"weights missing for .*linear_2\.weight"):
        from_hf_llava(tmp_path / "llava")


def test_exported_processor_expands_images_like_zoo(tmp_path):
    from transformers import LlavaProcessor

    model = zoo.build("tiny-clip-mlp-qwen2").eval()
    save_hf_llava(model, tmp_path / "hf")
    hf_processor = LlavaProcessor.from_pretrained(tmp_path / "hf")
    images = [Image.new("RGB", (40, 30), (200, 30, 60)), Image.new("RGB", (32, 48), (10, 220, 90))]
    prompts = ["<image> describe the cat", "two <image> and <image> here"]
    ours = model.processor(padding_side="left")(prompts, images=[[images[0]], [images[1], images[0]]])
    theirs = hf_processor(
        text=prompts, images=[images[0], images[1], images[0]], padding=True, padding_side="left", return_tensors="pt"
    )
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    assert torch.allclose(ours["pixel_values"], theirs["pixel_values"], atol=1e-6)
    assert int((theirs["input_ids"] == model.image_token_id).sum()) == 3 * model.tokens_per_image


def test_export_then_import_siglip_round_trip(tmp_path):
    model = _trained_lora_model("tiny-siglip")
    save_hf_llava(model, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["vision_feature_select_strategy"] == "full"  # no CLS: keep every patch
    back = from_hf_llava(tmp_path / "hf")
    batch = _batch(model.image_token_id)
    assert (_zoo_logits(back, batch) - _zoo_logits(model, batch)).abs().max() <= TOLERANCE


@pytest.mark.parametrize(
    ("slots", "part"),
    [
        ({"projector": "resampler"}, "model.projector = 'resampler'"),
        ({"projector": "linear"}, "model.projector = 'linear'"),
        ({"vision": "tiny-timm-vit"}, "model.vision = 'tiny-timm-vit'"),
        ({"vision": "tiny-dinov2"}, "model.vision = 'tiny-dinov2'"),
        ({"vision": {"name": "tiny-clip", "image_size": 48}}, "model.vision.image_size = 48"),
        ({"lm": "tiny-minicpm3"}, "model.lm = 'tiny-minicpm3' (MiniCPM3ForCausalLM) divides hidden states"),
    ],
)
def test_export_names_the_part_that_does_not_fit(slots, part):
    config = {"vision": "tiny-clip", "projector": "mlp2x-gelu", "lm": "tiny-qwen2", **slots}
    model = zoo.build({"model": config})
    with pytest.raises(ZooError) as error:
        to_hf_llava(model)
    assert part in str(error.value) and "Llava" in str(error.value)


def test_convert_cli_both_directions(tmp_path, capsys):
    hf, image_id = _write_llava(tmp_path / "llava")
    assert main(["convert", "--from-hf-llava", str(tmp_path / "llava"), str(tmp_path / "zoo"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["destination_kind"] == "zoo checkpoint" and summary["image_token_id"] == image_id
    loaded = zoo.load(tmp_path / "zoo")
    batch = _batch(image_id)
    assert (_zoo_logits(loaded, batch) - _hf_logits(hf, batch)).abs().max() <= TOLERANCE

    assert main(["convert", "--to-hf-llava", str(tmp_path / "zoo"), str(tmp_path / "back")]) == 0
    assert "from zoo checkpoint" in capsys.readouterr().out
    from transformers import LlavaForConditionalGeneration

    again = LlavaForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    assert (_hf_logits(again, batch) - _hf_logits(hf, batch)).abs().max() <= TOLERANCE

    assert main(["convert", "--to-hf-llava", "tiny-clip-mlp-qwen2", str(tmp_path / "fresh")]) == 0
    assert json.loads((tmp_path / "fresh" / "config.json").read_text())["model_type"] == "llava"
    code = main(["convert", "--to-hf-llava", "tiny-clip-mlp-qwen2", str(tmp_path / "zoo")])
    assert code == 2 and "refusing to write" in capsys.readouterr().err  # a zoo checkpoint is not overwritten
