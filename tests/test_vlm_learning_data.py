"""``zoo data from-vlm-learning``: the VLM-learning reference's data files -> LLaVA JSON -> the reference's ids.

The reference's files are written here by its own steps, re-stated from its code
(``dataprocess/process_image.py`` of WatchTower-Liu/VLM-learning, as first copied into
xinyanghuang7/Basic-Visual-Language-Model): ``process`` for AI Challenger (a fixed Chinese prompt drawn at
random, the image's five captions) and ``process_coco`` for LLaVA's complex_reasoning_77k (the first
question with ``<image>`` -> ``<|extra_0|>`` and newlines removed, the first answer). Its dataset
(``ImageCaptionDataset.__getitem__``: Qwen-1's ``make_context`` with the system prompt
"你是一位图像理解助手。", the prompt and the answer tokenized apart) and collator (``data_collate``: the answer
plus ``eod_id`` supervised, ``black_token_length`` image positions where its ``MQWenModel`` splices the
image in place of ``<|extra_0|>``) are re-stated below as well; zoo must train on the same ids and labels.
"""

from __future__ import annotations

import base64
import json
import random
import unicodedata
from pathlib import Path

import pytest
import torch
import yaml
from _qwen1_reference import write_qwen1_checkpoint
from PIL import Image

import zoo
from zoo.cli.app import main
from zoo.core.config import load_model_config
from zoo.core.records import DataError
from zoo.errors import ZooError
from zoo.interop.vlm_learning_data import convert_vlm_learning_data
from zoo.train.data import DataCollator, LlavaDataset, parse_data_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vlm-learning" / "train.yaml"
SYSTEM = "你是一位图像理解助手。"  # ImageCaptionDataset: make_context(..., system=...)
ALI_PROMPTS = ("这副图像描述了什么？<|extra_0|>", "<|extra_0|>这幅图像中有什么？")  # process(): its fixed prompts
# Qwen-1's tokenization_qwen.py: PAT_STR and the special tokens that follow the BPE ranks
QWEN1_PAT_STR = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN1_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", *(f"<|extra_{i}|>" for i in range(205)))

AI_CHALLENGER = [  # caption_train_annotations_20170902.json records
    {"url": "http://example/1.jpg", "image_id": "8f00f3d0f1008e085ab660e70dffced16a8259f6.jpg",
     "caption": ["一个穿着红色衣服的女人在街上走", "街道上有一个女人", "女人在走路", "红衣女子", "一位行人"]},
    {"url": "http://example/2.jpg", "image_id": "b96ff46ea2b3a8d1a4a8ed7e6bb8bb1c2d0a4a8b.jpg",
     "caption": ["两个男人在草地上踢足球", "草地上的足球比赛", "男人们在踢球", "绿色的草地", "运动"]},
    {"url": "http://example/3.jpg", "image_id": "0a9c1fd2b8e4d1f6a5c7e3b2d9f8a1c4e6b7d2f3.jpg",
     "caption": ["一只猫在沙发上睡觉", "沙发上的猫", "猫在休息", "一只白猫", "客厅里的猫"]},
]  # fmt: skip
COMPLEX_REASONING = [  # complex_reasoning_77k.json records (the reference keeps the first question/answer)
    {"id": "000000033471", "image": "000000033471.jpg", "conversations": [
        {"from": "human", "value": "What are the colors of the bus in the image?\n<image>"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
    {"id": "000000052846", "image": "000000052846.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat might be the reason for the cat to sit on the laptop?"},
        {"from": "gpt", "value": "The cat may sit on the laptop because it is warm, 2 reasons: heat and attention."}]},
]  # fmt: skip


# -- the reference's steps, re-stated from its code ---------------------------------------------------
def reference_process(caption_data, image_path, rng, start_id=0):
    """dataprocess/process_image.py ``process`` (AI Challenger); ``rng.random()`` stands for ``np.random.random()``."""
    image_map, captions = {}, {}
    for idx, d in enumerate(caption_data):
        image_name, caption = d["image_id"], d["caption"]
        image_map[image_name] = {"iamge_file": image_name, "ID": idx + start_id, "path": image_path}
        if rng.random() > 0.5:
            captions[idx + start_id] = {"q": "这副图像描述了什么？<|extra_0|>", "a": caption}
        else:
            captions[idx + start_id] = {"q": "<|extra_0|>这幅图像中有什么？", "a": caption}
    return image_map, captions


def reference_process_coco(caption_data, image_path, start_id=0):
    """dataprocess/process_image.py ``process_coco`` (complex_reasoning_77k)."""
    image_map, captions = {}, {}
    for idx, d in enumerate(caption_data):
        image_name, caption = d["image"], d["conversations"]
        answer = caption[1]["value"]
        question = caption[0]["value"].replace("<image>", "<|extra_0|>").replace("\n", "")
        image_map[image_name] = {"iamge_file": image_name, "ID": idx + start_id, "path": image_path}
        captions[idx + start_id] = {"q": question, "a": [answer]}
    return image_map, captions


def reference_make_context(query: str, system: str) -> str:
    """qwen_generation_utils.make_context(tokenizer, query, history=[], system=system): its raw text (chatml)."""
    im_start, im_end = "<|im_start|>", "<|im_end|>"
    raw_text = f"{im_start}system\n{system}{im_end}"
    raw_text += f"\n{im_start}user\n{query}{im_end}\n{im_start}assistant\n"
    return raw_text


def reference_item(tokenize, captions: dict, image_id: int, select_idx: int) -> tuple[list[int], int]:
    """ImageCaptionDataset.__getitem__ (text part): prompt and answer tokenized apart, then concatenated."""
    answers, prompt = captions[str(image_id)]["a"], captions[str(image_id)]["q"]
    prompt_raw = reference_make_context(prompt, SYSTEM)
    choice_captions = tokenize(prompt_raw)
    answer = tokenize(answers[select_idx])
    return choice_captions + answer, len(answer)


def reference_collate(example, eod_id: int, black_token_length: int):
    """dataset/image_caption_dataset.py ``data_collate`` (text part), as written."""
    captions, labels = [], []
    max_length = max(len(e[0]) for e in example) + 1
    for caption, length in example:
        length = length + 1
        caption = caption + [eod_id]  # noqa: RUF005  (as written)
        caption_labels = (
            [-100] * (black_token_length + (len(caption) - length) - 1)
            + caption[-length:]
            + [-100] * (max_length - len(caption))
        )
        captions.append(torch.tensor(caption + [eod_id] * (max_length - len(caption))))
        labels.append(torch.tensor(caption_labels))
    return torch.stack(captions).long(), torch.stack(labels).long()


def reference_expand(ids: list[int], image_id: int, image_positions: int) -> list[int]:
    """MQWenModel.forward: the image's features take the place of its one ``<|extra_0|>`` (shown as that id)."""
    at = ids.index(image_id)
    return ids[:at] + [image_id] * image_positions + ids[at + 1 :]


def qwen1_tiktoken(directory: Path):
    """QWenTokenizer.__call__ over ``qwen.tiktoken``: NFC, then tiktoken with every special token allowed."""
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {}
    for line in (directory / "qwen.tiktoken").read_bytes().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    specials = {token: len(ranks) + i for i, token in enumerate(QWEN1_SPECIALS)}
    encoding = tiktoken.Encoding("qwen1", pat_str=QWEN1_PAT_STR, mergeable_ranks=ranks, special_tokens=specials)
    return lambda text: encoding.encode(unicodedata.normalize("NFC", text), allowed_special="all"), specials


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_files(tmp_path_factory):
    """The reference's image_map_b.json and captions_b.json over real image folders, as process_image.py's main."""
    root = tmp_path_factory.mktemp("vlm_learning_data")
    ali_dir, coco_dir = root / "ai_challenger" / "caption_train_images_20170902", root / "coco" / "train2017"
    for folder, records, key in ((ali_dir, AI_CHALLENGER, "image_id"), (coco_dir, COMPLEX_REASONING, "image")):
        folder.mkdir(parents=True)
        for number, record in enumerate(records):
            Image.new("RGB", (40 + 8 * number, 30), (30 * number, 90, 160)).save(folder / record[key], format="JPEG")
    rng = random.Random(3)  # draws both fixed prompts for these three images
    image_map_ali, captions_ali = reference_process(AI_CHALLENGER[:50000], f"{ali_dir}/", rng)
    image_map_chat, captions_chat = reference_process_coco(COMPLEX_REASONING, f"{coco_dir}/", len(image_map_ali))
    image_map = {**image_map_ali, **image_map_chat}
    captions = {**captions_ali, **captions_chat}
    (root / "image_map_b.json").write_text(json.dumps(image_map, ensure_ascii=False), encoding="utf-8")
    (root / "captions_b.json").write_text(json.dumps(captions, ensure_ascii=False), encoding="utf-8")
    assert {c["q"] for c in captions_ali.values()} == set(ALI_PROMPTS)
    return {"root": root, "image_map": root / "image_map_b.json", "captions": root / "captions_b.json",
            "ali": ali_dir, "coco": coco_dir}  # fmt: skip


@pytest.fixture(scope="module")
def qwen1_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen1") / "Qwen-tiny"
    write_qwen1_checkpoint(directory, seed=1)
    return directory


def recipe_data(train: Path):
    """The example recipe's data section (system prompt, end token, max_length) pointed at ``train``."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))["data"]
    return parse_data_config({**data, "train": str(train)}, source=str(EXAMPLE))


# -- the must-show: zoo trains on the reference's ids and labels ---------------------------------------
@pytest.mark.parametrize("tokenizer", ["tiny", "qwen1-tiktoken"])
@pytest.mark.parametrize("captions_mode", ["one", "all"])
def test_zoo_trains_on_the_ids_and_labels_of_the_reference_collator(
    reference_files, qwen1_dir, tmp_path, tokenizer, captions_mode
):
    out = tmp_path / "converted"
    assert main(["data", "from-vlm-learning", str(reference_files["image_map"]), str(reference_files["captions"]),
                 str(out), "--captions", captions_mode, "--seed", "5"]) == 0  # fmt: skip
    data = recipe_data(out / "train.json")
    assert (data.system_prompt, data.end_token) == (SYSTEM, "<|endoftext|>")

    composition = load_model_config("tiny-vlm-learning-qwen1").to_dict()
    if tokenizer == "qwen1-tiktoken":  # the reference's own tokenizer: Qwen-1's tiktoken file
        composition["model"]["lm"]["checkpoint"] = str(qwen1_dir)
    model = zoo.build(composition)
    model.system_prompt, model.end_token = data.system_prompt, data.end_token  # what zoo train sets
    dataset = LlavaDataset(data.train, model, image_folder=data.image_folder_for(data.train),
                           max_length=data.max_length, on_error=data.on_error)  # fmt: skip
    tok = model.lm.tokenizer
    if tokenizer == "qwen1-tiktoken":
        tokenize, specials = qwen1_tiktoken(qwen1_dir)
        eod_id, image_id = specials["<|endoftext|>"], specials["<|extra_0|>"]
        assert (tok.convert_tokens_to_ids("<|endoftext|>"), model.image_token_id) == (eod_id, image_id)
    else:
        tokenize = lambda text: tok(text)["input_ids"]  # noqa: E731  (QWenTokenizer.__call__ adds no specials either)
        eod_id, image_id = tok.convert_tokens_to_ids("<|endoftext|>"), model.image_token_id
    positions = model.contract.image_tokens  # the reference's black_token_length (256 for CLIP ViT-L/14 at 224)

    captions = json.loads(reference_files["captions"].read_text(encoding="utf-8"))
    image_map = json.loads(reference_files["image_map"].read_text(encoding="utf-8"))
    records = json.loads((out / "train.json").read_text(encoding="utf-8"))
    expected_records = len(image_map) if captions_mode == "one" else sum(len(c["a"]) for c in captions.values())
    assert len(records) == len(dataset) == expected_records

    examples = []
    for index, record in enumerate(records):
        ident = int(record["id"].split("-")[0])
        answers = captions[str(ident)]["a"]
        select = answers.index(record["conversations"][1]["value"])  # the caption this record holds
        if captions_mode == "all":
            assert record["id"] == (f"{ident}-{select}" if len(answers) > 1 else str(ident))
        entry = next(e for e in image_map.values() if e["ID"] == ident)
        assert record["image"] == entry["path"] + entry["iamge_file"]  # the file the reference opens
        examples.append(reference_item(tokenize, captions, ident, select))
        item = dataset[index]
        assert item["pixel_values"].shape[0] == 1

    ref_ids, ref_labels = reference_collate(examples, eod_id, positions)
    for index, (caption, _) in enumerate(examples):
        item = dataset[index]
        real = len(caption) + 1  # the answer's eod; the rest of the row is padding
        assert item["input_ids"].tolist() == reference_expand(ref_ids[index, :real].tolist(), image_id, positions)
        assert item["labels"].tolist() == ref_labels[index, : positions - 1 + real].tolist()
        supervised = [t for t in item["labels"].tolist() if t != -100]  # the answer and <|endoftext|>, no <|im_end|>
        assert supervised == [*tokenize(records[index]["conversations"][1]["value"]), eod_id]

    # the padded batch zoo's collator builds: the reference's labels, its ids where not padding
    batch = DataCollator.from_model(model)([dataset[i] for i in range(len(dataset))])
    assert batch["labels"].tolist() == ref_labels.tolist()
    expanded = [reference_expand(row.tolist(), image_id, positions) for row in ref_ids]
    for row, mask, ref_row in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), expanded):
        assert [t for t, m in zip(row, mask) if m] == ref_row[: sum(mask)]


def test_the_first_question_and_answer_and_the_fixed_prompts(reference_files, tmp_path):
    summary = convert_vlm_learning_data(reference_files["image_map"], reference_files["captions"], tmp_path / "o")
    records = {r["id"]: r for r in json.loads((tmp_path / "o" / "train.json").read_text(encoding="utf-8"))}
    bus = records["3"]  # complex_reasoning_77k's first record: its first turn pair only, newline removed
    assert bus["conversations"] == [
        {"from": "human", "value": "What are the colors of the bus in the image?<image>"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
    ]
    assert (
        records["4"]["conversations"][0]["value"] == "<image>What might be the reason for the cat to sit on the laptop?"
    )
    ali = [records[str(i)]["conversations"] for i in range(3)]
    assert {turns[0]["value"].replace("<image>", "<|extra_0|>") for turns in ali} == set(ALI_PROMPTS)
    assert all(turns[1]["value"] in AI_CHALLENGER[i]["caption"] for i, turns in enumerate(ali))
    assert summary["records"] == summary["images"] == 5 and summary["skipped"] == summary["unused_captions"] == 0
    assert summary["recipe"] == {"model.image_token": "<|extra_0|>", "data.system_prompt": SYSTEM,
                                 "data.end_token": "<|endoftext|>"}  # fmt: skip
    again = convert_vlm_learning_data(reference_files["image_map"], reference_files["captions"], tmp_path / "p")
    assert (tmp_path / "p" / "train.json").read_bytes() == (tmp_path / "o" / "train.json").read_bytes()  # seeded
    assert again["records"] == 5


# -- bad records, folders, overwriting ----------------------------------------------------------------
def _write_reference(root: Path, image_map: dict, captions: dict) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "image_map_b.json").write_text(json.dumps(image_map, ensure_ascii=False), encoding="utf-8")
    (root / "captions_b.json").write_text(json.dumps(captions, ensure_ascii=False), encoding="utf-8")
    return root / "image_map_b.json", root / "captions_b.json"


GOOD = {"iamge_file": "a.jpg", "ID": 0, "path": "/data/coco/"}


@pytest.mark.parametrize(
    ("entry", "record", "problem"),
    [
        ({"ID": 0, "path": "/d/"}, None, r"image_map_b.json: entry 1 \(key 'bad.jpg'\): 'iamge_file' \(or 'image_file'\) = None"),
        ({**GOOD, "ID": "1"}, None, r"image_map_b.json: entry 1 \(key 'bad.jpg'\): 'ID' = '1': expected the integer"),
        ({**GOOD, "ID": 7}, None, r"captions_b.json: record '7', named by .*image_map_b.json entry 1: no such record"),
        ({**GOOD, "ID": 1}, {"q": "What is it?", "a": ["x"]}, r"captions_b.json: record '1' \(entry 1\), named by .* entry 1: 'q' holds 0 '<\|extra_0\|>'"),
        ({**GOOD, "ID": 1}, {"q": "<|extra_0|>a<|extra_0|>", "a": ["x"]}, r"'q' holds 2 '<\|extra_0\|>'"),
        ({**GOOD, "ID": 1}, {"q": "<|extra_0|>", "a": []}, r"record '1' \(entry 1\).*'a' = \[\]: expected a non-empty list"),
        ({**GOOD, "ID": 1}, {"q": "<|extra_0|>", "a": ["see <image>"]}, r"an answer holds '<image>'"),
    ],
)  # fmt: skip
def test_bad_records_are_named_by_file_and_index(tmp_path, entry, record, problem):
    captions = {"0": {"q": "<|extra_0|>What?", "a": ["fine"]}}
    if record is not None:
        captions["1"] = record
    image_map, captions_file = _write_reference(tmp_path / "ref", {"a.jpg": GOOD, "bad.jpg": entry}, captions)
    with pytest.raises(DataError, match=problem):
        convert_vlm_learning_data(image_map, captions_file, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written on error
    summary = convert_vlm_learning_data(image_map, captions_file, tmp_path / "out", on_error="skip")
    assert (summary["records"], summary["skipped"]) == (1, 1)
    assert summary["problems"][0].startswith(str(tmp_path / "ref"))
    assert json.loads((tmp_path / "out" / "train.json").read_text())[0]["id"] == "0"


def test_cli_errors_are_one_line(tmp_path, capsys):
    image_map, captions = _write_reference(
        tmp_path / "ref", {"a.jpg": {**GOOD, "ID": 3}}, {"0": {"q": "<|extra_0|>", "a": ["x"]}}
    )
    assert main(["data", "from-vlm-learning", str(image_map), str(captions), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "record '3'" in err and "no such record" in err
    (tmp_path / "list.json").write_text("[]")
    assert main(["data", "from-vlm-learning", str(tmp_path / "list.json"), str(captions), str(tmp_path / "o")]) == 2
    assert "is a JSON list; the reference's process_image.py writes an object" in capsys.readouterr().err


def test_image_folders_move_with_image_path(reference_files, tmp_path):
    moved = {"ai": tmp_path / "moved-ali", "coco": tmp_path / "moved-coco"}
    paths = {f"{reference_files['ali']}": str(moved["ai"]), f"{reference_files['coco']}/": f"{moved['coco']}/"}
    convert_vlm_learning_data(
        reference_files["image_map"], reference_files["captions"], tmp_path / "o", image_paths=paths
    )
    images = [r["image"] for r in json.loads((tmp_path / "o" / "train.json").read_text(encoding="utf-8"))]
    assert {str(Path(i).parent) for i in images} == {str(moved["ai"]), str(moved["coco"])}
    assert images[0] == f"{moved['ai']}/{AI_CHALLENGER[0]['image_id']}"
    with pytest.raises(
        ZooError, match=r"--image-path '/nowhere'=\.\.\.: no entry of .* has that folder; its folders: '/"
    ):
        convert_vlm_learning_data(reference_files["image_map"], reference_files["captions"], tmp_path / "x",
                                  image_paths={"/nowhere": "/x"})  # fmt: skip
    assert main(["data", "from-vlm-learning", "a", "b", "c", "--captions", "some"]) == 2  # not a choice
    assert main(["data", "from-vlm-learning", str(reference_files["image_map"]), str(reference_files["captions"]),
                 str(tmp_path / "y"), "--image-path", "no-equals-sign"]) == 2  # fmt: skip


def test_output_is_atomic_and_refuses_foreign_folders(reference_files, tmp_path):
    args = (reference_files["image_map"], reference_files["captions"])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(
        ZooError,
        match=r"refusing to write a VLM-learning data conversion .* is not a VLM-learning data conversion zoo wrote",
    ):
        convert_vlm_learning_data(*args, foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    out = tmp_path / "out"
    convert_vlm_learning_data(*args, out)
    (out / "notes.txt").write_text("mine")  # a user's file beside the output
    convert_vlm_learning_data(*args, out, captions_mode="all")  # its own output: replaced, the user's file kept
    assert len(json.loads((out / "train.json").read_text(encoding="utf-8"))) == 3 * 5 + 2
    assert (out / "notes.txt").read_text() == "mine"
    convert_vlm_learning_data(*args, foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me" and (foreign / "train.json").is_file()


def test_answers_starting_with_a_line_break_are_counted(tmp_path):
    """The one case where zoo's whole-text tokenization can differ from the reference's prompt/answer split."""
    captions = {"0": {"q": "<|extra_0|>Q", "a": ["\nA cat."]}, "1": {"q": "<|extra_0|>Q", "a": ["  A dog."]}}
    image_map = {"a.jpg": {**GOOD, "ID": 0}, "b.jpg": {**GOOD, "iamge_file": "b.jpg", "ID": 1}}
    files = _write_reference(tmp_path / "ref", image_map, captions)
    summary = convert_vlm_learning_data(*files, tmp_path / "out")
    assert summary["answers_starting_with_a_line_break"] == 1  # leading spaces alone tokenize the same
