"""Training data: the ``data:`` section, a LLaVA conversation ``Dataset`` and its collator.

Typical use (what ``zoo train`` does)::

    config = parse_data_config(yaml_data["data"], source="train.yaml", base_dir=Path("."))
    dataset = LlavaDataset(config.train, model, image_folder=config.image_folder_for(config.train),
                           max_length=config.max_length, on_error=config.on_error)
    loader = DataLoader(dataset, batch_size=8, collate_fn=DataCollator.from_model(model))
    loss = model(**next(iter(loader))).loss

Records are read and validated up front (:mod:`zoo.core.records`); every image path is checked to be a
file then. Text is tokenized and images are opened (``zoo.sdk.images.open_image``) lazily, in
``__getitem__``, so in the dataloader workers. Labels cover the assistant turns only
(:mod:`zoo.train.chat`); truncation to ``max_length`` never splits an image: a cut inside an image's
positions moves to just before it and that image (and any later one) is dropped with its pixels.

Blank-image mode (``blank_images=True``) replaces every image by a mid-grey (RGB 128, 128, 128)
image of the same size: after the tower's normalisation it carries no information, the ablation
that shows whether a model uses its images.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.utils.data import Dataset

from zoo.core.data_config import DataConfig, check_room_for_an_image, parse_data_config
from zoo.core.multimodal import IGNORE_INDEX
from zoo.core.records import Conversation, DataError, RecordList, check_records, read_json_records, read_records
from zoo.errors import ZooError
from zoo.sdk.images import open_image
from zoo.sdk.limits import brief
from zoo.train.chat import ChatEncoder

if TYPE_CHECKING:
    from zoo.core.anyres import AnyResLayout
    from zoo.train.feature_cache import CachedImage, FeatureCache

__all__ = [
    "BLANK_RGB",
    "DataCollator",
    "DataConfig",
    "DataError",
    "LlavaDataset",
    "blank_like",
    "parse_data_config",
    "read_records",
]

logger = logging.getLogger(__name__)

BLANK_RGB = (128, 128, 128)  # mid-grey


def blank_like(image: Any) -> Any:
    """A mid-grey RGB image of ``image``'s size (``BLANK_RGB``)."""
    from PIL import Image

    return Image.new("RGB", image.size, BLANK_RGB)


class LlavaDataset(Dataset):
    """LLaVA conversation records as model inputs: ``input_ids`` and ``labels`` ``[T]``, ``pixel_values`` ``[n_img, 3, H, W]``.

    Args:
        records_or_path: a JSON/JSONL file, or records (dicts) already in memory.
        model: the ``MultiModal`` the data is for (its tokenizer, chat template, image token, tokens per
            image and tower preprocessing are used; the model itself is not kept).
        image_folder: where relative image paths resolve (default: the file's folder, or the working
            directory for in-memory records).
        max_length: ids per sample after image expansion; see the module docstring for truncation.
        on_error: ``error`` raises a ``DataError`` naming the file, record index and id of the first bad
            record; ``skip`` drops bad records (malformed, or naming a missing image) and logs the count;
            an image found corrupt only when opened (in ``__getitem__``) is logged and the next record is
            returned in its place.
        blank_images: replace every image by a mid-grey one of the same size.
        supervise: ``assistant`` (labels on every assistant turn) or ``last`` (the last one only).
    """

    def __init__(
        self,
        records_or_path: str | Path | Sequence[Mapping[str, Any]],
        model: Any,
        *,
        image_folder: str | Path | None = None,
        max_length: int = 2048,
        on_error: str = "error",
        blank_images: bool = False,
        supervise: str = "assistant",
    ) -> None:
        if isinstance(records_or_path, str | Path):
            records: Sequence[Any] = read_json_records(records_or_path)
            source = str(records_or_path)
            default_folder = Path(records_or_path).parent
        else:
            records, source, default_folder = records_or_path, "<records>", Path(".")
        self.source = source
        self.image_folder = Path(image_folder) if image_folder is not None else default_folder
        conversations = check_records(records, source=source, on_error=on_error)
        self.skipped: list[str] = list(conversations.skipped)
        self.conversations = self._with_existing_images(conversations, on_error)
        self.encoder = ChatEncoder(model.lm.tokenizer, image_token=model.image_token,
                                   tokens_per_image=model.contract.image_tokens,
                                   system_prompt=model.system_prompt,
                                   end_token=getattr(model, "end_token", None))  # fmt: skip
        self.preprocessor = model.vision.preprocessor
        self.anyres = model.anyres  # any-resolution tiling: per-image counts and tiles (zoo.core.anyres)
        tokens = model.anyres.tokens_by_pinpoint() if model.anyres is not None else model.contract.image_tokens
        check_room_for_an_image(max_length, tokens)
        self.max_length = max_length
        self.on_error = on_error
        self.blank_images = blank_images
        self.supervise = supervise
        self.feature_cache: FeatureCache | None = None  # attach_feature_cache: the tower's features, computed earlier
        self.image_digests: dict[str, str] = {}

    def _with_existing_images(self, conversations: RecordList, on_error: str) -> list[Conversation]:
        kept = []
        for conversation in conversations:
            missing = [p for p in conversation.images if not _is_file(self.image_path(p))]
            if not missing:
                kept.append(conversation)
                continue
            problem = (
                f"{conversation.where}: image {brief(str(self.image_path(missing[0])))} does not exist or is not a file"
            )
            if on_error == "error":
                raise DataError(problem)
            self.skipped.append(problem)
        if len(kept) < len(conversations):
            logger.warning("%s: skipped %d records naming missing images (data.on_error: skip); first: %s",
                           self.source, len(conversations) - len(kept), self.skipped[-1])  # fmt: skip
        return kept

    def image_path(self, name: str) -> Path:
        """Where an image named in a record lives (absolute paths stay as they are)."""
        return self.image_folder / name

    def image_files(self) -> list[Path]:
        """Every image file the records name (repeats included)."""
        return [self.image_path(name) for conversation in self.conversations for name in conversation.images]

    def attach_feature_cache(self, cache: FeatureCache, digests: Mapping[str, str]) -> None:
        """Yield ``vision_features`` from ``cache`` in place of ``pixel_values`` (:mod:`zoo.train.feature_fill`).

        Args:
            cache: the feature cache of the model's tower, filled for these images.
            digests: ``{str(image path): sha256 of its bytes}`` for every image of :meth:`image_files`.
        """
        if self.blank_images:
            raise ZooError("a blank-image dataset cannot read a feature cache (its images are not the files)")
        self.feature_cache = cache
        self.image_digests = dict(digests)

    def cached_image(self, conversation: Conversation, name: str) -> CachedImage:
        """The cached tower features of image ``name`` of ``conversation`` (a ``DataError`` when absent)."""
        cache = self.feature_cache
        path = str(self.image_path(name))
        digest = self.image_digests.get(path)
        entry = cache.load(digest) if cache is not None and digest is not None else None
        if entry is None:
            raise DataError(
                f"{conversation.where}: image {path!r} has no usable entry in the feature cache "
                f"{str(cache.directory) if cache else ''!r} (cleared during training, or the image could not be read "
                "when the cache was filled); run again, or set train.feature_cache: off"
            )
        return entry

    def _vision_features(self, conversation: Conversation, names: Sequence[str]) -> torch.Tensor:
        """Cached features of ``names``: ``[n_img, N, D]``."""
        cache = cast("FeatureCache", self.feature_cache)
        features = [self.cached_image(conversation, name).features for name in names]  # each [N, D]
        if not features:
            dtype = cache.store_dtype or torch.float32
            return torch.empty(0, *cache.feature_shape, dtype=dtype)  # [0, N, D]
        return torch.stack(features)  # [n_img, N, D]

    def __len__(self) -> int:
        return len(self.conversations)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        for attempt in range(len(self.conversations)):
            conversation = self.conversations[(index + attempt) % len(self.conversations)]
            try:
                return self.encode(conversation)
            except DataError as error:
                if self.on_error == "error":
                    raise
                logger.warning("skipping a record whose image cannot be read (data.on_error: skip): %s", error)
        raise DataError(f"{self.source}: no record of the dataset can be read")

    def encode(self, conversation: Conversation) -> dict[str, torch.Tensor]:
        """One conversation as model inputs (opens its images)."""
        if self.anyres is not None:
            return self._encode_anyres(conversation, self.anyres, prompt=False)
        encoded = self.encoder.encode(conversation.messages, supervise=self.supervise, max_length=self.max_length)
        item = {
            "input_ids": torch.tensor(encoded.input_ids, dtype=torch.long),  # [T]
            "labels": torch.tensor(encoded.labels, dtype=torch.long),  # [T]
        }
        names = conversation.images[: encoded.num_images]
        if self.feature_cache is not None:
            item["vision_features"] = self._vision_features(conversation, names)  # [n_img, N, D]
        else:
            item["pixel_values"] = self.pixel_values(conversation, names)  # [n_img, 3, H, W]
        return item

    def encode_prompt(self, conversation: Conversation) -> dict[str, torch.Tensor]:
        """The messages before the last assistant turn plus the generation prompt, with their images."""
        if self.anyres is not None:
            return self._encode_anyres(conversation, self.anyres, prompt=True)
        encoded = self.encoder.encode_prompt(conversation.messages[: conversation.last_assistant])
        pixels = self.pixel_values(conversation, conversation.images[: encoded.num_images])
        return {"input_ids": torch.tensor(encoded.input_ids, dtype=torch.long), "pixel_values": pixels}

    def _encode_anyres(
        self, conversation: Conversation, layout: AnyResLayout, *, prompt: bool
    ) -> dict[str, torch.Tensor]:
        """Any-res: every image's own count of positions, its tiles ``[n, T, 3, S, S]`` and ``image_sizes``
        (with a feature cache: its tiles' features ``[sum T_i, N, D]`` in place of the tiles)."""
        if self.feature_cache is not None and not prompt:
            return self._encode_anyres_cached(conversation, layout)
        images = self.open_images(conversation, conversation.images)
        counts = [layout.image_tokens(image.height, image.width) for image in images]
        if prompt:
            messages = conversation.messages[: conversation.last_assistant]
            encoded = self.encoder.encode_prompt(messages, image_tokens=counts)
        else:
            encoded = self.encoder.encode(conversation.messages, supervise=self.supervise,
                                          max_length=self.max_length, image_tokens=counts)  # fmt: skip
        pixels, sizes = layout.preprocess(images[: encoded.num_images], self.preprocessor)  # [n, T, 3, S, S], [n, 2]
        item = {"input_ids": torch.tensor(encoded.input_ids, dtype=torch.long), "pixel_values": pixels,
                "image_sizes": sizes}  # fmt: skip
        if not prompt:
            item["labels"] = torch.tensor(encoded.labels, dtype=torch.long)
        return item

    def _encode_anyres_cached(self, conversation: Conversation, layout: AnyResLayout) -> dict[str, torch.Tensor]:
        entries = [self.cached_image(conversation, name) for name in conversation.images]
        counts = [layout.image_tokens(entry.height, entry.width) for entry in entries]
        encoded = self.encoder.encode(conversation.messages, supervise=self.supervise,
                                      max_length=self.max_length, image_tokens=counts)  # fmt: skip
        kept = entries[: encoded.num_images]
        cache = cast("FeatureCache", self.feature_cache)
        features = (
            torch.cat([entry.features for entry in kept])  # [sum T_i, N, D]
            if kept
            else torch.empty(0, *cache.feature_shape, dtype=cache.store_dtype or torch.float32)
        )
        sizes = torch.tensor([[entry.height, entry.width] for entry in kept], dtype=torch.long).reshape(-1, 2)
        return {"input_ids": torch.tensor(encoded.input_ids, dtype=torch.long), "vision_features": features,
                "image_sizes": sizes, "labels": torch.tensor(encoded.labels, dtype=torch.long)}  # fmt: skip

    def pixel_values(self, conversation: Conversation, names: Sequence[str]) -> torch.Tensor:
        """The preprocessed images ``names`` of ``conversation``, ``[n_img, 3, H, W]`` (blank in blank mode)."""
        return self.preprocessor(self.open_images(conversation, names))  # [n_img, 3, H, W]

    def open_images(self, conversation: Conversation, names: Sequence[str]) -> list[Any]:
        """The images ``names`` of ``conversation`` as PIL images (mid-grey of the same size in blank mode)."""
        images = []
        for number, name in enumerate(names):
            try:
                image = open_image(self.image_path(name), what=f"image {number}")
            except ZooError as error:
                raise DataError(f"{conversation.where}: {error}") from error
            images.append(blank_like(image) if self.blank_images else image)
        return images

    @property
    def lengths(self) -> list[int]:
        """Estimated ids per sample (words plus image positions), cheap, as LLaVA estimates them."""
        # any-res: the count of an image with a pinpoint's shape (an estimate, like the word count)
        per_image = self.encoder.tokens_per_image if self.anyres is None else self.anyres.max_tokens
        return [_words(c) + per_image * len(c.images) for c in self.conversations]

    @property
    def modality_lengths(self) -> list[int]:
        """``lengths`` signed as LLaVA's ``modality_lengths``: positive with images, negative text-only."""
        return [n if c.images else -n for n, c in zip(self.lengths, self.conversations)]


def _words(conversation: Conversation) -> int:
    return sum(len(m["content"].split()) for m in conversation.messages)


class DataCollator:
    """Pads a list of dataset items into the keyword arguments of ``MultiModal.forward``.

    ``input_ids`` are padded with ``pad_token_id``, ``labels`` (when present) with ``IGNORE_INDEX``;
    ``attention_mask`` marks real tokens; ``pixel_values`` (or, from a feature cache, ``vision_features``)
    of the items are concatenated in order.

    Args:
        pad_token_id: the id padding positions get (masked out; never supervised).
        padding_side: ``right`` for training, ``left`` for generation.
        pad_to_multiple_of: round the padded length up to a multiple of this (tensor-core friendly).
    """

    def __init__(self, pad_token_id: int, padding_side: str = "right", pad_to_multiple_of: int | None = None) -> None:
        if padding_side not in ("left", "right"):
            raise ZooError(f"padding_side = {padding_side!r} is not valid; valid choices: 'left', 'right'")
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of

    @classmethod
    def from_model(cls, model: Any, **kwargs: Any) -> DataCollator:
        """The collator for ``model``'s tokenizer (pad token, else end-of-text, else 0)."""
        tokenizer = model.lm.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return cls(pad if pad is not None else 0, **kwargs)

    def __call__(self, items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        with_labels = all("labels" in item for item in items)
        batch = {
            "input_ids": torch.full((len(items), length), self.pad_token_id, dtype=torch.long),  # [B, T]
            "attention_mask": torch.zeros((len(items), length), dtype=torch.long),  # [B, T]
        }
        if with_labels:
            batch["labels"] = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)  # [B, T]
        for row, item in enumerate(items):
            size = len(item["input_ids"])
            span = slice(length - size, length) if self.padding_side == "left" else slice(0, size)
            batch["input_ids"][row, span] = item["input_ids"]
            batch["attention_mask"][row, span] = 1
            if with_labels:
                batch["labels"][row, span] = item["labels"]
        cached = ["vision_features" in item for item in items]
        if any(cached):  # the tower's features from a feature cache: concatenated in order
            if not all(cached):
                raise ZooError("a batch mixes items with vision_features (feature cache) and pixel_values")
            batch["vision_features"] = torch.cat([item["vision_features"] for item in items])  # [N_img or tiles, N, D]
            if any("image_sizes" in item for item in items):
                batch["image_sizes"] = torch.cat([item["image_sizes"] for item in items])  # [N_img, 2]
            return batch
        if any("image_sizes" in item for item in items):  # any-res: tiles padded to the batch's most
            tiles = max(item["pixel_values"].shape[1] for item in items)
            batch["pixel_values"] = torch.cat(
                [_pad_tiles(item["pixel_values"], tiles) for item in items]
            )  # [N_img, T, 3, S, S]
            batch["image_sizes"] = torch.cat([item["image_sizes"] for item in items])  # [N_img, 2]
            return batch
        batch["pixel_values"] = torch.cat([item["pixel_values"] for item in items])  # [N_img, 3, H, W]
        return batch


def _pad_tiles(pixels: torch.Tensor, tiles: int) -> torch.Tensor:
    """``[n, t, C, S, S]`` zero-padded to ``[n, tiles, C, S, S]`` (transformers' LLaVA-NeXT layout)."""
    if pixels.shape[1] == tiles:
        return pixels
    padded = pixels.new_zeros(pixels.shape[0], tiles, *pixels.shape[2:])  # [n, tiles, C, S, S]
    padded[:, : pixels.shape[1]] = pixels
    return padded


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a name the system refuses (too long, a NUL) instead of an OSError."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
