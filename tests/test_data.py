"""LLaVA conversation data: records, labels on assistant turns only, truncation, bad records, collator."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

import zoo
from zoo.core.multimodal import IGNORE_INDEX
from zoo.errors import ConfigError
from zoo.train.data import BLANK_RGB, DataCollator, DataConfig, DataError, LlavaDataset, parse_data_config, read_records

ANSWERS = ["It is a red square.", "Two.", "Top left, near the edge."]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return zoo.build("tiny-clip-mlp-qwen2").eval()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name, colour in (("red.png", (255, 0, 0)), ("blue.png", (0, 0, 255))):
        Image.new("RGB", (40, 30), colour).save(tmp_path / name)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    return tmp_path


def multi_turn(images=("red.png",), ident="mt") -> dict:
    return {
        "id": ident,
        "image": list(images),
        "conversations": [
            {"from": "human", "value": "What is in the picture?"},
            {"from": "gpt", "value": ANSWERS[0]},
            {"from": "human", "value": "How many sides... no, how many images?"},
            {"from": "gpt", "value": ANSWERS[1]},
            {"from": "human", "value": "Where is it?"},
            {"from": "gpt", "value": ANSWERS[2]},
        ],
    }


def supervised_segments(labels: torch.Tensor) -> list[list[int]]:
    segments: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in labels.tolist():
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                segments.append([])
            segments[-1].append(label)
        previous = label
    return segments


def test_supervised_tokens_decode_to_exactly_the_assistant_turns(model, folder):
    item = LlavaDataset([multi_turn()], model, image_folder=folder)[0]
    tokenizer = model.lm.tokenizer
    decoded = [tokenizer.decode(s, skip_special_tokens=False) for s in supervised_segments(item["labels"])]
    assert decoded == [answer + tokenizer.eos_token for answer in ANSWERS]  # the end-of-turn marker is learnt too
    # every supervised position holds its own input id (labels are not shifted here; the LM shifts)
    supervised = item["labels"] != IGNORE_INDEX
    assert torch.equal(item["labels"][supervised], item["input_ids"][supervised])


def test_placeholder_is_prepended_and_image_positions_are_ignored(model, folder):
    item = LlavaDataset([multi_turn(("red.png", "blue.png"))], model, image_folder=folder)[0]
    is_image = item["input_ids"] == model.image_token_id
    assert int(is_image.sum()) == 2 * model.tokens_per_image
    assert (item["labels"][is_image] == IGNORE_INDEX).all()
    assert item["pixel_values"].shape == (2, 3, 32, 32)
    # both placeholders sit in the first human turn, before its text (as LLaVA puts them)
    first_text = model.lm.tokenizer("What", add_special_tokens=False)["input_ids"][0]
    assert is_image.nonzero().max() < (item["input_ids"] == first_text).nonzero().min()


def test_truncation_never_splits_an_image(model, folder):
    record = {
        "id": "two",
        "image": ["red.png", "blue.png"],
        "conversations": [
            {"from": "human", "value": "Compare <image> with this one: <image> please."},
            {"from": "gpt", "value": "The first is red, the second blue."},
        ],
    }
    full = LlavaDataset([record], model, image_folder=folder)[0]
    per_image = model.tokens_per_image
    seen_counts = set()
    for max_length in range(per_image, len(full["input_ids"]) + 2):  # shorter: a ConfigError (test below)
        item = LlavaDataset([record], model, image_folder=folder, max_length=max_length)[0]
        images = item["pixel_values"].shape[0]
        seen_counts.add(images)
        assert len(item["input_ids"]) <= max_length
        assert int((item["input_ids"] == model.image_token_id).sum()) == images * per_image
        assert torch.equal(item["input_ids"], full["input_ids"][: len(item["input_ids"])])
    assert seen_counts == {0, 1, 2}
    with pytest.raises(
        ConfigError, match=rf"data\.max_length = {per_image - 1} is less than the {per_image} positions"
    ):
        LlavaDataset([record], model, image_folder=folder, max_length=per_image - 1)


BAD_RECORDS = {
    "missing image": ({"image": "nowhere.png", "conversations": [{"from": "human", "value": "<image> hi"},
                                                                 {"from": "gpt", "value": "ok"}]}, "nowhere.png"),
    "no conversations": ({"image": "red.png", "conversations": []}, "no conversations"),
    "placeholder mismatch": ({"image": "red.png", "conversations": [{"from": "human", "value": "<image> <image>"},
                                                                    {"from": "gpt", "value": "ok"}]}, "2 '<image>'"),
    "non-text turn": ({"conversations": [{"from": "human", "value": {"type": "image_url"}},
                                         {"from": "gpt", "value": "ok"}]}, "not text"),
    "unknown role": ({"conversations": [{"from": "humna", "value": "hi"}, {"from": "gpt", "value": "ok"}]}, "human"),
    "corrupt image": ({"image": "corrupt.png", "conversations": [{"from": "human", "value": "hi"},
                                                                 {"from": "gpt", "value": "ok"}]}, "corrupt.png"),
}  # fmt: skip


def write_data(folder: Path, bad: dict, suffix: str) -> Path:
    records = [multi_turn(ident="good0"), {**bad, "id": "bad"}, multi_turn(("blue.png",), ident="good2")]
    path = folder / f"data{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(records), encoding="utf-8")
    else:
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_record_names_file_index_and_id_or_is_skipped(model, folder, case):
    bad, detail = BAD_RECORDS[case]
    path = write_data(folder, bad, ".jsonl")
    lazy = case == "corrupt image"  # found only when the image is decoded, in __getitem__
    with pytest.raises(DataError) as caught:
        dataset = LlavaDataset(path, model)
        for i in range(len(dataset)):
            dataset[i]
    message = str(caught.value)
    assert str(path) in message and "record 1" in message and "'bad'" in message and detail in message

    skipping = LlavaDataset(path, model, on_error="skip")
    if lazy:
        assert len(skipping) == 3
        assert torch.equal(skipping[1]["input_ids"], skipping[2]["input_ids"])  # the next record stands in
    else:
        assert len(skipping) == 2 and len(skipping.skipped) == 1
        assert "record 1" in skipping.skipped[0]
        assert [c.id for c in skipping.conversations] == ["good0", "good2"]
        assert [c.index for c in skipping.conversations] == [0, 2]  # indices stay those of the file


def test_read_records_skips_and_reports_the_count(folder, caplog):
    path = write_data(folder, BAD_RECORDS["no conversations"][0], ".json")
    with pytest.raises(DataError, match=r"data\.json: record 1 \(id 'bad'\): has no conversations"):
        read_records(path)
    with caplog.at_level(logging.WARNING):
        records = read_records(path, on_error="skip")
    assert [r["id"] for r in records] == ["good0", "good2"] and len(records.skipped) == 1
    assert "skipped 1 bad records" in caplog.text


def test_json_and_jsonl_give_the_same_items(model, folder):
    json_items = LlavaDataset(write_data(folder, multi_turn(), ".json"), model)
    jsonl_items = LlavaDataset(write_data(folder, multi_turn(), ".jsonl"), model)
    assert len(json_items) == len(jsonl_items) == 3
    for i in range(3):
        for key in ("input_ids", "labels", "pixel_values"):
            assert torch.equal(json_items[i][key], jsonl_items[i][key])


def test_blank_images_keep_size_and_carry_no_content(model, folder):
    dataset = LlavaDataset([multi_turn(("red.png", "blue.png"))], model, image_folder=folder, blank_images=True)
    pixels = dataset[0]["pixel_values"]
    expected = model.vision.preprocessor([Image.new("RGB", (40, 30), BLANK_RGB)])[0]
    assert torch.equal(pixels[0], expected) and torch.equal(pixels[1], expected)


def test_modality_lengths_sign_images_and_text_only(model, folder):
    text_only = {"conversations": [{"from": "human", "value": "one two three"}, {"from": "gpt", "value": "four"}]}
    dataset = LlavaDataset([multi_turn(), text_only], model, image_folder=folder)
    assert dataset.lengths[1] == 4 and dataset.modality_lengths[1] == -4
    assert dataset.modality_lengths[0] == dataset.lengths[0] > model.tokens_per_image


def test_collated_batch_runs_through_forward_with_a_finite_loss(model, folder):
    text_only = {"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]}
    dataset = LlavaDataset([multi_turn(("red.png", "blue.png")), text_only, multi_turn()], model, image_folder=folder)
    items = [dataset[i] for i in range(3)]
    batch = DataCollator.from_model(model)(items)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "pixel_values"}
    assert batch["pixel_values"].shape[0] == 3
    lengths = [len(item["input_ids"]) for item in items]
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"][1, lengths[1] :] == IGNORE_INDEX).all()  # right padding is never supervised
    loss = model(**batch).loss
    assert torch.isfinite(loss) and loss.item() > 0

    left = DataCollator.from_model(model, padding_side="left")(items)
    assert torch.equal(left["input_ids"][1, -lengths[1] :], items[1]["input_ids"])
    assert torch.allclose(model(**left).loss, loss, atol=1e-4)  # same tokens, same loss whichever side pads


def test_data_config_resolves_paths_and_names_bad_keys(tmp_path):
    config = parse_data_config({"train": "d/train.json", "eval": "/abs/eval.json", "max_length": 64},
                               source="run.yaml", base_dir=tmp_path)  # fmt: skip
    assert config == DataConfig(train=str(tmp_path / "d/train.json"), eval="/abs/eval.json", max_length=64)
    assert config.image_folder_for(config.train) == tmp_path / "d"
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown key 'data\.max_len'; did you mean 'max_length'"):
        parse_data_config({"train": "t.json", "max_len": 3}, source="run.yaml", base_dir=None)
    with pytest.raises(ConfigError, match=r"data\.on_error = 'ignore' is not valid; .*'error'.*'skip'"):
        parse_data_config({"train": "t.json", "on_error": "ignore"}, source="run.yaml", base_dir=None)
    with pytest.raises(ConfigError, match=r"missing required key 'data\.train'"):
        parse_data_config({"eval": "e.json"}, source="run.yaml", base_dir=None)
    with pytest.raises(ConfigError, match=r"data\.max_length = 0"):
        parse_data_config({"train": "t.json", "max_length": 0}, source="run.yaml", base_dir=None)
