"""``data.end_token``: the token that ends (and is supervised after) every answer, recorded in the checkpoint.

Absent, an assistant turn ends as the template writes it (``<|im_end|>`` + newline for ChatML, the marker
supervised); ``<|endoftext|>`` (the VLM-learning reference's collator) replaces that end of turn in
training samples and in chat histories at inference, and generation stops at it.
"""

from __future__ import annotations

import json

import pytest

import zoo
from zoo.core.multimodal import IGNORE_INDEX
from zoo.errors import CheckpointError, ConfigError
from zoo.train.chat import ChatEncoder

END = "<|endoftext|>"
MESSAGES = [
    {"role": "user", "content": "<image>\nWhat colour?"},
    {"role": "assistant", "content": "red"},
    {"role": "user", "content": "And the shape?"},
    {"role": "assistant", "content": "a circle"},
]


def _encoder(model, end_token):
    return ChatEncoder(model.lm.tokenizer, image_token=model.image_token, tokens_per_image=2, system_prompt=None,
                       end_token=end_token)  # fmt: skip


def _supervised_runs(encoded) -> list[list[int]]:
    """The runs of consecutive supervised ids."""
    runs, current = [], []
    for label in encoded.labels:
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    return runs + ([current] if current else [])


def test_every_answer_ends_with_the_end_token_and_only_answers_and_it_are_supervised(tiny_model):
    tok = tiny_model.lm.tokenizer
    end_id, im_end = tok.convert_tokens_to_ids(END), tok.convert_tokens_to_ids("<|im_end|>")
    default = _encoder(tiny_model, None).encode(MESSAGES)
    ended = _encoder(tiny_model, END).encode(MESSAGES)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert _supervised_runs(default) == [[*ids("red"), im_end], [*ids("a circle"), im_end]]
    assert _supervised_runs(ended) == [[*ids("red"), end_id], [*ids("a circle"), end_id]]
    text = tok.decode(ended.input_ids)
    assert "red<|endoftext|><|im_start|>user\nAnd the shape?<|im_end|>\n" in text  # user turns keep the template's
    assert text.endswith("a circle<|endoftext|>")  # nothing after the last answer's end token
    assert _supervised_runs(_encoder(tiny_model, END).encode(MESSAGES, supervise="last")) == [
        [*ids("a circle"), end_id]
    ]
    tricky = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "end"}]  # also in "<|im_end|>"
    assert _encoder(tiny_model, END).render(tricky).endswith("<|im_start|>assistant\nend<|endoftext|>")


def test_an_end_token_the_tokenizer_lacks_is_refused_with_choices(tiny_model, tmp_path):
    from zoo.train.data import LlavaDataset, parse_data_config

    with pytest.raises(
        ConfigError, match=r"data\.end_token = '<\|eot_id\|>' is not a token of the tokenizer .*did you mean"
    ):
        _encoder(tiny_model, "<|eot_id|>")
    with pytest.raises(ConfigError, match=r"data\.end_token = 'endoftext' is not a token .*'<\|endoftext\|>'"):
        _encoder(tiny_model, "endoftext")
    with pytest.raises(ConfigError, match=r"run\.yaml: data\.end_token = 3 has the wrong type"):
        parse_data_config({"train": "t.json", "end_token": 3}, source="run.yaml")
    with pytest.raises(ConfigError, match=r"run\.yaml: data\.end_token = ' ' is not valid; expected a token"):
        parse_data_config({"train": "t.json", "end_token": " "}, source="run.yaml")
    records = tmp_path / "r.json"
    records.write_text(
        json.dumps([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}])
    )
    tiny_model.end_token = "<|eot_id|>"
    with pytest.raises(ConfigError, match=r"data\.end_token = '<\|eot_id\|>'"):
        LlavaDataset(str(records), tiny_model)  # the dataset zoo train builds refuses it before any step


def test_end_token_is_trained_recorded_and_stops_generation(tmp_path, monkeypatch):
    from test_train import write_colours

    from zoo.cli.app import main
    from zoo.train.data import LlavaDataset
    from zoo.train.run import train

    data = write_colours(tmp_path / "data", count=4)
    spec = {"model": {"vision": "tiny-clip", "projector": "mlp2x-gelu", "lm": "tiny-qwen2"},
            "data": {"train": str(data), "max_length": 128, "end_token": END},
            "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 2, "save_steps": 1}}  # fmt: skip
    final = train(spec).final_checkpoint
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["prompt"] == {"system": "default", "end_token": END}
    model = zoo.load(final)
    assert model.end_token == END
    end_id = model.lm.tokenizer.convert_tokens_to_ids(END)
    item = LlavaDataset(str(data), model, max_length=128)[0]  # eval samples render as training did
    assert item["input_ids"][-1] == item["labels"][-1] == end_id
    zoo.save(model, tmp_path / "again")
    assert zoo.load(tmp_path / "again").end_token == END  # load -> save -> load keeps it

    stops: list = []
    generate = type(model.lm.model).generate

    def spy(self, *args, **kwargs):
        stops.append(kwargs.get("eos_token_id"))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(type(model.lm.model), "generate", spy)
    image = str(data.parent / "images" / "0.png")
    assert main(["generate", str(final), "--prompt", "What colour?", "--image", image, "--max-new-tokens", "2"]) == 0
    im_end = model.lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stops and set(stops[-1]) == {im_end, end_id}  # the template's stop and the trained end token
    batch = model.processor()("<image>\nhi", images=[_image(image)])
    model.generate(**batch, max_new_tokens=1, eos_token_id=im_end)
    assert stops[-1] == im_end  # an explicit eos_token_id is taken as given


def _image(path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def test_a_chat_history_renders_answers_with_the_end_token(tiny_model):
    tiny_model.end_token = END
    text = tiny_model.processor().apply_chat_template(MESSAGES[:3])
    assert "<|im_start|>assistant\nred<|endoftext|><|im_start|>user\nAnd the shape?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    tiny_model.end_token = None
    assert "red<|im_end|>\n<|im_start|>user" in tiny_model.processor().apply_chat_template(MESSAGES[:3])


def test_a_manifest_with_a_bad_end_token_is_refused(tiny_model, tmp_path):
    tiny_model.end_token = END
    zoo.save(tiny_model, tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["prompt"]["end_token"] = ["<|endoftext|>"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"prompt\.end_token"):
        zoo.load(tmp_path / "ckpt")


def test_a_llava_export_stops_at_the_end_token(tiny_model):
    from zoo.interop.llava import to_hf_llava

    tok = tiny_model.lm.tokenizer
    end_id, im_end = tok.convert_tokens_to_ids(END), tok.convert_tokens_to_ids("<|im_end|>")
    plain = to_hf_llava(tiny_model).generation_config.eos_token_id
    assert end_id not in ([plain] if isinstance(plain, int) else list(plain or []))
    tiny_model.end_token = END
    assert set(to_hf_llava(tiny_model).generation_config.eos_token_id) == {im_end, end_id}
