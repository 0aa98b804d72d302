"""Qwen-1 as a native family: published checkpoints load onto Qwen2 with the reference's logits."""

from __future__ import annotations

import json

import pytest
import torch
from _qwen1_reference import TINY_QWEN1, qwen1_forward, write_qwen1_checkpoint
from safetensors.torch import save_file

from zoo.core.builder import build_component
from zoo.errors import CheckpointError, ConfigError

PROMPT = "What is in this image? A cat on a mat. 12345"


@pytest.fixture(scope="module")
def qwen1_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen1") / "Qwen-tiny"
    state = write_qwen1_checkpoint(directory)
    return directory, state


def _logits(lm, ids):
    with torch.no_grad():
        return lm.model(input_ids=ids).logits  # [B, T, V]


def test_checkpoint_logits_equal_the_published_architecture(qwen1_dir):
    directory, state = qwen1_dir
    lm = build_component("lm", "tiny-qwen1", {"checkpoint": str(directory)})
    assert type(lm.model).__name__ == "Qwen2ForCausalLM"
    rows = [lm.tokenizer(text)["input_ids"] for text in (PROMPT, PROMPT.upper())]
    ids = torch.tensor([row[: min(map(len, rows))] for row in rows])  # [2, T]
    reference = qwen1_forward(state, TINY_QWEN1, ids)
    assert (_logits(lm, ids) - reference).abs().max().item() <= 1e-5
    # the comparison can fail: the same weights with w1 and w2 swapped (the gate mixed up) differ
    swapped = dict(state)
    for i in range(TINY_QWEN1["num_hidden_layers"]):
        p = f"transformer.h.{i}.mlp."
        swapped[p + "w1.weight"], swapped[p + "w2.weight"] = state[p + "w2.weight"], state[p + "w1.weight"]
    assert (qwen1_forward(swapped, TINY_QWEN1, ids) - reference).abs().max().item() > 1e-2
    # Qwen-1 stops at <|endoftext|> and, in ChatML, at <|im_end|>
    assert lm.model.generation_config.eos_token_id == lm.tokenizer.convert_tokens_to_ids(
        ["<|endoftext|>", "<|im_end|>"]
    )


def test_legacy_bin_checkpoint_loads_with_weights_only(tmp_path):
    state = write_qwen1_checkpoint(tmp_path / "q", seed=1, legacy_bin=True)
    lm = build_component("lm", "tiny-qwen1", {"checkpoint": str(tmp_path / "q")})
    ids = torch.tensor([[5, 70, 300, 2, 9]])
    assert (_logits(lm, ids) - qwen1_forward(state, TINY_QWEN1, ids)).abs().max().item() <= 1e-5


def test_missing_and_unused_keys_are_named(tmp_path):
    state = write_qwen1_checkpoint(tmp_path / "q")
    del state["transformer.h.1.mlp.w2.weight"]
    state["transformer.h.1.mlp.w3.weight"] = torch.zeros(2, 2)
    save_file(state, str(tmp_path / "q" / "model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"missing transformer\.h\.1\.mlp\.w2\.weight; unused transformer\.h\.1\.mlp\.w3"
    ):
        build_component("lm", "tiny-qwen1", {"checkpoint": str(tmp_path / "q")})


def test_preset_of_another_size_is_refused(qwen1_dir):
    directory, _ = qwen1_dir
    with pytest.raises(ConfigError, match="hidden_size = 64, but 'qwen-7b' has 4096"):
        build_component("lm", "qwen-7b", {"checkpoint": str(directory)}, meta=True)


def test_qwen2_checkpoint_is_not_taken_for_qwen1(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="use the qwen2-\\* presets"):
        build_component("lm", "tiny-qwen1", {"checkpoint": str(tmp_path)}, meta=True)


@pytest.mark.parametrize(
    ("name", "params"),
    [("qwen-1.8b", 1_836_828_672), ("qwen-7b", 7_721_324_544), ("qwen-14b", 14_167_290_880),
     ("qwen-72b", 72_287_920_128)],
)  # fmt: skip
def test_full_size_presets_match_published_parameter_counts(name, params):
    lm = build_component("lm", name, meta=True)
    assert sum(p.numel() for p in lm.parameters()) == params
    assert lm.model.config.num_key_value_heads == lm.model.config.num_attention_heads  # no GQA in Qwen-1


def test_tokenizer_matches_tiktoken_and_speaks_chatml(qwen1_dir):
    tiktoken = pytest.importorskip("tiktoken")
    import unicodedata

    from zoo_plugins._qwen1_tokenizer import PATTERN, SPECIAL_TOKENS, load_qwen1_tokenizer, read_tiktoken_ranks

    directory, _ = qwen1_dir
    tokenizer = load_qwen1_tokenizer(directory)
    ranks = read_tiktoken_ranks(directory / "qwen.tiktoken")
    special = {token: len(ranks) + i for i, token in enumerate(SPECIAL_TOKENS)}
    encoding = tiktoken.Encoding("qwen-tiny", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=special)
    for text in (PROMPT, "<|im_start|>user\nhi 2024<|im_end|>\n<|extra_0|>x", "  a\t\n\n b", "e\u0301 你好"):
        expected = encoding.encode(unicodedata.normalize("NFC", text), allowed_special="all")
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == expected
    assert tokenizer.convert_tokens_to_ids("<|extra_204|>") == len(ranks) + 207
    assert tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    ) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_image_token_on_a_tokenizer_that_cannot_add_tokens(qwen1_dir, monkeypatch):
    directory, _ = qwen1_dir
    lm = build_component("lm", "tiny-qwen1", {"checkpoint": str(directory)})

    def refuse(*args, **kwargs):  # what Qwen-1's remote-code tokenizer does
        raise ValueError("Adding unknown special tokens is not supported")

    monkeypatch.setattr(lm.tokenizer, "add_special_tokens", refuse)
    with pytest.raises(ConfigError, match=r"cannot add a new special token \(ValueError: Adding unknown") as error:
        lm.add_tokens(["<image>"])
    assert "'<|extra_0|>', '<|extra_1|>', '<|extra_2|>'" in str(error.value)  # unused, not <|im_start|>
    assert lm.add_tokens(["<|extra_0|>"]) == [lm.tokenizer.convert_tokens_to_ids("<|extra_0|>")]
