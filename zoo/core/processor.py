"""Text with image placeholders + PIL images -> ``input_ids``, ``attention_mask``, ``pixel_values``.

Each placeholder in the text becomes ``tokens_per_image`` placeholder ids (the expanded form that
transformers' Llava takes); images of the whole batch are stacked in order of appearance. With
any-resolution tiling each placeholder becomes as many ids as its image's size gives
(:meth:`zoo.core.anyres.AnyResLayout.image_tokens`), and the images become tiles plus ``image_sizes``, the
inputs transformers' ``LlavaNextProcessor`` makes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from zoo.core.prompt import TEMPLATE_DEFAULT, SystemPrompt, parse_system_prompt, render_messages
from zoo.errors import ZooError
from zoo.sdk.interfaces import ImagePreprocessor
from zoo.sdk.limits import brief

if TYPE_CHECKING:
    from zoo.core.anyres import AnyResLayout

__all__ = ["MultiModalProcessor"]


class MultiModalProcessor:
    """Tokenizes prompts, expands image placeholders and preprocesses images with the tower's transform.

    Args:
        tokenizer: the LM's tokenizer (with the image token added).
        preprocessor: the vision tower's ``ImagePreprocessor``.
        image_token: the placeholder string written in prompts.
        tokens_per_image: ids each placeholder expands to (from the composed model).
        padding_side: ``left`` (for generation) or ``right``.
        anyres: the model's any-resolution tiling (``tokens_per_image`` is then per tile).
        system_prompt: the system prompt :meth:`apply_chat_template` renders with (the model's).
        end_token: the token that ends assistant turns of a chat history (the model's ``data.end_token``).

    Example:
        >>> processor = model.processor()
        >>> batch = processor(["<image>\\nWhat is this?", "No image here."], images=[[img], []])
    """

    def __init__(
        self,
        tokenizer: Any,
        preprocessor: ImagePreprocessor,
        *,
        image_token: str,
        tokens_per_image: int,
        padding_side: str = "left",
        anyres: AnyResLayout | None = None,
        system_prompt: SystemPrompt = TEMPLATE_DEFAULT,
        end_token: str | None = None,
    ) -> None:
        if padding_side not in ("left", "right"):
            raise ZooError(f"padding_side = {padding_side!r} is not valid; valid choices: 'left', 'right'")
        self.tokenizer = tokenizer
        self.preprocessor = preprocessor
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.tokens_per_image = tokens_per_image
        self.padding_side = padding_side
        self.anyres = anyres
        self.system_prompt = system_prompt
        self.end_token = end_token

    @classmethod
    def from_model(cls, model: Any, **kwargs: Any) -> MultiModalProcessor:
        """The processor that fits a built ``MultiModal``."""
        processor = cls(
            model.lm.tokenizer,
            model.vision.preprocessor,
            image_token=model.image_token,
            tokens_per_image=model.contract.image_tokens,
            anyres=model.anyres,
            **{
                "system_prompt": getattr(model, "system_prompt", TEMPLATE_DEFAULT),
                "end_token": getattr(model, "end_token", None),
                **kwargs,
            },
        )
        if processor.image_token_id != model.image_token_id:  # a tokenizer attached after a weights-only import
            raise ZooError(
                f"the tokenizer gives the image token {model.image_token!r} the id {processor.image_token_id}, but "
                f"the model's image token id is {model.image_token_id}; add the token to the tokenizer so that it "
                f"gets that id (tokenizer.add_special_tokens({{'extra_special_tokens': [{model.image_token!r}]}}))"
            )
        return processor

    def apply_chat_template(
        self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render chat messages as the model was trained on them: the tokenizer's template with the model's
        system prompt (``data.system_prompt``) and end token (``data.end_token``: assistant turns of the history
        end with it), both recorded in the checkpoint. Placeholders stay in the text.

        A system message in ``messages`` wins; ``system_prompt=`` overrides the model's setting for this call
        (a string, or ``None`` for no system turn).

        Example:
            >>> text = processor.apply_chat_template([{"role": "user", "content": "<image>\nWhat colour is it?"}])
            >>> batch = processor(text, images=[image])
        """
        unknown = sorted(set(kwargs) - {"system_prompt"})
        if unknown:
            raise ZooError(f"apply_chat_template got unexpected arguments {unknown}; valid: system_prompt")
        system_prompt = parse_system_prompt(kwargs.get("system_prompt", self.system_prompt), key="system_prompt")
        return render_messages(self.tokenizer, messages, system_prompt=system_prompt,
                               add_generation_prompt=add_generation_prompt, end_token=self.end_token)  # fmt: skip

    def __call__(
        self,
        text: str | Sequence[str],
        images: Sequence[Any] | None = None,
        *,
        padding_side: str | None = None,
        add_special_tokens: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Encode a batch.

        Args:
            text: one prompt or a list; each image is marked by one ``image_token``.
            images: a flat list of PIL images in order of appearance, or one list per prompt.
            padding_side: override the processor's padding side.
            add_special_tokens: let the tokenizer add its own specials (a BOS for Llama), as transformers does.

        Returns:
            ``input_ids`` and ``attention_mask`` ``[B, T]``, ``pixel_values`` ``[N_img, 3, H, W]``; with
            any-res ``pixel_values`` ``[N_img, tiles, 3, S, S]`` and ``image_sizes`` ``[N_img, 2]``.
        """
        prompts = _check_prompts(text)
        flat_images = _flatten_images(images, len(prompts))
        _check_images(flat_images)
        counts = [p.count(self.image_token) for p in prompts]
        if sum(counts) != len(flat_images):
            raise ZooError(
                f"the prompts hold {sum(counts)} {self.image_token!r} placeholders (per prompt: {counts}) "
                f"but {len(flat_images)} images were given; write one placeholder per image"
            )
        if isinstance(images, Sequence) and images and isinstance(images[0], list | tuple):
            per_prompt = [len(group) for group in images]
            if per_prompt != counts:
                raise ZooError(f"images per prompt {per_prompt} do not match placeholders per prompt {counts}")
        if self.anyres is None:
            per_image = [self.tokens_per_image] * len(flat_images)
        else:
            per_image = [self.anyres.image_tokens(image.height, image.width) for image in flat_images]
        expanded = _expand(prompts, self.image_token, per_image)
        rows = [self.tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in expanded]
        input_ids, attention_mask = self._pad(rows, padding_side or self.padding_side)
        if self.anyres is None:
            return {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "pixel_values": self.preprocessor(flat_images),  # [N_img, 3, H, W]
            }
        pixels, sizes = self.anyres.preprocess(flat_images, self.preprocessor)  # [N_img, T, 3, S, S], [N_img, 2]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixels, "image_sizes": sizes}

    def _pad(self, rows: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        length = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), length), pad_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros((len(rows), length), dtype=torch.long)  # [B, T]
        for i, row in enumerate(rows):
            span = slice(length - len(row), length) if side == "left" else slice(0, len(row))
            ids[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
        return ids, mask

    def decode(self, token_ids: torch.Tensor, skip_special_tokens: bool = True) -> list[str]:
        """Decode generated ids (a ``[B, T]`` tensor) to strings."""
        return self.tokenizer.batch_decode(token_ids, skip_special_tokens=skip_special_tokens)


def _expand(prompts: list[str], token: str, per_image: list[int]) -> list[str]:
    """Each placeholder replaced by its image's number of placeholder tokens, images in order."""
    counts = iter(per_image)
    expanded = []
    for prompt in prompts:
        pieces = prompt.split(token)
        out = [pieces[0]]
        for piece in pieces[1:]:
            out.append(token * next(counts))
            out.append(piece)
        expanded.append("".join(out))
    return expanded


def _check_prompts(text: Any) -> list[str]:
    """The prompts as a list; anything but non-empty strings is a ``ZooError``."""
    if isinstance(text, str):
        prompts = [text]
    elif isinstance(text, Sequence) and not isinstance(text, bytes | bytearray):
        prompts = list(text)
    else:
        raise ZooError(f"text must be a string or a list of strings, not a {type(text).__name__}")
    if not prompts:
        raise ZooError("text is an empty list; give at least one prompt")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ZooError(f"text[{index}] is a {type(prompt).__name__}, not a string")
        if not prompt.strip():
            where = "the prompt" if isinstance(text, str) else f"text[{index}]"
            raise ZooError(f"{where} is empty; write a question or instruction (with one placeholder per image)")
    return prompts


def _check_images(images: list[Any]) -> None:
    """Every image must be a non-empty PIL image whose pixels can be read (``Image.open`` reads lazily, so a
    truncated file would otherwise fail inside the preprocessor with a bare ``OSError``)."""
    from PIL import Image

    from zoo.sdk.images import ImageError, load_strictly

    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise ZooError(
                f"images[{index}] is a {type(image).__name__}, not a PIL image; open image files with "
                "zoo.sdk.images.open_image(path)"
            )
        if image.width < 1 or image.height < 1:
            raise ZooError(f"images[{index}] is empty ({image.width}x{image.height} pixels)")
        try:
            load_strictly(image)
        except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
            name = getattr(image, "filename", "") or ""
            where = f"images[{index}]" + (f" ({brief(str(name))})" if name else "")
            raise ImageError(f"{where} is corrupt or truncated ({brief(str(error))}); open files with "
                             "zoo.sdk.images.open_image(path) to have them checked when read") from error  # fmt: skip


def _flatten_images(images: Any, num_prompts: int) -> list[Any]:
    if images is None:
        return []
    from PIL import Image

    if isinstance(images, Image.Image):
        return [images]
    if not isinstance(images, Sequence) or isinstance(images, str | bytes):
        raise ZooError(f"images must be a list of PIL images (or one list per prompt), not a {type(images).__name__}")
    if isinstance(images, Sequence) and images and isinstance(images[0], list | tuple):
        if len(images) != num_prompts:
            raise ZooError(f"got {len(images)} image lists for {num_prompts} prompts; give one list per prompt")
        return [image for group in images for image in group]
    return list(images)
