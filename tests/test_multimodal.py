"""MultiModal behaviour: parity with the LM alone, the merge, padding, multi-image rows, loss, generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.core.train_policy import param_groups
from zoo.errors import ZooError


def _images(n, seed=0, size=40):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_text_only_logits_equal_the_lm_alone(tiny_model):
    processor = tiny_model.processor()
    batch = processor(["hello there, how are you", "a cat"], padding_side="left")
    with torch.no_grad():
        ours = tiny_model(**batch).logits
        ref = tiny_model.lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(ours, ref, atol=1e-6)


def test_merge_matches_a_per_sample_reference(tiny_model):
    processor = tiny_model.processor()
    images = _images(3)
    batch = processor(["<image> one <image> two", "none", "three <image>"], images=[images[:2], [], images[2:]])
    embeds = tiny_model.embed_inputs(batch["input_ids"], batch["pixel_values"])
    features = tiny_model.encode_images(batch["pixel_values"]).reshape(-1, embeds.shape[-1])  # [N*M, H]
    expected = tiny_model.lm.embed(batch["input_ids"].masked_fill(batch["input_ids"] == tiny_model.image_token_id, 0))
    cursor = 0
    for row in range(expected.shape[0]):  # reference only: the model itself has no per-row loop
        for col in range(expected.shape[1]):
            if batch["input_ids"][row, col] == tiny_model.image_token_id:
                expected[row, col] = features[cursor]
                cursor += 1
    assert cursor == 3 * tiny_model.tokens_per_image
    assert torch.equal(embeds, expected)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_mixed_batch_matches_rows_alone(tiny_model, side):
    processor = tiny_model.processor()
    images = _images(3, seed=1)
    prompts = ["<image> describe <image> both please", "just text here", "<image> short"]
    groups = [images[:2], [], images[2:]]
    batch = processor(prompts, images=groups, padding_side=side)
    with torch.no_grad():
        logits = tiny_model(**batch).logits
        for row, (prompt, group) in enumerate(zip(prompts, groups)):
            alone = processor(prompt, images=group)
            single = tiny_model(**alone).logits[0]  # [T_row, V]
            mask = batch["attention_mask"][row].bool()
            assert torch.allclose(logits[row][mask], single, atol=1e-5), (side, row)


def test_labels_at_image_positions_are_ignored(tiny_model):
    processor = tiny_model.processor()
    batch = processor(["<image> what is it", "plain words only"], images=[_images(1), []], padding_side="right")
    labels = batch["input_ids"].clone()
    with torch.no_grad():
        out = tiny_model(**batch, labels=labels)
        logits = out.logits
    expected_labels = labels.masked_fill(labels == tiny_model.image_token_id, -100)
    expected_labels = expected_labels.masked_fill(batch["attention_mask"] == 0, -100)
    shift_logits, shift_labels = logits[:, :-1].reshape(-1, logits.shape[-1]), expected_labels[:, 1:].reshape(-1)
    expected = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
    assert torch.allclose(out.loss, expected, atol=1e-5)


def test_count_mismatch_gives_both_numbers(tiny_model):
    processor = tiny_model.processor()
    batch = processor("<image> hi", images=_images(1))
    two = torch.cat([batch["pixel_values"]] * 2)
    with pytest.raises(ZooError) as info:
        tiny_model(pixel_values=two, input_ids=batch["input_ids"])
    n = tiny_model.tokens_per_image
    assert f"{n} image positions but 2 images x {n} tokens per image = {2 * n}" in str(info.value)


def test_processor_rejects_placeholder_image_mismatch(tiny_model):
    processor = tiny_model.processor()
    with pytest.raises(ZooError, match=r"hold 2 '<image>' placeholders \(per prompt: \[2\]\) but 1 images"):
        processor("<image> and <image>", images=_images(1))


def test_training_the_projector_lowers_the_loss(tiny_model):
    model = tiny_model.train()
    processor = model.processor()
    batch = processor(
        ["<image> a red square", "<image> a blue circle"], images=_images(2, seed=3), padding_side="right"
    )
    labels = batch["input_ids"].clone()
    optimizer = torch.optim.AdamW(param_groups(model, 1e-2))
    assert [g["name"] for g in optimizer.param_groups] == ["projector"]
    losses = []
    for _ in range(8):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    assert all(p.grad is None for p in model.lm.parameters())  # the frozen LM got no gradient


def test_generate_with_and_without_cache_agree(tiny_model):
    processor = tiny_model.processor()
    batch = processor("<image> tell me", images=_images(1, seed=4))
    cached = tiny_model.generate(**batch, max_new_tokens=8, do_sample=False, eos_token_id=None)
    plain = tiny_model.generate(**batch, max_new_tokens=8, use_cache=False, eos_token_id=None)
    assert cached.shape == (1, batch["input_ids"].shape[1] + 8)
    assert torch.equal(cached, plain)


def test_images_are_encoded_once_per_generate(tiny_model, monkeypatch):
    calls = []
    original = tiny_model.vision.forward
    monkeypatch.setattr(tiny_model.vision, "forward", lambda pv: calls.append(pv.shape) or original(pv))
    batch = tiny_model.processor()("<image> hi", images=_images(1))
    tiny_model.generate(**batch, max_new_tokens=5, eos_token_id=None)
    assert len(calls) == 1


def test_batched_generation_equals_per_row_generation(tiny_model):
    processor = tiny_model.processor(padding_side="left")
    prompts = ["<image> say something long", "text only", "<image> <image> two"]
    groups = [_images(1, seed=5), [], _images(2, seed=6)]
    batch = processor(prompts, images=groups)
    out = tiny_model.generate(**batch, max_new_tokens=6, eos_token_id=None)
    new = out[:, batch["input_ids"].shape[1] :]
    for row, (prompt, group) in enumerate(zip(prompts, groups)):
        alone = processor(prompt, images=group)
        single = tiny_model.generate(**alone, max_new_tokens=6, eos_token_id=None)
        assert torch.equal(new[row], single[0, alone["input_ids"].shape[1] :]), row


def test_sampling_options_pass_through(tiny_model):
    batch = tiny_model.processor()("<image> go", images=_images(1))
    torch.manual_seed(0)
    a = tiny_model.generate(**batch, max_new_tokens=6, do_sample=True, temperature=5.0, top_k=50, eos_token_id=None)
    torch.manual_seed(0)
    b = tiny_model.generate(**batch, max_new_tokens=6, do_sample=True, temperature=5.0, top_k=50, eos_token_id=None)
    assert torch.equal(a, b)
    with pytest.raises(ZooError, match="greedy decoding only"):
        tiny_model.generate(**batch, max_new_tokens=2, do_sample=True, use_cache=False)


def test_pixel_values_follow_the_tower_dtype():
    model = zoo.build(
        {"model": {"vision": "tiny-clip", "projector": "mlp2x-gelu", "lm": "tiny-qwen2", "dtype": "bf16"}}
    )
    batch = model.processor()("<image> x", images=_images(1))
    assert batch["pixel_values"].dtype == torch.float32
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_generation_config_stop_tokens_win_over_the_tokenizer(tiny_model):
    batch = tiny_model.processor()("<image> hi", images=_images(1))
    first = tiny_model.generate(**batch, max_new_tokens=1)[0, -1].item()
    tiny_model.lm.model.generation_config.eos_token_id = first  # like a chat checkpoint's stop token
    try:
        out = tiny_model.generate(**batch, max_new_tokens=8)
    finally:
        tiny_model.lm.model.generation_config.eos_token_id = None
    assert out.shape[1] == batch["input_ids"].shape[1] + 1 and out[0, -1].item() == first
