"""Any-res tiling under hostile or careless use: extreme images, transparent images, malformed runtime
inputs, right-padded generation, training data too short for an image, malformed LLaVA-NeXT directories
and image processors that disagree with their model.

Each test is one thing a user of LLaVA-NeXT / prismatic tried; every failure must be one ``ZooError``
naming the argument or field, the bad value and what works, never a stray ``TypeError``.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from test_anyres import ANYRES, _hf_processor, _images, _write_llava_next

import zoo
from zoo.errors import CheckpointError, ConfigError, ContractError, ZooError
from zoo.train.data import DataCollator


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    built = zoo.build({"model": ANYRES}).eval()
    with torch.no_grad():  # a projector loud enough that greedy answers differ per image
        for param in built.projector.parameters():
            param.mul_(5)
    return built


# -- images and runtime inputs -------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 1), (1, 4000), (4000, 1), (3, 4000), (97, 2)])
def test_extreme_aspect_ratios_count_like_transformers_and_run(model, size):
    height, width = size
    image = _images(size)[0]
    batch = model.processor()(["<image> hi"], images=[image])
    theirs = _hf_processor()(text=["<image> hi"], images=[image], return_tensors="pt")
    expected = _hf_processor()._get_number_of_features(height, width, 32, 32) - 1
    assert int((batch["input_ids"] == model.image_token_id).sum()) == model.image_tokens_for(*size) == expected
    assert torch.equal(batch["input_ids"], theirs["input_ids"])
    torch.testing.assert_close(batch["pixel_values"], theirs["pixel_values"], rtol=0, atol=1e-5)
    with torch.no_grad():
        assert model(**batch).logits.shape[1] == batch["input_ids"].shape[1]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "CMYK", "I;16"])
def test_any_pil_mode_becomes_the_same_count(model, mode):
    image = _images((20, 50))[0].convert(mode)
    batch = model.processor()(["<image> hi"], images=[image])
    assert batch["pixel_values"].shape == (1, 3, 3, 32, 32)
    with torch.no_grad():
        assert model(**batch).logits.shape[1] == batch["input_ids"].shape[1]


def _transparent() -> Image.Image:
    """A random RGBA image whose bottom half is fully transparent (a logo or a diagram on no background)."""
    pixels = torch.randint(0, 256, (30, 70, 4), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    pixels[15:, :, 3] = 0
    pixels[:15, :, 3] = 255
    return Image.fromarray(pixels.numpy(), "RGBA")


def test_transparent_images_are_put_on_white_like_files_and_transformers(model, tmp_path):
    """In memory or from a file, zoo's processors see what transformers' processors see (alpha onto white)."""
    from transformers import CLIPImageProcessor

    from zoo.sdk.images import open_image

    image = _transparent()
    image.save(tmp_path / "logo.png")
    for own in (image, image.convert("LA"), image.convert("PA")):
        ours = model.processor()(["<image> hi"], images=[own])["pixel_values"]
        theirs = _hf_processor()(text=["<image> hi"], images=[own], return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    from_file = model.processor()(["<image> hi"], images=[open_image(tmp_path / "logo.png")])["pixel_values"]
    torch.testing.assert_close(model.processor()(["<image> hi"], images=[image])["pixel_values"], from_file)
    plain = zoo.build("tiny-clip-mlp-qwen2")  # one tile: the tower's own preprocessor
    clip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    ours = plain.processor()(["<image> hi"], images=[image])["pixel_values"]
    torch.testing.assert_close(ours, clip(images=[image], return_tensors="pt")["pixel_values"], rtol=0, atol=1e-5)


def test_image_sizes_from_other_clients_are_taken_or_refused_clearly(model):
    batch = model.processor()(["<image> hi"], images=_images((30, 70)))
    with torch.no_grad():
        reference = model(**batch).logits
        as_list = model(**{**batch, "image_sizes": [[30, 70]]}).logits  # transformers takes a list too
    assert torch.equal(as_list, reference)
    bad = {
        "[[0, 70]]": torch.tensor([[0, 70]]),
        "[[30, 70, 3]]": torch.tensor([[30, 70, 3]]),
        "[[-1, 70]]": [[-1, 70]],
        "'30x70'": "30x70",
    }
    for shown, sizes in bad.items():
        with pytest.raises(ZooError, match=r"image_sizes = .*expected \[images, 2\]") as caught:
            model(**{**batch, "image_sizes": sizes})
        assert shown.replace(" ", "") in str(caught.value).replace(" ", "")


def test_batched_left_padded_generation_equals_one_by_one_and_right_padding_is_refused(model):
    processor = model.processor()
    wide, tall, dot, strip = _images((30, 70), (90, 40), (1, 1), (5, 300))
    prompts = ["<image> what?", "a text-only row", "<image><image> two", "x <image>"]
    groups = [[wide], [], [tall, dot], [strip]]
    options = {"max_new_tokens": 4, "do_sample": False}
    alone = []
    for prompt, images in zip(prompts, groups):
        single = processor([prompt], images=images)
        alone.append(model.generate(**single, **options)[0, single["input_ids"].shape[1] :].tolist())
    batch = processor(prompts, images=groups, padding_side="left")
    together = model.generate(**batch, **options)[:, batch["input_ids"].shape[1] :].tolist()
    assert together == alone and len({tuple(a) for a in alone}) > 1
    right = processor(prompts, images=groups, padding_side="right")
    with pytest.raises(ZooError, match=r"rows \[0, 1, 3\] are right-padded.*padding_side=.left."):
        model.generate(**right, **options)


# -- training data ----------------------------------------------------------------------------------
def test_max_length_below_the_largest_image_is_a_config_error_naming_data_max_length(model, tmp_path):
    from zoo.train.data import LlavaDataset

    _images((64, 64))[0].save(tmp_path / "square.png")
    records = [{"id": "a", "image": "square.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "a square"}]}]  # fmt: skip
    most = model.anyres.max_tokens  # a 64x64 image: 16 + 8 * 8 + 8
    assert most == model.image_tokens_for(64, 64) == 88
    with pytest.raises(ConfigError, match=r"data\.max_length = 60 .* 88 positions .*64x64.*at least 88"):
        LlavaDataset(records, model, image_folder=tmp_path, max_length=60)
    item = LlavaDataset(records, model, image_folder=tmp_path, max_length=120)[0]
    assert item["image_sizes"].tolist() == [[64, 64]] and int((item["labels"] != -100).sum()) > 0


def test_truncation_at_every_length_keeps_whole_images_of_size_dependent_counts(model, tmp_path):
    from zoo.train.data import LlavaDataset

    sizes = [(90, 40), (1, 1), (30, 70)]  # 66, 36 and 60 positions
    for i, size in enumerate(sizes):
        _images(size)[0].save(tmp_path / f"{i}.png")
    record = {"id": "three", "image": [f"{i}.png" for i in range(3)], "conversations": [
        {"from": "human", "value": "First <image> then <image> and <image>: which is widest?"},
        {"from": "gpt", "value": "the last one"}]}  # fmt: skip
    counts = [model.image_tokens_for(*size) for size in sizes]
    full = LlavaDataset([record], model, image_folder=tmp_path)[0]
    kept_seen = set()
    for max_length in range(model.anyres.max_tokens, len(full["input_ids"]) + 1, 3):
        item = LlavaDataset([record], model, image_folder=tmp_path, max_length=max_length)[0]
        kept = item["image_sizes"].shape[0]
        kept_seen.add(kept)
        assert item["image_sizes"].tolist() == [list(s) for s in sizes[:kept]]
        assert int((item["input_ids"] == model.image_token_id).sum()) == sum(counts[:kept])
        assert torch.equal(item["input_ids"], full["input_ids"][: len(item["input_ids"])])
        with torch.no_grad():  # the runtime agrees with every truncated sample
            assert model(**DataCollator.from_model(model)([item])).logits.shape[1] == len(item["input_ids"])
    assert kept_seen == {0, 1, 2, 3}  # 0: the template text before the first image leaves it no room


def test_zoo_eval_json_on_an_any_res_checkpoint_with_and_without_blank_images(model, tmp_path, capsys):
    """Blank images keep each image's size, so its count: both runs score every record."""
    from zoo.cli.app import main

    records = []
    for i, size in enumerate([(30, 70), (90, 40), (1, 1)]):
        _images(size)[0].save(tmp_path / f"{i}.png")
        records.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "a thing"}]})  # fmt: skip
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    zoo.save(model, tmp_path / "ckpt")
    results = []
    for blank in ([], ["--blank-images"]):
        argv = [
            "eval",
            str(tmp_path / "ckpt"),
            "--data",
            str(tmp_path / "eval.jsonl"),
            "--json",
            "--max-new-tokens",
            "2",
        ]
        assert main([*argv, *blank]) == 0
        results.append(json.loads(capsys.readouterr().out))
    for result, blank in zip(results, (False, True)):
        assert result["n"] == 3 and result["blank_images"] is blank and 0 <= result["accuracy"] <= 1
        assert result["loss"] == result["loss"] > 0  # scored, not NaN
    assert results[0]["loss"] != results[1]["loss"]  # the images were replaced, not dropped


# -- malformed LLaVA-NeXT directories ---------------------------------------------------------------
@pytest.fixture(scope="module")
def next_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "next"
    _write_llava_next(path)
    return path


def _edit(config: dict, key: str, value: object) -> None:
    owner = config
    *parents, leaf = key.split(".")
    for part in parents:
        owner = owner[part]
    if value is _DELETE:
        del owner[leaf]
    else:
        owner[leaf] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("image_grid_pinpoints", _DELETE, "image_grid_pinpoints is not set in config.json"),
        ("image_grid_pinpoints", None, "image_grid_pinpoints is not set in config.json"),
        ("image_grid_pinpoints", [32, 64], "image_grid_pinpoints[0] = 32"),
        ("image_grid_pinpoints", [[33, 64]], "image_grid_pinpoints[0] = [33, 64]"),
        ("image_grid_pinpoints", [[100000, 100000]], "image_grid_pinpoints[0] = [100000, 100000]"),
        ("image_grid_pinpoints", [[65536, 65536]], "one image becomes 67117072 tokens"),  # the context bound
        ("image_grid_pinpoints", "[[32, 64]]", "image_grid_pinpoints"),
        ("vision_feature_select_strategy", "full", "vision_feature_select_strategy = 'full'"),
        ("vision_feature_select_strategy", "cls", "vision_feature_select_strategy"),
        ("vision_feature_layer", [-2, -1], "vision_feature_layer = [-2, -1]"),
        ("vision_feature_layer", "-2", "vision_feature_layer"),
        ("text_config.model_type", "evil_remote", "text_config.model_type = 'evil_remote'"),
        ("text_config.model_type", "mamba", "text_config"),
        ("image_token_index", -1, "image_token_index = -1"),
    ],
)  # fmt: skip
def test_malformed_llava_next_config_is_one_clear_error_naming_the_field(next_dir, tmp_path, key, value, words):
    from zoo.interop.llava import from_hf_llava

    target = tmp_path / "next"
    shutil.copytree(next_dir, target)
    config = json.loads((target / "config.json").read_text())
    _edit(config, key, value)
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(ZooError) as caught:
        from_hf_llava(target)
    message = str(caught.value)
    assert words in message and len(message) < 800 and "\n" not in message.strip()


def test_remote_code_named_by_a_sub_config_is_ignored_like_transformers_does(next_dir, tmp_path):
    from zoo.interop.llava import from_hf_llava, hf_llava_composition

    target = tmp_path / "next"
    shutil.copytree(next_dir, target)
    config = json.loads((target / "config.json").read_text())
    config["text_config"]["auto_map"] = {"AutoModelForCausalLM": "evil.EvilForCausalLM"}  # evil.py does not exist
    (target / "config.json").write_text(json.dumps(config))
    assert "auto_map" not in json.dumps(hf_llava_composition(target))
    assert type(from_hf_llava(target).lm.model).__name__ == "Qwen2ForCausalLM"


def test_missing_pinpoints_say_transformers_default_applies(next_dir, tmp_path):
    from zoo.interop.llava import from_hf_llava

    target = tmp_path / "next"
    shutil.copytree(next_dir, target)
    config = json.loads((target / "config.json").read_text())
    del config["image_grid_pinpoints"]
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"not set in config\.json: transformers' default .*vision_config\.image_size = 32"
    ):
        from_hf_llava(target)


# -- reports ------------------------------------------------------------------------------------------
def test_demo_model_card_describes_any_res_tokens(model):
    from zoo.cli.demo_app import model_card

    card = model_card(model, "anyres")
    assert "; any-res 52..88 (32x64: 52, 64x32: 56, " in card and "tokens per image" in card and "{" not in card


def test_a_pinpoint_past_the_bound_names_the_bound():
    with pytest.raises(ConfigError, match=r"grid_pinpoints\[0\] = \[100000, 32\]: .*1\.\.65536"):
        zoo.plan({"model": {**ANYRES, "vision": {"name": "tiny-clip", "anyres": {"grid_pinpoints": [[100000, 32]]}}}})


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("image_grid_pinpoints", [[32, 64], [64, 32]], "image_grid_pinpoints = [[32, 64], [64, 32]] but config.json"),
        ("image_mean", [0.5, 0.5, 0.5], "image_mean = [0.5, 0.5, 0.5] but vision tower 'tiny-clip'"),
    ],
)
def test_an_image_processor_that_disagrees_with_the_model_is_refused(next_dir, tmp_path, field, value, words):
    """transformers' processor counts and normalises with processor_config.json; zoo's with the model's own
    layout and the tower's normalisation: a directory where they differ would be imported silently wrong."""
    from zoo.interop.llava import from_hf_llava

    target = tmp_path / "next"
    shutil.copytree(next_dir, target)
    settings = json.loads((target / "processor_config.json").read_text())
    settings["image_processor"][field] = value
    (target / "processor_config.json").write_text(json.dumps(settings))
    with pytest.raises(CheckpointError) as caught:
        from_hf_llava(target)
    assert words in str(caught.value) and "processor_config.json" in str(caught.value)


@pytest.mark.parametrize("projector", ["resampler", "perceiver"])
def test_any_res_with_a_learned_query_projector_is_a_contract_error_naming_it(projector):
    config = {"vision": {"name": "tiny-clip", "anyres": True}, "projector": {"name": projector},
              "lm": {"name": "tiny-qwen2"}}  # fmt: skip
    with pytest.raises(ContractError, match=rf"projector '{projector}'.*learned queries.*mlp2x-gelu"):
        zoo.build(config, meta=True)
