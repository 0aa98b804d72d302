"""Any-resolution tiling (LLaVA-NeXT): the tiling math against transformers, the runtime, config errors,
the contract on meta, save/load, generation, and LLaVA-NeXT import / export with equal logits.

Every LLaVA-NeXT here is random and tiny (CLIP 32 px tiles of 8 px patches, a Qwen2 or Llama text model
of width 48), written with ``save_pretrained`` into tmp_path with transformers' own ``LlavaNextProcessor``,
whose inputs then run through both implementations.
"""

from __future__ import annotations

import functools
import json
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import zoo
from zoo.cli.app import main
from zoo.core.anyres import AnyResLayout, select_best_resolution
from zoo.errors import ConfigError, ContractError, ZooError
from zoo.interop.llava import from_hf_llava, hf_llava_composition, save_hf_llava, to_hf_llava

TOLERANCE = 1e-5
PINPOINTS = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]
ANYRES = {"vision": {"name": "tiny-clip", "anyres": {"grid_pinpoints": PINPOINTS}}, "projector": "mlp2x-gelu",
          "lm": "tiny-qwen2"}  # fmt: skip
PROMPTS = ["<image> what is in it?", "a row without any image", "look: <image> and say"]


def _tokenizer():
    from transformers import AutoTokenizer

    from zoo.sdk.hf import tiny_tokenizer_path

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_path()))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]}, replace_extra_special_tokens=False)
    return tokenizer


def _hf_processor(tokenizer=None, pinpoints=PINPOINTS):
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints
    )
    return LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer or _tokenizer(), patch_size=8,
        vision_feature_select_strategy="default", image_token="<image>", num_additional_image_tokens=1,
    )  # fmt: skip


def _write_llava_next(path, *, text: str = "qwen2", seed: int = 0):
    """A random tiny transformers LLaVA-NeXT saved to ``path`` with its processor (tokenizer + pinpoints)."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        Qwen2Config,
    )

    processor = _hf_processor()
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              patch_size=8, image_size=32, hidden_act="quick_gelu")  # fmt: skip
    shape = {"vocab_size": 1040, "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False,
             "bos_token_id": 1021, "eos_token_id": 1023, "pad_token_id": 1021}  # fmt: skip
    text_config = Qwen2Config(**shape) if text == "qwen2" else LlamaConfig(**shape)
    config = LlavaNextConfig(
        vision_config=vision, text_config=text_config, image_token_index=image_id, image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="default", vision_feature_layer=-2, image_seq_length=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return model, processor


def _images(*sizes: tuple[int, int]) -> list[Image.Image]:
    """Random RGB images of the given ``(height, width)``."""
    generator = torch.Generator().manual_seed(0)
    return [
        Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8).numpy())
        for h, w in sizes
    ]


def _hf_batch(processor, images):
    """Two images of different aspect ratios plus a text-only row, left-padded, by transformers' processor."""
    return processor(text=PROMPTS, images=images, padding=True, padding_side="left", return_tensors="pt")


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


# -- the tiling math -------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 2000))
def test_best_fit_and_token_count_agree_with_transformers(height, width):
    from transformers.image_processing_utils import select_best_resolution as theirs

    pinpoints = [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)]
    assert select_best_resolution((height, width), pinpoints) == tuple(theirs((height, width), pinpoints))
    layout = AnyResLayout(tuple(pinpoints), tile_size=336, grid=24)
    expected = _llava_v16_processor()._get_number_of_features(height, width, 336, 336) - 1  # 'default' drops CLS
    assert layout.image_tokens(height, width) == expected


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.booleans())
def test_stitched_features_equal_transformers_pack_image_features(height, width, tall_tiles):
    """``AnyResLayout.pack`` (stitch, unpad, newline) against ``LlavaNextModel.pack_image_features``."""
    from transformers.models.llava_next.modeling_llava_next import LlavaNextModel

    pinpoints = ((32, 64), (64, 32), (64, 64), (96, 32) if tall_tiles else (32, 96))
    model = _pack_owner(pinpoints)
    layout = AnyResLayout(pinpoints, tile_size=32, grid=4)
    generator = torch.Generator().manual_seed(height * 1000 + width)
    features = torch.randn(layout.num_tiles(height, width), 16, 8, generator=generator)  # [T, M, D]
    newline = torch.randn(8, generator=generator)  # [D]
    theirs, lengths = LlavaNextModel.pack_image_features(
        model, [features], torch.tensor([[height, width]]), "default", image_newline=newline
    )
    ours = layout.pack(features, height, width, newline)  # [tokens, D]
    assert torch.equal(ours, theirs[0]) and int(lengths[0]) == layout.image_tokens(height, width)


@functools.cache
def _pack_owner(pinpoints: tuple[tuple[int, int], ...]) -> types.SimpleNamespace:
    """What ``LlavaNextModel.pack_image_features`` reads of its model: the config (32 px tiles, 8 px patches)."""
    from transformers import CLIPVisionConfig, LlavaNextConfig

    vision = CLIPVisionConfig(image_size=32, patch_size=8)
    return types.SimpleNamespace(
        config=LlavaNextConfig(vision_config=vision, image_grid_pinpoints=[list(p) for p in pinpoints])
    )


@functools.cache
def _llava_v16_processor():
    """transformers' LlavaNextProcessor counting like llava-v1.6 (336 px tiles of 14 px patches)."""
    processor = _hf_processor(pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]])
    processor.patch_size = 14
    return processor


def test_best_fit_examples():
    pinpoints = ((336, 672), (672, 336), (672, 672))
    assert select_best_resolution((300, 700), pinpoints) == (336, 672)  # wide: one row of two tiles
    assert select_best_resolution((700, 300), pinpoints) == (672, 336)  # tall
    assert select_best_resolution((1000, 1000), pinpoints) == (672, 672)  # large square: most pixels kept
    assert select_best_resolution((100, 100), pinpoints) == (336, 672)  # small: everything fits, least padding
    layout = AnyResLayout(pinpoints, tile_size=336, grid=24)
    assert layout.tile_grid(300, 700) == (1, 2) and layout.num_tiles(300, 700) == 3
    # a 24x48 token map; the image covers int(300 * 48 / 700) = 20 rows: (24 - 20) // 2 = 2 cut above and below
    assert layout.unpadded_crop(300, 700) == (2, 22, 0, 48)
    assert layout.image_tokens(300, 700) == 576 + 20 * 48 + 20


def test_tokens_from_the_runtime_equal_the_count_for_every_size():
    torch.manual_seed(0)
    model = zoo.build({"model": ANYRES}).eval()
    sizes = [(30, 70), (90, 40), (32, 32), (5, 200), (200, 5), (64, 64), (1, 1)]
    images = _images(*sizes)
    pixels, image_sizes = model.anyres.preprocess(images, model.vision.preprocessor)
    with torch.no_grad():
        features = model.encode_images(pixels, image_sizes)  # [sum tokens, H]
    counts = [model.image_tokens_for(h, w) for h, w in sizes]
    assert features.shape == (sum(counts), model.lm.hidden_size)
    hf_counts = [
        _hf_processor()._get_number_of_features(h, w, 32, 32) - 1 for h, w in sizes
    ]  # transformers' own count for the same tiny layout
    assert counts == hf_counts
    assert pixels.shape == (len(sizes), 5, 3, 32, 32)  # padded to the most tiles: 64x64 is 2x2 tiles + global view


# -- the runtime --------------------------------------------------------------------------------------
def test_mixed_batch_generate_encodes_images_once_and_matches_the_uncached_loop():
    torch.manual_seed(0)
    model = zoo.build("tiny-anyres-clip-mlp-qwen2").eval()
    processor = model.processor()
    images = _images((30, 70), (90, 40))
    batch = processor(PROMPTS, images=[[images[0]], [], [images[1]]])
    assert batch["pixel_values"].shape == (2, 4, 3, 32, 32) and batch["image_sizes"].tolist() == [[30, 70], [90, 40]]
    per_image = [model.image_tokens_for(30, 70), model.image_tokens_for(90, 40)]
    assert per_image[0] != per_image[1]
    placeholders = (batch["input_ids"] == model.image_token_id).sum(1).tolist()
    assert placeholders == [per_image[0], 0, per_image[1]]

    calls = []
    handle = model.vision.register_forward_hook(lambda *_: calls.append(1))
    try:
        options = {"max_new_tokens": 5, "do_sample": False}
        cached = model.generate(**batch, **options)
        assert len(calls) == 1  # the tower ran once, at prefill, on the 3 + 4 tiles
        uncached = model.generate(**batch, use_cache=False, **options)
    finally:
        handle.remove()
    assert cached.shape[1] > batch["input_ids"].shape[1] and torch.equal(cached, uncached)
    text_only = processor([PROMPTS[1]])
    assert text_only["pixel_values"].shape[0] == 0
    assert model(**text_only).logits.shape[0] == 1


def test_runtime_count_check_and_missing_image_sizes_are_clear():
    model = zoo.build({"model": ANYRES}).eval()
    batch = model.processor()(PROMPTS[:1], images=_images((30, 70)))
    short = {**batch, "input_ids": batch["input_ids"][:, 3:], "attention_mask": batch["attention_mask"][:, 3:]}
    with pytest.raises(ZooError, match=r"image positions but the 1 images of sizes \[\(30, 70\)\].*image_tokens_for"):
        model(**short)
    with pytest.raises(ZooError, match="need image_sizes"):
        model(batch["pixel_values"], batch["input_ids"])
    with pytest.raises(ZooError, match=r"image_tokens_for\(height, width\)"):
        _ = model.tokens_per_image
    plain = zoo.build("tiny-clip-mlp-qwen2")
    with pytest.raises(ZooError, match=r"image_sizes were given .* but the model has no model.vision.anyres"):
        plain.encode_images(batch["pixel_values"], batch["image_sizes"])


def test_save_load_round_trip_keeps_the_newline_and_the_logits(tmp_path):
    torch.manual_seed(0)
    model = zoo.build({"model": ANYRES}).eval()
    assert model.projector.image_newline.requires_grad  # trained with the projector
    batch = model.processor()(PROMPTS, images=[[_images((30, 70))[0]], [], [_images((90, 40))[0]]])
    before = _logits(model, batch)
    zoo.save(model, tmp_path / "ckpt")
    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    assert manifest["model"]["model"]["vision"]["anyres"]["grid_pinpoints"] == PINPOINTS
    assert manifest["contract"]["anyres"]["tokens_by_pinpoint"]["64x64"] == 16 + 8 * 8 + 8
    loaded = zoo.load(tmp_path / "ckpt").eval()
    assert torch.equal(loaded.projector.image_newline, model.projector.image_newline)
    torch.testing.assert_close(_logits(loaded, batch), before, rtol=0, atol=1e-6)


# -- configuration and contract --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("vision", "error", "words"),
    [
        ({"anyres": {"grid_pinpoint": PINPOINTS}}, ConfigError, "model.vision.anyres.grid_pinpoint; did you mean 'grid_pinpoints'"),
        ({"anyres": {"grid_pinpoints": [[33, 64]]}}, ConfigError, "grid_pinpoints[0] = [33, 64]: each side must be a whole number of tiles of 32 px"),
        ({"anyres": {"grid_pinpoints": [[32]]}}, ConfigError, "grid_pinpoints[0] = [32]: expected [height, width]"),
        ({"anyres": {"grid_pinpoints": []}}, ConfigError, "non-empty list of [height, width] pairs"),
        ({"anyres": {"newline": "yes"}}, ConfigError, "model.vision.anyres.newline = 'yes' has the wrong type; expected true/false"),
        ({"anyres": 5}, ConfigError, "model.vision.anyres = 5: expected a mapping"),
        ({"select": "all", "anyres": True}, ContractError, "gives 17 tokens per tile of vision tower 'tiny-clip', which is not a square grid"),
    ],
)  # fmt: skip
def test_bad_anyres_settings_name_the_key_the_value_and_the_fix(vision, error, words):
    with pytest.raises(error) as caught:
        zoo.plan({"model": {**ANYRES, "vision": {"name": "tiny-clip", **vision}}})
    assert words in str(caught.value)


def test_anyres_outside_the_vision_slot_is_refused():
    with pytest.raises(ConfigError, match=r"model\.projector\.anyres: .*move it to model\.vision\.anyres"):
        zoo.plan({"model": {**ANYRES, "projector": {"name": "mlp2x-gelu", "anyres": True}}})


def test_anyres_composes_with_a_token_reducing_projector():
    model = zoo.build({"model": {**ANYRES, "projector": {"name": "pixel-shuffle", "factor": 2}}}).eval()
    assert model.anyres.grid == 2  # a 4x4 patch grid shuffled to 2x2 tokens per tile
    batch = model.processor()(PROMPTS[:1], images=_images((30, 70)))
    assert int((batch["input_ids"] == model.image_token_id).sum()) == model.image_tokens_for(30, 70) == 4 + 2 * 4 + 2
    assert model(**batch).logits.shape[1] == batch["input_ids"].shape[1]


def test_anyres_composes_with_a_fused_tower():
    torch.manual_seed(0)
    model = zoo.build({"model": {**ANYRES, "vision": {"name": "tiny-dinosiglip", "anyres": True}}}).eval()
    assert model.anyres.pinpoints == ((32, 64), (64, 32), (64, 64), (96, 32), (32, 96))  # LLaVA-NeXT's, in tiles
    batch = model.processor()(PROMPTS, images=[[_images((30, 70))[0]], [], [_images((90, 40))[0]]])
    assert batch["pixel_values"].shape[2] == 6  # each tile holds both towers' inputs
    assert model(**batch).logits.shape[:2] == batch["input_ids"].shape


def test_full_size_preset_on_meta_has_transformers_parameter_count_and_tokens():
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    model = zoo.build("llava-next-7b-like", meta=True)
    assert all(p.is_meta for p in model.parameters())
    summary = model.summary()
    # the default LLaVA-NeXT layout at 336 px: 576 + unpadded 24*rows x 24*cols map + one newline per row
    assert summary["image_tokens"] == {"336x672": 1752, "672x336": 1776, "672x672": 2928, "1008x336": 2376,
                                       "336x1008": 2328}  # fmt: skip
    assert summary["contract"]["anyres"]["tile_grid"] == 24
    base = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)  # LoRA adapters are zoo's
    causal = model.lm.model.get_base_model()
    config = LlavaNextConfig(
        vision_config=model.vision.model.config.to_dict(), text_config=causal.config.to_dict(),
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    )  # fmt: skip
    with torch.device("meta"):
        reference = LlavaNextForConditionalGeneration(config)
    assert base == sum(p.numel() for p in reference.parameters()) == 7_062_906_880  # llava-v1.6-vicuna-7b
    assert summary["components"]["projector"]["params"] == 20_979_712 + 4096  # mlp2x-gelu + image_newline


# -- LLaVA-NeXT interop -----------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["qwen2", "llama"])
def test_import_llava_next_matches_transformers_on_one_batch(tmp_path, text):
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    hf, processor = _write_llava_next(tmp_path / "next", text=text)
    model = from_hf_llava(tmp_path / "next")
    assert model.composition.vision.anyres.grid_pinpoints == tuple(map(tuple, PINPOINTS))
    assert torch.equal(model.projector.image_newline, hf.model.image_newline)
    images = _images((30, 70), (90, 40))  # wide (1x2 tiles) and tall (2x1 or 3x1 tiles)
    batch = _hf_batch(processor, images)
    assert batch["pixel_values"].dim() == 5
    assert (_logits(model, batch) - _logits(hf, batch)).abs().max() <= TOLERANCE
    options = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 1021, "eos_token_id": 1023}
    with torch.no_grad():
        ours, theirs = model.generate(**batch, **options), hf.generate(**batch, **options)
    assert ours.shape[1] > batch["input_ids"].shape[1] and torch.equal(ours, theirs)

    own = model.processor()(PROMPTS, images=[[images[0]], [], [images[1]]])  # zoo's processor: same ids
    assert torch.equal(own["input_ids"], batch["input_ids"]) and torch.equal(own["image_sizes"], batch["image_sizes"])
    torch.testing.assert_close(own["pixel_values"], batch["pixel_values"], rtol=0, atol=1e-6)  # the same tiles

    save_hf_llava(model, tmp_path / "back")
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["model_type"] == "llava_next" and config["image_grid_pinpoints"] == PINPOINTS
    reloaded = LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "back").eval()
    assert (_logits(reloaded, batch) - _logits(model, batch)).abs().max() <= TOLERANCE
    exported_processor = AutoProcessor.from_pretrained(tmp_path / "back")
    assert type(exported_processor).__name__ == "LlavaNextProcessor"
    again = _hf_batch(exported_processor, images)
    assert torch.equal(again["input_ids"], batch["input_ids"])
    assert torch.allclose(again["pixel_values"], batch["pixel_values"], atol=1e-6)


@pytest.mark.parametrize("vision", ["tiny-clip", "tiny-siglip"])
def test_export_of_a_zoo_composition_loads_in_transformers(tmp_path, vision):
    from safetensors.torch import load_file
    from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

    torch.manual_seed(0)
    config = {**ANYRES, "vision": {"name": vision, "anyres": {"grid_pinpoints": PINPOINTS}},
              "lm": {"name": "tiny-qwen2", "train": "lora"}}  # fmt: skip
    model = zoo.build({"model": config}).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)  # a trained adapter
    in_memory = to_hf_llava(model).eval()
    assert type(in_memory).__name__ == "LlavaNextForConditionalGeneration"
    assert in_memory.model.image_newline is model.projector.image_newline  # shared, not copied
    save_hf_llava(model, tmp_path / "hf")
    assert "image_newline" in load_file(tmp_path / "hf" / "model.safetensors")  # the llava-hf key
    processor = LlavaNextProcessor.from_pretrained(tmp_path / "hf")
    images = _images((30, 70), (90, 40))
    batch = _hf_batch(processor, images)
    reloaded = LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    assert (_logits(reloaded, batch) - _logits(model, batch)).abs().max() <= TOLERANCE
    own = model.processor()(PROMPTS, images=[[images[0]], [], [images[1]]])
    assert torch.equal(own["input_ids"], batch["input_ids"])  # the exported processor counts and tiles like zoo's
    torch.testing.assert_close(own["pixel_values"], batch["pixel_values"], rtol=0, atol=1e-6)
    composition = hf_llava_composition(tmp_path / "hf")["model"]["vision"]
    assert composition["name"] == vision and composition["anyres"]["grid_pinpoints"] == PINPOINTS
    back = from_hf_llava(tmp_path / "hf")
    assert (_logits(back, batch) - _logits(model, batch)).abs().max() <= TOLERANCE


def test_export_refuses_what_llava_next_cannot_hold():
    model = zoo.build({"model": {**ANYRES, "vision": {"name": "tiny-clip", "anyres": {"newline": False}}}})
    with pytest.raises(ZooError, match=r"newline = false.*always ends each row with image_newline"):
        to_hf_llava(model)
    shuffled = zoo.build({"model": {**ANYRES, "projector": {"name": "pixel-shuffle", "factor": 2}}})
    with pytest.raises(ZooError, match=r"'pixel-shuffle'.*does not fit the transformers Llava layout"):
        to_hf_llava(shuffled)


def test_convert_cli_dispatches_on_model_type(tmp_path, capsys):
    hf, processor = _write_llava_next(tmp_path / "next")
    assert main(["convert", "--from-hf-llava", str(tmp_path / "next"), str(tmp_path / "zoo"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["source_kind"] == "transformers LLaVA-NeXT directory"
    assert summary["image_tokens"]["64x64"] == 16 + 64 + 8
    batch = _hf_batch(processor, _images((30, 70), (90, 40)))
    loaded = zoo.load(tmp_path / "zoo")
    assert (_logits(loaded, batch) - _logits(hf, batch)).abs().max() <= TOLERANCE
    assert main(["convert", "--to-hf-llava", str(tmp_path / "zoo"), str(tmp_path / "back")]) == 0
    assert "transformers LLaVA-NeXT directory" in capsys.readouterr().out
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == "llava_next"


def test_cli_generates_with_any_res_and_reports_bad_settings_in_one_line(tmp_path, capsys):
    image = tmp_path / "wide.png"
    _images((30, 70))[0].save(image)
    code = main(["generate", "tiny-anyres-clip-mlp-qwen2", "--prompt", "<image> what is it?", "--image", str(image),
                 "--max-new-tokens", "3", "--json"])  # fmt: skip
    assert code == 0 and len(json.loads(capsys.readouterr().out)["tokens"]) == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  vision: {name: tiny-clip, anyres: {grid_pinpoints: [[32, 48]]}}\n"
                   "  projector: mlp2x-gelu\n  lm: tiny-qwen2\n")  # fmt: skip
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.vision.anyres.grid_pinpoints[0] = [32, 48]" in err
    assert "valid: multiples of 32, such as [32, 64]" in err


# -- training data and evaluation ----------------------------------------------------------------------
def _record(ident: str, images: list[str], answer: str) -> dict:
    question = "<image>\n" * len(images) + "What is it?"
    return {"id": ident, "image": images, "conversations": [{"from": "human", "value": question},
                                                            {"from": "gpt", "value": answer}]}  # fmt: skip


def test_training_data_counts_each_image_by_its_size_and_the_loss_goes_down(tmp_path):
    from zoo.train.data import DataCollator, LlavaDataset
    from zoo.train.evaluate import evaluate

    for name, (height, width) in {"wide.png": (30, 70), "tall.png": (90, 40)}.items():
        _images((height, width))[0].save(tmp_path / name)
    records = [
        _record("a", ["wide.png"], "wide"),
        _record("b", [], "text"),
        _record("c", ["tall.png", "wide.png"], "two"),
    ]
    torch.manual_seed(0)
    model = zoo.build({"model": ANYRES})
    dataset = LlavaDataset(records, model, image_folder=tmp_path)
    items = [dataset[i] for i in range(3)]
    wide, tall = model.image_tokens_for(30, 70), model.image_tokens_for(90, 40)
    counts = [int((item["input_ids"] == model.image_token_id).sum()) for item in items]
    assert counts == [wide, 0, tall + wide]
    assert items[2]["image_sizes"].tolist() == [[90, 40], [30, 70]]
    batch = DataCollator.from_model(model)(items)
    assert batch["pixel_values"].shape == (3, 4, 3, 32, 32)  # three images, tiles padded to the most (tall: 3 + 1)
    newline = model.projector.image_newline.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(model.projector.image_newline, newline)  # trained with the projector
    truncated = LlavaDataset(records[2:], model, image_folder=tmp_path, max_length=model.anyres.max_tokens)[0]
    assert tall + wide > model.anyres.max_tokens
    assert truncated["image_sizes"].tolist() == [[90, 40]]  # the second image did not fit: dropped whole
    result = evaluate(model, records, image_folder=tmp_path, max_new_tokens=2, batch_size=2)
    assert result["n"] == 3 and result["loss"] == result["loss"]  # generated and scored (loss not NaN)
