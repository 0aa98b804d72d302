"""The three component interfaces. Each declares its contract as attributes computed from its config,
so that the builder can read them from a module built on the ``meta`` device, before any weight.

Backends subclass these thin bases; the shared behaviour (layer selection, prefix dropping, dtype of
inputs, embedding of ids) lives here once.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from zoo.errors import ConfigError, ZooError

__all__ = ["ImagePreprocessor", "LanguageModel", "Projector", "VisionTower"]


class ImagePreprocessor:
    """A tower's image preprocessing: a backend transform plus the metadata a user wants to see.

    Args:
        transform: maps one PIL image to a ``[3, H, W]`` float tensor (the backend's own processor).
        image_size: side of the square input.
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
    """

    def __init__(
        self,
        transform: Callable[[Any], torch.Tensor],
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.transform = transform
        self.image_size = image_size
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, images: Sequence[Any]) -> torch.Tensor:
        """Preprocess a list of PIL images into ``[N, 3, H, W]``."""
        from zoo.sdk.images import to_rgb  # alpha onto white, 16-bit scaled: as for files and transformers' processors

        if not images:
            return torch.empty(0, 3, self.image_size, self.image_size)
        return torch.stack([self.transform(to_rgb(image)) for image in images])  # [N, 3, H, W]

    def __repr__(self) -> str:
        return f"ImagePreprocessor(image_size={self.image_size}, mean={self.mean}, std={self.std})"


class VisionTower(nn.Module, abc.ABC):
    """An image encoder: ``forward(pixel_values [B, 3, H, W]) -> [B, N, D]``.

    Subclasses set the contract attributes in ``__init__`` and implement ``hidden_states_upto``. The
    contract describes the *selected* layer's output: a hierarchical tower whose stages differ in width
    and stride (ConvNeXt, Hiera, Swin) sets ``hidden_size`` and ``patch_size`` from the stage that
    ``select_layer`` picks (``examples/zoo-example-backbones`` does this for ConvNeXt).

    Attributes:
        hidden_size: feature size ``D`` of the selected layer.
        num_prefix_tokens: CLS/register tokens before the patches (1 for CLIP, 0 for SigLIP).
        patch_size: side in pixels of one token of the selected layer (its stride).
        image_size: input side in pixels.
        num_layers: blocks or stages; ``select_layer`` indexes ``[embeddings, block 1..L]``.
        select_layer: which hidden state to return (-2: penultimate block, LLaVA's choice).
        select: ``patch`` drops the prefix tokens, ``all`` keeps them.
        source: library that implements it.
    """

    source = "zoo"

    def __init__(
        self,
        *,
        hidden_size: int,
        num_prefix_tokens: int,
        patch_size: int,
        image_size: int,
        num_layers: int,
        select_layer: int = -2,
        select: str = "patch",
    ) -> None:
        super().__init__()
        if select not in ("patch", "all"):
            raise ConfigError(f"select = {select!r} is not valid; valid choices: 'patch', 'all'")
        if not -(num_layers + 1) <= select_layer <= num_layers:
            raise ConfigError(
                f"select_layer = {select_layer} is out of range for a tower with {num_layers} layers; "
                f"valid: {-(num_layers + 1)}..{num_layers} (-2 is LLaVA's penultimate layer)"
            )
        self.hidden_size = hidden_size
        self.num_prefix_tokens = num_prefix_tokens
        self.patch_size = patch_size
        self.image_size = image_size
        self.num_layers = num_layers
        self.select_layer = select_layer
        self.select = select

    # -- contract -------------------------------------------------------------------------------
    def grid_size(self, image_size: int | None = None) -> tuple[int, int]:
        """Patch grid ``(rows, cols)`` for a square input of ``image_size`` (default: the tower's)."""
        side = (image_size or self.image_size) // self.patch_size
        return side, side

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one preprocessed image, as ``forward`` takes it."""
        return (3, self.image_size, self.image_size)

    @property
    def num_patches(self) -> int:
        """Patch tokens per image."""
        rows, cols = self.grid_size()
        return rows * cols

    @property
    def num_tokens(self) -> int:
        """Tokens per image that ``forward`` returns, after ``select``."""
        return self.num_patches + (self.num_prefix_tokens if self.select == "all" else 0)

    @property
    def layer_index(self) -> int:
        """``select_layer`` as a non-negative index into ``[embeddings, block 1..L]``."""
        return self.select_layer % (self.num_layers + 1)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype; pixel values are cast to it."""
        return next(self.parameters()).dtype

    @property
    def fsdp_wrap_classes(self) -> tuple[type[nn.Module], ...]:
        """Block classes to wrap separately under FSDP / activation checkpointing."""
        return ()

    @property
    @abc.abstractmethod
    def preprocessor(self) -> ImagePreprocessor:
        """This tower's own image preprocessing."""

    def contract(self) -> dict[str, Any]:
        """The declared contract as plain data (for ``zoo show`` and the manifest)."""
        return {
            "hidden_size": self.hidden_size,
            "num_prefix_tokens": self.num_prefix_tokens,
            "patch_size": self.patch_size,
            "image_size": self.image_size,
            "grid": list(self.grid_size()),
            "num_layers": self.num_layers,
            "select_layer": self.select_layer,
            "select": self.select,
            "tokens": self.num_tokens,
            "source": self.source,
        }

    # -- compute --------------------------------------------------------------------------------
    @abc.abstractmethod
    def hidden_states_upto(self, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
        """Hidden state after ``layer`` blocks (0: embeddings), ``[B, P + N, D]``; later blocks never run."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Features of the selected layer, ``[B, num_tokens, hidden_size]``."""
        hidden = self.hidden_states_upto(pixel_values.to(self.dtype), self.layer_index)  # [B, P+N, D]
        if self.select == "patch":
            hidden = hidden[:, self.num_prefix_tokens :]  # [B, N, D]
        return hidden


class Projector(nn.Module):
    """Maps tower features ``[B, N, in_dim]`` to LM embeddings ``[B, M, out_dim]``.

    Attributes:
        in_dim: tower feature size.
        out_dim: LM hidden size.
        requires_square_grid: the projector reshapes tokens to a square grid (pixel shuffle, 2D pos).
        keeps_patch_layout: each output token comes from the input tokens at its place of the patch grid
            (token-wise MLPs, pixel shuffle); ``False`` for learned-query resamplers, whose outputs have no
            place in the image. Any-resolution tiling stitches and crops tokens by place, so it needs ``True``.
    """

    requires_square_grid = False
    keeps_patch_layout = True

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim

    def num_output_tokens(self, num_input_tokens: int) -> int:
        """Tokens out for ``num_input_tokens`` tokens in (identity by default)."""
        return num_input_tokens

    def check_input_tokens(self, num_input_tokens: int) -> str | None:
        """Why this projector cannot take ``num_input_tokens`` tokens, or ``None`` if it can."""
        if self.requires_square_grid and round(num_input_tokens**0.5) ** 2 != num_input_tokens:
            return f"it needs a square grid of tokens, and {num_input_tokens} is not a square"
        return None

    def contract(self) -> dict[str, Any]:
        """The declared contract as plain data."""
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "requires_square_grid": self.requires_square_grid}


class LanguageModel(nn.Module):
    """A causal LM that takes ``inputs_embeds``: wraps a transformers ``PreTrainedModel``.

    Args:
        model: the causal LM (``...ForCausalLM``).
        tokenizer: its tokenizer, or ``None`` when none is available (a full-size preset without a
            checkpoint); asking for it then raises a clear error.
        lora_targets: module names LoRA adapts by default.
        decoder_layer_class: the decoder block class (FSDP wrapping, checkpointing).
        embed_scale: factor the model applies to token embeddings itself (MiniCPM's ``scale_emb``).
    """

    source = "transformers"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any | None,
        *,
        lora_targets: Sequence[str],
        decoder_layer_class: type[nn.Module] | None,
        embed_scale: float = 1.0,
        name: str = "",
    ) -> None:
        super().__init__()
        # a transformers ``...ForCausalLM``, used duck-typed (config, generate, get_input_embeddings...)
        self.model: Any = model
        self._tokenizer = tokenizer
        self.lora_targets = tuple(lora_targets)
        self.decoder_layer_class = decoder_layer_class
        self.embed_scale = float(embed_scale)
        self.name = name

    @property
    def hidden_size(self) -> int:
        """Width of the token embeddings."""
        return int(self.model.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding matrix."""
        return int(self.model.get_input_embeddings().weight.shape[0])

    @property
    def tokenizer(self) -> Any:
        """The tokenizer; a clear error when this LM was built without one."""
        if self._tokenizer is None:
            raise ZooError(
                f"language model {self.name!r} has no tokenizer (built from weights alone); give it the one its "
                "weights were trained with: `model.lm.tokenizer = AutoTokenizer.from_pretrained(DIR)` in Python, "
                "or model.lm.tokenizer: DIR (or model.lm.checkpoint) in the YAML"
            )
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Any) -> None:
        """Attach a tokenizer (a weights-only model gets the one its weights were trained with)."""
        if len(tokenizer) > self.vocab_size:
            raise ConfigError(
                f"the tokenizer has {len(tokenizer)} tokens but language model {self.name!r} has {self.vocab_size} "
                "embedding rows: it is not the tokenizer of these weights"
            )
        self._tokenizer = tokenizer

    @property
    def has_tokenizer(self) -> bool:
        """Whether a tokenizer is available."""
        return self._tokenizer is not None

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the embeddings."""
        return self.model.get_input_embeddings().weight.dtype

    @property
    def fsdp_wrap_classes(self) -> tuple[type[nn.Module], ...]:
        """Decoder block classes for FSDP auto-wrap / activation checkpointing."""
        return (self.decoder_layer_class,) if self.decoder_layer_class else ()

    def contract(self) -> dict[str, Any]:
        """The declared contract as plain data."""
        return {
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "num_layers": int(getattr(self.model.config, "num_hidden_layers", 0)),
            "lora_targets": list(self.lora_targets),
            "decoder_layer": self.decoder_layer_class.__name__ if self.decoder_layer_class else None,
            "embed_scale": self.embed_scale,
            "source": self.source,
        }

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings exactly as the model computes them itself, ``[B, T] -> [B, T, H]``."""
        embeds = self.model.get_input_embeddings()(input_ids)  # [B, T, H]
        return embeds * self.embed_scale if self.embed_scale != 1.0 else embeds

    def add_tokens(self, tokens: Sequence[str]) -> list[int]:
        """Add special tokens to the tokenizer (growing the embeddings if needed); return their ids.

        A token the tokenizer already has as a special token (Qwen-1's ``<|extra_0|>``) is used as it is.

        Raises:
            ConfigError: a token is an ordinary token of the vocabulary, or the tokenizer cannot add new
                special tokens (some remote-code tokenizers refuse); the message suggests unused special
                tokens that could serve instead.
        """
        tokenizer = self.tokenizer
        vocab, added, specials = tokenizer.get_vocab(), set(tokenizer.get_added_vocab()), self._special_tokens()
        ordinary = [t for t in tokens if t in vocab and t not in added and t not in specials]
        if ordinary:
            raise ConfigError(
                f"model.image_token = {ordinary[0]!r} is an ordinary token of {self.name!r}'s tokenizer: every "
                "occurrence in a text would become an image position; choose a placeholder that is not in the "
                "vocabulary, such as '<image>'"
            )
        missing = [t for t in tokens if t not in vocab and t not in specials]
        if missing:
            try:  # transformers 5 names them ``extra_special_tokens`` (``additional_...`` is a deprecated alias)
                tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
                refused = next((t for t in missing if t not in tokenizer.get_vocab()), None)
                reason = "it silently skipped it" if refused else ""
            except (ValueError, TypeError, NotImplementedError, KeyError) as error:
                refused, reason = missing[0], f"{type(error).__name__}: {error}"
            if refused is not None:
                raise ConfigError(self._cannot_add_message(refused, reason))
        ids = tokenizer.convert_tokens_to_ids(list(tokens))
        if ids and max(ids) >= self.vocab_size:
            self.model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        return ids

    def _special_tokens(self) -> dict[str, int]:
        """Special tokens the tokenizer already knows: its added special tokens, and a remote-code tokenizer's
        own ``special_tokens`` table (Qwen-1's ``QWenTokenizer`` keeps them outside ``get_vocab()``)."""
        tokenizer = self.tokenizer
        found = {
            str(token.content): int(index)
            for index, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items()
            if getattr(token, "special", False)
        }
        table = getattr(tokenizer, "special_tokens", None)
        if isinstance(table, dict):
            found.update({t: i for t, i in table.items() if isinstance(t, str) and isinstance(i, int)})
        return found

    def _cannot_add_message(self, token: str, reason: str) -> str:
        tokenizer = self.tokenizer
        named = {
            getattr(tokenizer, f"{role}_token", None) for role in ("bos", "eos", "unk", "pad", "sep", "cls", "mask")
        }
        template = str(getattr(tokenizer, "chat_template", None) or "")
        unused = sorted(
            (index, text)
            for text, index in self._special_tokens().items()
            if text not in named and text not in template and text != token
        )
        if unused:
            choices = ", ".join(repr(text) for _, text in unused[:3])
            advice = f"set model.image_token to one of its special tokens that nothing else uses: {choices}"
        else:
            advice = "it has no unused special token either; give model.lm.tokenizer a tokenizer that can add tokens"
        return (
            f"model.image_token = {token!r}: the tokenizer of {self.name!r} ({type(tokenizer).__name__}) cannot add "
            f"a new special token ({reason}); {advice}"
        )

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run the causal LM on ``inputs_embeds [B, T, H]``; extra kwargs go to transformers (cache...)."""
        return self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs)
