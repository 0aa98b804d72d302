"""An LM directory's ``generation_config.json`` gives the generation defaults of zoo generate / chat / demo and
``model.generate``; every setting yields to an explicit option; checkpoints and Llava exports keep it."""

from __future__ import annotations

import copy
import io
import json
import shutil
import sys

import pytest
import torch
import yaml
from _qwen1_reference import write_qwen1_checkpoint
from transformers import Qwen2ForCausalLM

import zoo
from zoo.cli.app import main
from zoo.cli.chat import ChatSession
from zoo.core.builder import build_component
from zoo.errors import CheckpointError

SIX = ("max_new_tokens", "top_p", "top_k", "repetition_penalty", "do_sample", "eos_token_id")


@pytest.fixture(scope="module")
def qwen1(tmp_path_factory):
    """A Qwen-1 directory whose generation_config.json sets the six settings (and two keys zoo drops)."""
    from zoo_plugins._qwen1_tokenizer import ENDOFTEXT, IM_END, load_qwen1_tokenizer

    root = tmp_path_factory.mktemp("generation")
    directory = root / "Qwen-tiny-Chat"
    write_qwen1_checkpoint(directory, seed=2)
    tokenizer = load_qwen1_tokenizer(directory)
    endoftext, im_end = tokenizer.convert_tokens_to_ids([ENDOFTEXT, IM_END])
    settings = {"max_new_tokens": 5, "top_p": 0.7, "top_k": 3, "repetition_penalty": 1.3, "do_sample": True,
                "eos_token_id": endoftext}  # fmt: skip
    file = {**settings, "pad_token_id": endoftext, "chat_format": "chatml", "max_window_size": 6144}
    (directory / "generation_config.json").write_text(json.dumps(file), encoding="utf-8")
    composition = {"model": {"vision": {"name": "tiny-clip"}, "projector": {"name": "mlp2x-gelu"},
                             "lm": {"name": "tiny-qwen1", "checkpoint": str(directory)},
                             "dtype": "float32", "image_token": "<|extra_0|>"}}  # fmt: skip
    (root / "model.yaml").write_text(yaml.safe_dump(composition), encoding="utf-8")
    overrides = {"max_new_tokens": 2, "top_p": 0.5, "top_k": 7, "repetition_penalty": 1.05, "do_sample": False,
                 "eos_token_id": [im_end]}  # fmt: skip
    return {"dir": directory, "yaml": root / "model.yaml", "composition": composition, "settings": settings,
            "overrides": overrides, "endoftext": endoftext, "im_end": im_end}  # fmt: skip


@pytest.fixture
def calls(monkeypatch):
    """Every call of the LM's transformers ``generate``: the settings it runs with (its generation config
    updated by the call's keyword arguments, as transformers merges them)."""
    seen: list[dict] = []
    original = Qwen2ForCausalLM.generate

    def spy(self, *args, **kwargs):
        effective = copy.deepcopy(self.generation_config)
        effective.update(**{k: v for k, v in kwargs.items() if hasattr(effective, k)})
        seen.append({field: getattr(effective, field) for field in SIX})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Qwen2ForCausalLM, "generate", spy)
    return seen


def _settings(model) -> dict:
    return {field: getattr(model.lm.model.generation_config, field) for field in SIX}


def _flags(overrides: dict) -> list[str]:
    flags = []
    for field, value in overrides.items():
        if field == "do_sample":
            flags.append("--do-sample" if value else "--no-do-sample")
        elif field == "eos_token_id":
            flags += [arg for token in value for arg in ("--eos-token-id", str(token))]
        else:
            flags += [f"--{field.replace('_', '-')}", str(value)]
    return flags


def test_qwen1_directory_gives_the_lm_its_generation_defaults(qwen1):
    lm = build_component("lm", "tiny-qwen1", {"checkpoint": str(qwen1["dir"])})
    config = lm.model.generation_config
    assert {field: getattr(config, field) for field in SIX} == qwen1["settings"]
    # the reference stops at the generation config's eos only; <|im_end|> is no default stop when it names one
    assert config.eos_token_id == qwen1["endoftext"] and config.pad_token_id == qwen1["endoftext"]
    # keys that are no generation setting transformers knows are dropped (transformers itself keeps them)
    assert not hasattr(config, "chat_format") and not hasattr(config, "max_window_size")


def test_python_generate_uses_them_and_each_keyword_overrides(qwen1, calls):
    model = zoo.build(qwen1["yaml"])
    batch = model.processor()("Describe a cat.")
    torch.manual_seed(0)
    out = model.generate(**batch, eos_token_id=999)  # a stop that never comes: the budget decides the length
    assert out.shape[1] - batch["input_ids"].shape[1] == 5  # the generation config's max_new_tokens
    model.generate(**batch)
    assert calls[-1] == qwen1["settings"]
    model.generate(**batch, **qwen1["overrides"])
    assert calls[-1] == qwen1["overrides"]
    ChatSession(model).ask("Hello")  # the Python chat too
    assert calls[-1] == qwen1["settings"]


def test_zoo_generate_uses_them_and_each_option_overrides(qwen1, calls, capsys):
    assert main(["generate", str(qwen1["yaml"]), "--prompt", "Describe a cat.", "--json"]) == 0
    assert calls[-1] == qwen1["settings"]
    assert len(json.loads(capsys.readouterr().out)["tokens"]) <= 5
    for field, value in qwen1["overrides"].items():  # one at a time: the others stay the generation config's
        assert main(["generate", str(qwen1["yaml"]), "--prompt", "Describe a cat.", *_flags({field: value})]) == 0
        assert calls[-1] == {**qwen1["settings"], field: value}, field
    capsys.readouterr()
    assert (
        main(["generate", str(qwen1["yaml"]), "--prompt", "Describe a cat.", "--json", *_flags(qwen1["overrides"])])
        == 0
    )
    assert calls[-1] == qwen1["overrides"]
    assert len(json.loads(capsys.readouterr().out)["tokens"]) <= 2


def test_zoo_chat_uses_them_and_options_override(qwen1, calls, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n"))
    assert main(["chat", str(qwen1["yaml"])]) == 0
    assert calls[-1] == qwen1["settings"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n"))
    assert main(["chat", str(qwen1["yaml"]), *_flags(qwen1["overrides"])]) == 0
    assert calls[-1] == qwen1["overrides"]


def test_demo_reply_uses_them_and_its_sliders_override(qwen1, calls):
    from zoo.cli.demo_app import conversation, stream_reply

    model = zoo.build(qwen1["yaml"])
    chat = conversation([], {"text": "Hello", "files": []}, model.image_token)
    list(stream_reply(model, chat))
    assert calls[-1] == qwen1["settings"]
    list(stream_reply(model, chat, max_new_tokens=2, temperature=0.0, top_p=0.5))  # temperature 0: greedy
    assert calls[-1] == {**qwen1["settings"], "max_new_tokens": 2, "do_sample": False, "top_p": 0.5}


def test_lmms_eval_model_uses_them_and_task_kwargs_override(qwen1, calls):
    pytest.importorskip("lmms_eval")
    from lmms_eval.api.instance import Instance

    from zoo.interop.lmms_eval import ZooLMM

    def request(kwargs: dict):
        args = ("Describe a cat.", kwargs, None, 0, "t", "test")
        return Instance("generate_until", args, idx=0, metadata={"task": "t", "doc_id": 0, "repeats": 1})

    lm = ZooLMM(target=str(qwen1["yaml"]))
    lm.generate_until([request({"until": ["\n\n"]})])
    assert calls[-1] == qwen1["settings"]
    task = {"max_new_tokens": 2, "top_p": 0.5, "top_k": 7, "repetition_penalty": 1.05, "temperature": 0}
    lm.generate_until([request({**task, "until": ["\n\n"]})])  # temperature 0: greedy, lmms-eval's convention
    assert calls[-1] == {**qwen1["overrides"], "eos_token_id": qwen1["endoftext"]}


def test_generation_options_are_checked_before_anything_is_built(qwen1, capsys):
    for flags, named in ((["--top-k", "-1"], "--top-k"), (["--repetition-penalty", "0"], "--repetition-penalty"),
                         (["--eos-token-id", "-3"], "--eos-token-id")):  # fmt: skip
        assert main(["generate", "no-such-model", "--prompt", "hi", *flags]) == 2
        assert named in capsys.readouterr().err
    assert main(["generate", str(qwen1["yaml"]), "--prompt", "hi", "--eos-token-id", "100000"]) == 2
    assert "not a token of the model" in capsys.readouterr().err


def test_checkpoint_records_them_and_a_load_generates_the_same_way(qwen1, tmp_path, calls, capsys):
    model = zoo.build(qwen1["yaml"])
    model.lm.model.generation_config.top_p = 0.33  # changed in Python after the build: the checkpoint keeps it
    ckpt = zoo.save(model, tmp_path / "ckpt")
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["generation_config"]["top_p"] == 0.33 and manifest["generation_config"]["top_k"] == 3
    loaded = zoo.load(ckpt, bases={"lm": str(qwen1["dir"])})
    assert _settings(loaded) == {**qwen1["settings"], "top_p": 0.33}
    assert main(["generate", str(ckpt), "--base", f"lm={qwen1['dir']}", "--prompt", "hi"]) == 0
    assert calls[-1] == {**qwen1["settings"], "top_p": 0.33}
    # a checkpoint saved before zoo recorded generation settings: the rebuilt LM's (its directory's) apply
    older = {k: v for k, v in manifest.items() if k != "generation_config"}
    (ckpt / "manifest.json").write_text(json.dumps(older))
    assert _settings(zoo.load(ckpt, bases={"lm": str(qwen1["dir"])})) == qwen1["settings"]
    # a recorded value that means nothing is refused, naming the field
    (ckpt / "manifest.json").write_text(json.dumps({**manifest, "generation_config": {"top_k": -1}}))
    with pytest.raises(CheckpointError, match=r"manifest field generation_config: top_k = -1: expected an integer"):
        zoo.load(ckpt, bases={"lm": str(qwen1["dir"])})


def test_llava_export_writes_them_and_an_import_reads_them_back(qwen1, tmp_path):
    out = zoo.save_hf_llava(zoo.build(qwen1["yaml"]), tmp_path / "llava")
    written = json.loads((out / "generation_config.json").read_text())
    assert {field: written[field] for field in SIX} == qwen1["settings"]
    imported = zoo.from_hf_llava(out)
    assert _settings(imported) == qwen1["settings"]
    assert _settings(zoo.load(zoo.save(imported, tmp_path / "ckpt"))) == qwen1["settings"]  # and save -> load
    # the import reads the file itself, checked: a bad value is refused naming the field
    (out / "generation_config.json").write_text(json.dumps({**written, "top_p": 7}))
    with pytest.raises(CheckpointError, match=r"generation_config.json: top_p = 7: expected a number in \(0, 1\]"):
        zoo.from_hf_llava(out)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"top_p": "abc"}', r"top_p = 'abc': expected a number in \(0, 1\]"),
        ('{"do_sample": "yes"}', r"do_sample = 'yes': expected true or false"),
        ('{"eos_token_id": 100000}', r"eos_token_id = 100000: expected token ids below the vocabulary size 512"),
        ('{"top_k": 2.5}', r"top_k = 2.5: expected an integer >= 0"),
        ('{"do_sample": true, "temperature": 0}', r"temperature = 0 with do_sample = true"),
        ("not json", "is not valid JSON"),
        ("[1, 2]", "not an object"),
        (" " * (1024 * 1024 + 1), "files over 1,048,576 bytes are refused"),
    ],
)
def test_bad_generation_config_is_refused_naming_the_field(qwen1, tmp_path, content, message):
    directory = tmp_path / "q"
    shutil.copytree(qwen1["dir"], directory)
    (directory / "generation_config.json").write_text(content, encoding="utf-8")
    with pytest.raises(CheckpointError, match=message):
        build_component("lm", "tiny-qwen1", {"checkpoint": str(directory)})


def test_transformers_layout_directory_gives_its_generation_defaults(tmp_path):
    lm = build_component("lm", "tiny-qwen2")
    lm.model.save_pretrained(tmp_path / "lm")
    lm.tokenizer.save_pretrained(tmp_path / "lm")
    settings = {"max_new_tokens": 9, "top_k": 4, "do_sample": True, "top_p": 0.9, "repetition_penalty": 1.2,
                "eos_token_id": [3, 4]}  # fmt: skip
    (tmp_path / "lm" / "generation_config.json").write_text(json.dumps({**settings, "chat_format": "chatml"}))
    loaded = build_component("lm", "tiny-qwen2", {"checkpoint": str(tmp_path / "lm")})
    assert {field: getattr(loaded.model.generation_config, field) for field in settings} == settings
    assert not hasattr(loaded.model.generation_config, "chat_format")
    (tmp_path / "lm" / "generation_config.json").write_text(json.dumps({"repetition_penalty": -1}))
    with pytest.raises(CheckpointError, match=r"repetition_penalty = -1: expected a number in \(0, inf\]"):
        build_component("lm", "tiny-qwen2", {"checkpoint": str(tmp_path / "lm")})
