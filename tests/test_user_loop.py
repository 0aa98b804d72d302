"""The loop a user walks: build -> save -> load -> fine-tune -> save -> load, frozen means frozen, prompts as trained.

- Round trips are identities for every registered tiny composition and training policy: build -> save ->
  load -> save -> load keeps every tensor bit-exact and the composition, and records no temporary path;
  load -> train (a plain loop and transformers' Trainer) -> save -> load gives the trained tensors.
- ``train: frozen`` components stay in eval mode whatever ``model.train()`` says: a BatchNorm + dropout
  tower trained by ``zoo train`` comes out bit-identical; ``frozen_mode: train`` is the explicit opt-in.
- ``data.system_prompt`` (null / a string) shapes the training samples and is recorded in the checkpoint,
  so ``zoo eval`` / ``zoo generate`` / the processor render the same prompts with no option repeated.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo
from zoo.core.config import load_model_config
from zoo.core.train_policy import param_groups
from zoo.errors import ConfigError

PLUGIN_FILES = Path(__file__).parent / "plugin_files"
BN_TOWER = str(PLUGIN_FILES / "batchnorm_tower.py")
TINY_COMPOSITIONS = zoo.get_registry().list_compositions("tiny-*")  # plain, LoRA, any-res, fused, resampler...
POLICIES = st.fixed_dictionaries(
    {"vision": st.sampled_from(["frozen", "full"]), "lm": st.sampled_from(["frozen", "full", "lora"])}
)


def _composition(name: str, policy: dict[str, str]) -> dict:
    """A registered composition with the drawn training policy (LoRA settings kept where it had them)."""
    data = load_model_config(name).to_dict()
    model = data["model"]
    model["vision"]["train"] = policy["vision"]
    if policy["lm"] != "lora":
        model["lm"].pop("lora", None)
    model["lm"]["train"] = policy["lm"]
    return data


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not different, different[:5]


def _batch(model):
    from PIL import Image

    processor = model.processor()
    texts = (f"{model.image_token}\nWhat colour?", f"{model.image_token}\nWhere is it?")
    images = [[Image.new("RGB", (48, 40), (200, 30, 30))], [Image.new("RGB", (40, 48), (30, 30, 200))]]
    prompts = [processor.apply_chat_template([{"role": "user", "content": t}]) + "red" for t in texts]
    batch = processor(prompts, images=images)
    return {**batch, "labels": batch["input_ids"].masked_fill(batch["input_ids"] == model.image_token_id, -100)}


def _plain_steps(model, steps: int = 3) -> None:
    torch.manual_seed(1)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-2))
    batch = _batch(model)
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def _manifest_text(directory: Path) -> str:
    return (directory / "manifest.json").read_text(encoding="utf-8")


def _no_temporary_paths(directory: Path) -> None:
    text = _manifest_text(directory)
    assert "zoo-tokenizer-" not in text and tempfile.gettempdir() + "/zoo" not in text


# -- round trips -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TINY_COMPOSITIONS)
@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(policy=POLICIES)
def test_save_load_save_load_is_bit_exact_and_training_a_loaded_model_saves(name, policy):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        torch.manual_seed(0)
        built = zoo.build(_composition(name, policy))
        zoo.save(built, root / "a")
        first = zoo.load(root / "a")
        zoo.save(first, root / "b")  # whatever zoo.load returns, zoo.save accepts
        second = zoo.load(root / "b")
        _assert_same_tensors(_state(built), _state(second))
        assert first.composition.to_dict() == second.composition.to_dict() == built.composition.to_dict()
        _no_temporary_paths(root / "b")
        assert json.loads(_manifest_text(root / "a"))["model"] == json.loads(_manifest_text(root / "b"))["model"]

        _plain_steps(second)  # load -> train -> save -> load gives the trained model
        trained = _state(second)
        assert any(not torch.equal(trained[k], v) for k, v in _state(first).items() if k in trained)
        zoo.save(second, root / "c")
        _assert_same_tensors(trained, _state(zoo.load(root / "c")))


def test_a_model_trained_by_the_trainer_after_a_load_saves_and_loads(tmp_path):
    from test_train import write_colours
    from transformers import TrainingArguments

    from zoo.train.data import DataCollator, LlavaDataset
    from zoo.train.trainer import ZooTrainer

    data = write_colours(tmp_path / "data", count=8)
    zoo.save(zoo.build("tiny-openclip-perceiver-qwen2-lora"), tmp_path / "base")
    model = zoo.load(tmp_path / "base")
    before = _state(model)
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    dataset = LlavaDataset(str(data), model, max_length=128)
    ZooTrainer(model=model, args=args, train_dataset=dataset, data_collator=DataCollator.from_model(model)).train()
    trained = _state(model)
    assert any(not torch.equal(trained[k], before[k]) for k in before if "projector" in k)
    zoo.save(model, tmp_path / "tuned")
    _assert_same_tensors(trained, _state(zoo.load(tmp_path / "tuned")))
    _no_temporary_paths(tmp_path / "tuned")


@pytest.mark.parametrize("name", ["tiny-clip-mlp-qwen2", "tiny-anyres-clip-mlp-qwen2"])
def test_llava_export_import_export_keeps_every_tensor_through_the_cli(tmp_path, name):
    from safetensors.torch import load_file

    from zoo.cli.app import main

    assert main(["build", name, "--save", str(tmp_path / "zoo-a")]) == 0
    assert main(["convert", "--to-hf-llava", str(tmp_path / "zoo-a"), str(tmp_path / "hf-a")]) == 0
    assert main(["convert", "--from-hf-llava", str(tmp_path / "hf-a"), str(tmp_path / "zoo-b")]) == 0
    imported = zoo.load(tmp_path / "zoo-b")
    zoo.save(imported, tmp_path / "zoo-c")  # an imported model saves again, and loads to the same tensors
    _assert_same_tensors(_state(imported), _state(zoo.load(tmp_path / "zoo-c")))
    _no_temporary_paths(tmp_path / "zoo-c")
    assert main(["convert", "--to-hf-llava", str(tmp_path / "zoo-c"), str(tmp_path / "hf-b")]) == 0

    def tensors(folder: Path) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for file in sorted(folder.glob("*.safetensors")):
            out.update(load_file(str(file)))
        return out

    _assert_same_tensors(tensors(tmp_path / "hf-a"), tensors(tmp_path / "hf-b"))


# -- frozen means frozen -----------------------------------------------------------------------------
def _bn_composition(**vision: object) -> dict:
    return {
        "plugins": [BN_TOWER],
        "model": {"vision": {"name": "tiny-bn-tower", "select_layer": -1, **vision}, "projector": "mlp2x-gelu",
                  "lm": "tiny-qwen2"},
    }  # fmt: skip


def test_a_frozen_component_stays_in_eval_mode_whatever_model_train_says(fresh_registry):
    model = zoo.build(_bn_composition())
    model.train()
    assert model.training and model.projector.training
    assert not model.vision.training and not any(m.training for m in model.vision.modules())
    assert not model.lm.training  # frozen by default (LLaVA stage 1)
    unfrozen = zoo.build(_bn_composition(frozen_mode="train")).train()
    assert unfrozen.vision.training  # the explicit opt-in: BatchNorm statistics update


def test_frozen_mode_is_checked(fresh_registry):
    with pytest.raises(ConfigError, match=r"model\.vision\.frozen_mode = 'trian' is not valid; did you mean 'train'"):
        zoo.build(_bn_composition(frozen_mode="trian"), meta=True)
    with pytest.raises(ConfigError, match=r"frozen_mode = 'train' applies to a frozen component"):
        zoo.build(_bn_composition(frozen_mode="train", train="full"), meta=True)


def test_zoo_train_leaves_a_frozen_batchnorm_dropout_tower_bit_identical(tmp_path, fresh_registry):
    from test_train import write_colours

    from zoo.train.run import train

    data = write_colours(tmp_path / "data", count=8)

    def run(name: str, **vision: object):
        spec = {**_bn_composition(**vision), "data": {"train": str(data), "max_length": 64},
                "train": {"output_dir": str(tmp_path / name), "max_steps": 3, "batch_size": 4, "lr": 1e-2,
                          "save_steps": 3, "logging_steps": 1}}  # fmt: skip
        torch.manual_seed(0)
        result = train(spec)
        return zoo.load(result.final_checkpoint, plugins=[BN_TOWER])

    torch.manual_seed(0)
    reference = _state(zoo.build(_bn_composition()).vision)  # the same seed gives the same random tower
    tower = _state(run("frozen").vision)
    _assert_same_tensors(reference, tower)
    drifted = _state(run("follows", frozen_mode="train").vision)
    changed = sorted(k for k in reference if not torch.equal(reference[k], drifted[k]))
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)


def test_the_conformance_kit_fails_a_component_that_changes_while_frozen(fresh_registry):
    from zoo.core.registry import get_registry
    from zoo.testing import check_vision_tower

    get_registry((BN_TOWER,))
    assert check_vision_tower("tiny-bn-tower")["tokens"] == 16
    with pytest.raises(AssertionError, match=r"changed while frozen .*calls"):
        check_vision_tower("tiny-bn-drifter")


# -- prompts under the user's control ----------------------------------------------------------------
@pytest.mark.parametrize("system_prompt", [None, "You look at shapes."])
def test_system_prompt_is_trained_recorded_and_used_at_eval_and_generate(tmp_path, system_prompt, monkeypatch):
    from test_train import write_colours

    from zoo.cli.app import main
    from zoo.train.data import LlavaDataset
    from zoo.train.evaluate import evaluate
    from zoo.train.run import train

    data = write_colours(tmp_path / "data", count=4)
    spec = {"model": {"vision": "tiny-clip", "projector": "mlp2x-gelu", "lm": "tiny-qwen2"},
            "data": {"train": str(data), "max_length": 128, "system_prompt": system_prompt},
            "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 2, "save_steps": 1}}  # fmt: skip
    final = train(spec).final_checkpoint
    model = zoo.load(final)
    assert model.system_prompt == system_prompt
    tokenizer = model.lm.tokenizer

    def text_of(ids) -> str:
        return tokenizer.decode([i for i in ids if i != model.image_token_id])

    default_turn = "You are a helpful assistant."
    sample = text_of(LlavaDataset(str(data), model, max_length=128)[0]["input_ids"].tolist())
    prompt = model.processor().apply_chat_template([{"role": "user", "content": "<image>\nWhat colour?"}])
    for text in (sample, prompt):
        assert default_turn not in text
        assert ("<|im_start|>system" in text) == (system_prompt is not None)
        if system_prompt is not None:
            assert f"<|im_start|>system\n{system_prompt}<|im_end|>" in text

    seen: list[str] = []  # every prompt zoo eval and zoo generate feed the model, decoded
    generate = type(model.lm.model).generate

    def spy(self, *args, **kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None:
            seen.extend(text_of(row.tolist()) for row in ids)
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(type(model.lm.model), "generate", spy)
    image = str(data.parent / "images" / "0.png")
    assert main(["generate", str(final), "--prompt", "What colour?", "--image", image, "--max-new-tokens", "2"]) == 0
    evaluate(zoo.load(final), str(data), max_new_tokens=2)
    assert seen and all(default_turn not in t for t in seen)
    assert all(("<|im_start|>system" in t) == (system_prompt is not None) for t in seen)


def test_a_system_message_in_the_conversation_wins_and_the_call_can_override(tiny_model):
    processor = tiny_model.processor()
    user = {"role": "user", "content": "hi"}
    assert "You are a helpful assistant." in processor.apply_chat_template([user])  # the template's default
    tiny_model.system_prompt = None
    processor = tiny_model.processor()
    assert processor.apply_chat_template([user]) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    mine = processor.apply_chat_template([{"role": "system", "content": "Mine."}, user])
    assert mine.startswith("<|im_start|>system\nMine.<|im_end|>")
    assert processor.apply_chat_template([user], system_prompt="Call.").startswith("<|im_start|>system\nCall.")


def test_data_system_prompt_is_checked(tmp_path):
    from zoo.train.data import parse_data_config

    with pytest.raises(ConfigError, match=r"data\.system_prompt = 3 has the wrong type; expected a string, or null"):
        parse_data_config({"train": "t.json", "system_prompt": 3}, source="run.yaml")
