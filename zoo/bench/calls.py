"""What ``zoo bench`` times: the inputs and the zero-argument calls of zoo and of transformers' Llava.

Calls (each side gets the same inputs and the same weights):

- ``vision_encode``: tower + projector on the batch's images (zoo only: Llava has no separate call).
- ``forward``: one full forward, image + prompt, logits at every position, no cache.
- ``prefill``: ``generate(max_new_tokens=1)``, the time to the first token.
- ``decode_per_token``: one cached single-token step measured directly: embed the next token, run the LM
  on it with the KV cache of the prompt, take the argmax; the cache is then rolled back one position so
  that every timed step sees the same context length. No subtraction is involved, so it cannot be
  negative.
- ``generate``: ``generate(max_new_tokens=N)`` (greedy, exactly N tokens), for tokens per second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch

from zoo.errors import ZooError

if TYPE_CHECKING:
    from transformers import LlavaForConditionalGeneration

    from zoo.core.anyres import AnyResLayout
    from zoo.core.multimodal import MultiModal

__all__ = ["CALLS", "bench_image_size", "decode_step", "make_inputs", "timed_calls"]

CALLS = ("vision_encode", "forward", "prefill", "decode_per_token", "generate")

Calls = dict[str, Callable[[], Any]]


def bench_image_size(anyres: AnyResLayout | None, side: int) -> tuple[int, int]:
    """``(height, width)`` of the benchmark's image: the tower's square, or with any-res tiling a 1:2 image
    (the global view plus a row of two tiles, LLaVA-NeXT's most common wide layout)."""
    if anyres is None:
        return side, side
    return anyres.tile_size, 2 * anyres.tile_size


def make_inputs(model: MultiModal, batch_size: int, prompt_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random pixels and a prompt ``[text, <image> x image tokens, text...]`` per sample (any-res: the tiles
    of a :func:`bench_image_size` image and ``image_sizes``)."""
    if model.image_token_id is None:
        raise ZooError(
            f"language model {model.composition.lm.name!r} has no tokenizer (no checkpoint), so no image placeholder "
            "id exists; bench it with --meta, or set lm.checkpoint / lm.tokenizer"
        )
    generator = torch.Generator().manual_seed(seed)
    device, image_id, vocab = model.device, model.image_token_id, model.lm.vocab_size
    shape: tuple[int, ...] = model.vision.pixel_shape
    height, width = bench_image_size(model.anyres, model.vision.image_size)
    if model.anyres is not None:
        shape = (model.anyres.num_tiles(height, width), *shape)  # every tile of the image
    pixels = torch.randn(batch_size, *shape, generator=generator).to(device, model.vision.dtype)  # [B, (T,) C, H, W]
    text = torch.randint(0, vocab, (batch_size, prompt_len), generator=generator)  # [B, P]
    text = torch.where(text == image_id, (text + 1) % vocab, text)
    image = torch.full((batch_size, model.image_tokens_for(height, width)), image_id)  # [B, M]
    input_ids = torch.cat([text[:, :1], image, text[:, 1:]], dim=1).to(device)  # [B, M + P]
    inputs = {"pixel_values": pixels, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if model.anyres is not None:
        inputs["image_sizes"] = torch.tensor([[height, width]] * batch_size, device=device)  # [B, 2]
    return inputs


def decode_step(model: Callable[..., Any], prefill: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    """A zero-argument call that runs one cached single-token step and rolls the cache back.

    ``model`` is called like a transformers causal LM (zoo's ``MultiModal`` and transformers' Llava both
    are): once now on ``prefill`` (untimed) to fill the KV cache, then on one token per sample per call.

    Raises:
        ZooError: the model's cache cannot be rolled back to the prompt length (``Cache.crop``).
    """
    out = model(**prefill, use_cache=True, logits_to_keep=1)
    cache = out.cache
    length = cache.get_seq_length()
    next_ids = out.logits[:, -1].argmax(-1, keepdim=True)  # [B, 1]
    mask = prefill["attention_mask"]
    step_mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # [B, T + 1]

    def forward() -> torch.Tensor:
        logits = model(
            input_ids=next_ids, attention_mask=step_mask, cache=cache, use_cache=True, logits_to_keep=1
        ).logits  # [B, 1, V]
        return logits[:, -1].argmax(-1)  # [B]

    forward()  # untimed: the first step checks that the cache rolls back
    try:
        cache.crop(-1)
    except (AttributeError, NotImplementedError, RuntimeError, ValueError) as error:
        raise ZooError(f"cannot time cached decode steps: the KV cache cannot be rolled back ({error})") from error
    if cache.get_seq_length() != length:
        raise ZooError(f"cannot time cached decode steps: the KV cache holds {cache.get_seq_length()} != {length}")

    def step() -> torch.Tensor:
        token = forward()
        cache.crop(-1)
        return token

    return step


def _generate_kwargs(model: MultiModal, new_tokens: int) -> dict[str, Any]:
    tokenizer = model.lm.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "pad_token_id": pad,
        "eos_token_id": tokenizer.eos_token_id,
    }


def timed_calls(
    model: MultiModal, ref: LlavaForConditionalGeneration | None, inputs: dict[str, torch.Tensor], new_tokens: int
) -> tuple[dict[str, Calls], dict[str, str]]:
    """The timed calls of each side (``"zoo"``, and ``"ref"`` when ``ref`` is given): name -> function.

    Call it under ``torch.inference_mode()``: building the decode steps runs a prefill on each side.

    Returns:
        ``(sides, left_out)``: the calls by side, and the calls that cannot be timed with the reason
        (``{"decode_per_token": "..."}`` for a cache that cannot be rolled back).
    """
    left_out: dict[str, str] = {}
    pixels, ids, mask = inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]
    sizes = inputs.get("image_sizes")  # any-res only
    extra = {} if sizes is None else {"image_sizes": sizes}
    one, many = _generate_kwargs(model, 1), _generate_kwargs(model, new_tokens)
    sides: dict[str, Calls] = {
        "zoo": {
            "vision_encode": lambda: model.encode_images(pixels, sizes),
            "forward": lambda: model(pixel_values=pixels, input_ids=ids, attention_mask=mask, use_cache=False, **extra),
            "prefill": lambda: model.generate(ids, pixels, mask, image_sizes=sizes, **one),
            "generate": lambda: model.generate(ids, pixels, mask, image_sizes=sizes, **many),
        }
    }
    _add_decode(sides["zoo"], model, inputs, left_out)
    if ref is not None:
        image_id = cast(int, model.image_token_id)  # not None: make_inputs checked it
        ref_ids = ids.masked_fill(ids == image_id, ref.config.image_token_id)  # [B, T]
        ref_inputs = {"pixel_values": pixels, "input_ids": ref_ids, "attention_mask": mask, **extra}
        sides["ref"] = {
            "forward": lambda: ref(**ref_inputs, use_cache=False),
            "prefill": lambda: ref.generate(**ref_inputs, **one),
            "generate": lambda: ref.generate(**ref_inputs, **many),
        }
        _add_decode(sides["ref"], ref, ref_inputs, left_out)
    return sides, left_out


def _add_decode(calls: Calls, model: Callable[..., Any], inputs: dict[str, torch.Tensor], left_out: dict[str, str]):
    try:
        calls["decode_per_token"] = decode_step(model, inputs)
    except ZooError as error:
        left_out.setdefault("decode_per_token", str(error))
