"""Language models: tiny LMs run, embed() matches the model's own embedding, checkpoints load back,
remote code needs an opt-in, full-size presets have their published parameter counts (built on meta)."""

from __future__ import annotations

import importlib.util
import re
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from zoo.core.builder import build_component
from zoo.errors import CheckpointError, ConfigError

TINY_LMS = ["tiny-qwen2", "tiny-qwen3", "tiny-llama", "tiny-minicpm3"]
TINY_TOKENIZER = Path(__file__).resolve().parents[1] / "zoo" / "assets" / "tiny_tokenizer"


def _ids(batch: int = 2, length: int = 9) -> torch.Tensor:
    return torch.randint(0, 1000, (batch, length), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", TINY_LMS)
def test_tiny_lm_runs_on_inputs_embeds_and_embed_matches_input_ids(name):
    torch.manual_seed(0)
    lm = build_component("lm", name).eval()
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in the second sample
    out = lm(inputs_embeds=lm.embed(ids), attention_mask=mask, labels=ids)
    assert out.logits.shape == (2, 9, lm.vocab_size)
    assert torch.isfinite(out.loss)
    reference = lm.model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(out.logits, reference)
    assert lm.hidden_size == 64 and lm.fsdp_wrap_classes and lm.has_tokenizer
    if name == "tiny-minicpm3":  # the scale_emb of MiniCPM3 is part of embed()
        raw = lm.model.get_input_embeddings().weight[ids]
        torch.testing.assert_close(lm.embed(ids), raw * 12)


# head sizes vLLM's CPU attention backend serves (vllm/v1/attention/backends/cpu_attn.py); 16 is not one
VLLM_CPU_HEAD_SIZES = {32, 64, 80, 96, 112, 128, 160, 192, 224, 256}


@pytest.mark.parametrize("name", TINY_LMS)
def test_tiny_lm_head_sizes_are_served_by_vllm_cpu(name):
    config = build_component("lm", name, meta=True).model.config
    if config.model_type == "minicpm3":  # MLA: vLLM pads values to the query/key head size
        sizes = {config.qk_nope_head_dim + config.qk_rope_head_dim, config.v_head_dim}
    else:
        sizes = {getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads}
    assert sizes <= VLLM_CPU_HEAD_SIZES, sizes


@pytest.mark.parametrize("name", TINY_LMS)
def test_checkpoint_round_trip_and_hf_causal_lm(name, tmp_path):
    torch.manual_seed(0)
    lm = build_component("lm", name).eval()
    lm.add_tokens(["<image>"])  # saved with the tokenizer: proves the loaded one comes from the directory
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    ids = _ids()
    expected = lm(inputs_embeds=lm.embed(ids)).logits
    for loader in (name, "hf-causal-lm"):
        loaded = build_component("lm", loader, {"checkpoint": str(tmp_path)}).eval()
        torch.testing.assert_close(loaded(inputs_embeds=loaded.embed(ids)).logits, expected)
        assert "<image>" in loaded.tokenizer.get_vocab()
        assert loaded.decoder_layer_class is lm.decoder_layer_class
        assert set(loaded.lora_targets) == set(lm.lora_targets)


def test_meta_build_with_checkpoint_reads_only_config_json(tmp_path):
    lm = build_component("lm", "tiny-qwen2")
    lm.model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()  # no weights: only a meta build can succeed
    meta = build_component("lm", "tiny-qwen2", {"checkpoint": str(tmp_path)}, meta=True)
    assert meta.model.device.type == "meta"
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in lm.parameters())
    with pytest.raises(CheckpointError, match=r"model\.lm\.checkpoint"):
        build_component("lm", "tiny-qwen2", {"checkpoint": str(tmp_path)})


def test_checkpoint_errors_name_the_key_and_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match=r"model\.lm\.checkpoint = .*nowhere.*no such directory"):
        build_component("lm", "qwen2-7b", {"checkpoint": str(missing)})
    with pytest.raises(ConfigError, match=r"model\.lm\.checkpoint is required for 'hf-causal-lm'"):
        build_component("lm", "hf-causal-lm")
    build_component("lm", "tiny-llama").model.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"holds a 'llama' model, but 'tiny-qwen2' expects 'qwen2'.*hf-causal-lm"):
        build_component("lm", "tiny-qwen2", {"checkpoint": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"has hidden_size = 64, but 'llama-2-7b' has hidden_size = 4096"):
        build_component("lm", "llama-2-7b", {"checkpoint": str(tmp_path)}, meta=True)


def test_checkpoint_with_missing_or_mis_shaped_weights_is_refused(tmp_path):
    build_component("lm", "tiny-qwen2").model.save_pretrained(tmp_path)  # lm_head tied: not in the file
    complete = load_file(tmp_path / "model.safetensors")
    assert "lm_head.weight" not in complete
    build_component("lm", "tiny-qwen2", {"checkpoint": str(tmp_path)})  # tied weights are not "missing"
    where = re.escape(f"model.lm.checkpoint = '{tmp_path}'")
    state = {k: v for k, v in complete.items() if k != "model.layers.1.mlp.up_proj.weight"}
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"{where}: weights missing for model\.layers\.1\.mlp\.up_proj\.weight"):
        build_component("lm", "tiny-qwen2", {"checkpoint": str(tmp_path)})
    save_file(
        {**complete, "model.norm.weight": torch.ones(3)}, tmp_path / "model.safetensors", metadata={"format": "pt"}
    )
    with pytest.raises(
        CheckpointError, match=r"wrong shape for model\.norm\.weight \(checkpoint \[3\], model \[64\]\)"
    ):
        build_component("lm", "tiny-qwen2", {"checkpoint": str(tmp_path)})
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=rf"{where}: .*SafetensorError"):
        build_component("lm", "tiny-qwen2", {"checkpoint": str(tmp_path)})


def test_arch_typos_and_rejected_values_are_config_errors():
    with pytest.raises(
        ConfigError, match=r"model\.lm\.arch\.hiden_size is not a field of Qwen2Config.*did you mean 'hidden_size'"
    ):
        build_component("lm", "tiny-qwen2", {"arch": {"hiden_size": 128}})
    with pytest.raises(ConfigError, match=r"model\.lm\.arch\.hidden_size = '64': TypeError: .*expected int"):
        build_component("lm", "tiny-qwen2", {"arch": {"hidden_size": "64"}})
    with pytest.raises(ConfigError, match=r"model\.lm\.arch\.rope_thetaa .*did you mean 'rope_theta'"):
        build_component("lm", "tiny-llama", {"arch": {"rope_thetaa": 1.0}}, meta=True)


def test_attn_implementation_is_honoured():
    for implementation in ("eager", "sdpa"):
        lm = build_component("lm", "tiny-qwen3", {"attn_implementation": implementation})
        assert lm.model.config._attn_implementation == implementation


# Published / computed parameter counts of the official config.json of each model (tied embeddings counted once).
FULL_SIZE = {
    "qwen2-0.5b": 494_032_768,  # Qwen2 tech report (arXiv 2407.10671) Table 1 "0.5B"; HF Qwen/Qwen2-0.5B: 494M
    "qwen2-1.5b": 1_543_714_304,  # HF Qwen/Qwen2-1.5B model page: 1.54B params
    "qwen2-7b": 7_615_616_512,  # HF Qwen/Qwen2-7B model page: 7.62B params
    "qwen2.5-0.5b": 494_032_768,  # HF Qwen/Qwen2.5-0.5B card: 0.49B params (same architecture as Qwen2-0.5B)
    "qwen2.5-1.5b": 1_543_714_304,  # HF Qwen/Qwen2.5-1.5B card: 1.54B params
    "qwen2.5-7b": 7_615_616_512,  # HF Qwen/Qwen2.5-7B card: 7.61B params
    "qwen3-0.6b": 596_049_920,  # HF Qwen/Qwen3-0.6B card: 0.6B params (tied embeddings)
    "qwen3-8b": 8_190_735_360,  # HF Qwen/Qwen3-8B card: 8.2B params
    "llama-2-7b": 6_738_415_616,  # HF meta-llama/Llama-2-7b-hf: 6.74B params (Llama 2 paper, 7B)
    "vicuna-7b-v1.5": 6_738_415_616,  # lmsys/vicuna-7b-v1.5: fine-tuned Llama-2-7B, same config
    # openbmb/MiniCPM3-4B: model.safetensors is 8.15 GB in bf16 = 4.07B params. Computed from its config.json:
    # per layer MLA 13,517,824 + MLP 49,152,000 + norms 5,120 = 62,674,944; x62 + embed 188,026,880 (tied)
    # + final norm 2,560 = 4,073,875,968.
    "minicpm3-4b": 4_073_875_968,
}


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_presets_build_on_meta_with_published_parameter_counts(name):
    lm = build_component("lm", name, dtype="bfloat16", meta=True)
    assert lm.model.device.type == "meta" and lm.dtype == torch.bfloat16
    assert sum(p.numel() for p in lm.parameters()) == FULL_SIZE[name]
    assert not lm.has_tokenizer  # no checkpoint, no tokenizer: asking for it is a clear error
    assert set(lm.lora_targets) >= {"o_proj", "gate_proj", "up_proj", "down_proj"}


REMOTE_CODE = """
import torch
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


class TinyRemoteConfig(PretrainedConfig):
    model_type = "zoo-tiny-remote"

    def __init__(self, vocab_size=64, hidden_size=16, scale_emb=3.0, **kwargs):
        self.vocab_size, self.hidden_size, self.scale_emb = vocab_size, hidden_size, scale_emb
        super().__init__(**kwargs)


class TinyRemoteBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, 2 * config.hidden_size)
        self.down_proj = nn.Linear(2 * config.hidden_size, config.hidden_size)

    def forward(self, x):
        return x + self.down_proj(torch.tanh(self.up_proj(x)))


class TinyRemoteForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = TinyRemoteConfig
    _no_split_modules = ["TinyRemoteBlock"]

    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.block = TinyRemoteBlock(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, labels=None, **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids) * self.config.scale_emb  # MiniCPM's remote code does this
        logits = self.lm_head(self.block(inputs_embeds))
        loss = None if labels is None else self.loss_function(logits, labels, self.config.vocab_size)
        return CausalLMOutputWithPast(loss=loss, logits=logits)
"""


def test_checkpoint_code_runs_only_with_trust_remote_code(tmp_path):
    source = tmp_path / "modeling_tiny.py"
    source.write_text(textwrap.dedent(REMOTE_CODE), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("zoo_test_modeling_tiny", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.TinyRemoteConfig()
    config.auto_map = {
        "AutoConfig": "modeling_tiny.TinyRemoteConfig",
        "AutoModelForCausalLM": "modeling_tiny.TinyRemoteForCausalLM",
    }
    module.TinyRemoteForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"set `model\.lm\.trust_remote_code: true`"):
        build_component("lm", "hf-causal-lm", {"checkpoint": str(tmp_path)})
    lm = build_component("lm", "hf-causal-lm", {"checkpoint": str(tmp_path), "trust_remote_code": True})
    ids = torch.randint(0, 64, (2, 5))
    out = lm(inputs_embeds=lm.embed(ids), labels=ids)
    assert torch.isfinite(out.loss) and lm.embed_scale == 3.0
    torch.testing.assert_close(out.logits, lm.model(input_ids=ids).logits)
    assert lm.decoder_layer_class.__name__ == "TinyRemoteBlock"
    assert lm.lora_targets == ("down_proj", "up_proj")


def test_add_tokens_returns_ids_and_grows_embeddings_when_needed():
    llama = build_component("lm", "tiny-llama")  # vocab == tokenizer size (1024), untied head
    assert llama.add_tokens(["<image>"]) == [1024]
    assert llama.vocab_size == 1025 and llama.model.get_output_embeddings().weight.shape[0] == 1025
    assert llama.tokenizer("a<image>b")["input_ids"].count(1024) == 1  # one unsplit special token
    assert llama.add_tokens(["<image>"]) == [1024] and llama.vocab_size == 1025  # idempotent
    qwen = build_component("lm", "tiny-qwen2")  # padded vocab (1088) has room: no growth
    assert qwen.add_tokens(["<image>"]) == [1024] and qwen.vocab_size == 1088
    assert qwen(inputs_embeds=qwen.embed(torch.tensor([[5, 1024]]))).logits.shape == (1, 2, 1088)


def test_tiny_tokenizer_chat_template_and_specials():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER), local_files_only=True)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Describe the image."}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert len(tokenizer) == 1024 and tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [1021, 1022, 1023]
    ids = tokenizer("Describe the cat. 数字 café")["input_ids"]
    assert tokenizer.decode(ids) == "Describe the cat. 数字 café"


def test_make_tiny_tokenizer_reproduces_the_shipped_files(tmp_path):
    from zoo.assets.make_tiny_tokenizer import main

    main(["--out", str(tmp_path)])
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_text(encoding="utf-8") == (TINY_TOKENIZER / name).read_text(encoding="utf-8")


def test_a_tokenizer_attached_later_must_fit_the_embeddings():
    from transformers import AutoTokenizer

    lm = build_component("lm", "tiny-qwen2", {"tiny_tokenizer": False, "arch": {"vocab_size": 500}}, meta=True)
    assert not lm.has_tokenizer
    with pytest.raises(ConfigError, match="1024 tokens but language model 'tiny-qwen2' has 500 embedding rows"):
        lm.tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    lm = build_component("lm", "tiny-qwen2", {"tiny_tokenizer": False}, meta=True)
    lm.tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    assert lm.has_tokenizer and len(lm.tokenizer) == 1024
