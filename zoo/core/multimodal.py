"""``MultiModal``: a vision tower, a projector and a causal LM composed the LLaVA way.

Image features are projected to the LM's width and scattered into the token embeddings at the
image-placeholder positions (one placeholder id per image position, as transformers' Llava). With
any-resolution tiling (``model.vision.anyres``, :mod:`zoo.core.anyres`) each image is a global view plus a
grid of tiles whose features are stitched, unpadded and given row newlines (LLaVA-NeXT), so its
number of positions depends on its size (``image_tokens_for``).

Persistence and interop sit above this module and take the model as an argument: ``zoo.save(model,
DIR)`` / ``zoo.load(DIR)`` (:mod:`zoo.checkpoint.loading`), ``zoo.save_hf_llava(model, DIR)`` /
``zoo.from_hf_llava(DIR)`` (:mod:`zoo.interop.llava`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from zoo.core.config import SLOTS, ModelConfig
from zoo.core.contract import Contract
from zoo.core.prompt import TEMPLATE_DEFAULT, SystemPrompt, with_stop_id
from zoo.errors import ConfigError, ZooError
from zoo.sdk.interfaces import LanguageModel, Projector, VisionTower

if TYPE_CHECKING:
    from zoo.core.anyres import AnyResLayout

__all__ = ["IGNORE_INDEX", "MultiModal"]

IGNORE_INDEX = -100


class MultiModal(nn.Module):
    """A composed vision-language model.

    Args:
        vision: the vision tower.
        projector: maps tower features to the LM's width.
        lm: the language model (with its tokenizer).
        composition: the zoo composition it was built from (kept for the manifest).
        contract: the checked contract (``image_tokens`` per image...).
        component_configs: the typed config of each component (for the manifest).
        anyres: the any-resolution tiling (``None``: one tile per image), resolved by the builder.
    """

    def __init__(
        self,
        vision: VisionTower,
        projector: Projector,
        lm: LanguageModel,
        *,
        composition: ModelConfig,
        contract: Contract,
        component_configs: dict[str, Any] | None = None,
        anyres: AnyResLayout | None = None,
    ) -> None:
        super().__init__()
        self.vision = vision
        self.projector = projector
        self.lm = lm
        self.composition = composition
        self.contract = contract
        self.component_configs = dict(component_configs or {})
        self.anyres = anyres
        # how prompts are rendered (zoo.core.prompt): set by zoo train from data.system_prompt, saved in the checkpoint
        self.system_prompt: SystemPrompt = TEMPLATE_DEFAULT
        # slots loaded from a self-contained checkpoint -> the base checkpoint they were built from (zoo.load
        # sets it); zoo.save keeps such a slot self-contained, since its checkpoint path is a temporary copy
        self.contained_bases: dict[str, str] = {}
        # the token that ends assistant turns (data.end_token; None: the template's marker); generation stops at it
        self.end_token: str | None = None
        self.image_token = composition.image_token
        # without a tokenizer (a weights-only import) the composition's image_token_id is the only source
        self.image_token_id: int | None = composition.image_token_id
        if lm.has_tokenizer:  # on meta too: the embeddings grow there without allocating
            (token_id,) = lm.add_tokens([composition.image_token])
            if self.image_token_id is not None and token_id != self.image_token_id:
                raise ConfigError(
                    f"{composition.source}: model.image_token_id = {self.image_token_id}, but the tokenizer of "
                    f"model.lm gives {composition.image_token!r} the id {token_id}; remove model.image_token_id "
                    "(the tokenizer decides) or use the tokenizer that was trained with it"
                )
            self.image_token_id = token_id

    def train(self, mode: bool = True) -> MultiModal:
        """Set train / eval mode; a ``train: frozen`` component stays in eval mode whatever ``mode`` is.

        A frozen component's parameters get no gradient, and in eval mode its buffers (BatchNorm running
        statistics) do not change and its dropout is off: frozen means bit-identical. ``frozen_mode:
        train`` on a slot lets that frozen component follow ``mode`` (BatchNorm statistics then update).
        """
        super().train(mode)
        for kind in SLOTS:
            if self.composition.slot(kind).held_in_eval:
                getattr(self, kind).eval()
        return self

    @property
    def config(self) -> Any:
        """The LM's transformers ``PretrainedConfig``: what transformers' utilities read and set.

        ``Trainer`` sets ``model.config.use_cache`` and generation reads the LM's settings from here, as
        with any transformers model; zoo's own description of the composition is :attr:`composition`.
        """
        return self.lm.model.config

    # -- contract -------------------------------------------------------------------------------
    @property
    def tokens_per_image(self) -> int:
        """LM positions one image occupies, from the tower and projector (never a second number).

        Raises:
            ZooError: with any-resolution tiling, where the count depends on the image's size
                (use :meth:`image_tokens_for`).
        """
        if self.anyres is not None:
            raise ZooError(
                "with model.vision.anyres the positions of an image depend on its size: use "
                "model.image_tokens_for(height, width) (model.processor() does)"
            )
        return self.contract.image_tokens

    def image_tokens_for(self, height: int, width: int) -> int:
        """LM positions an image of ``height x width`` pixels occupies (any-res or not)."""
        if self.anyres is None:
            return self.contract.image_tokens
        return self.anyres.image_tokens(height, width)

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the LM's embeddings (the dtype logits come out in)."""
        return self.lm.dtype

    @property
    def device(self) -> torch.device:
        """Device of the LM's embeddings."""
        return self.lm.model.get_input_embeddings().weight.device

    @property
    def fsdp_wrap_classes(self) -> set[type[nn.Module]]:
        """Block classes of the tower and the LM, for FSDP ``ModuleWrapPolicy`` or checkpointing."""
        return {*self.vision.fsdp_wrap_classes, *self.lm.fsdp_wrap_classes}

    def processor(self, **kwargs: Any):
        """A ``MultiModalProcessor`` that turns text with placeholders plus PIL images into inputs."""
        from zoo.core.processor import MultiModalProcessor

        return MultiModalProcessor.from_model(self, **kwargs)

    # -- compute --------------------------------------------------------------------------------
    def encode_images(
        self,
        pixel_values: torch.Tensor | None,
        image_sizes: torch.Tensor | None = None,
        *,
        vision_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tower + projector: ``[N_img, 3, H, W] -> [N_img, tokens_per_image, H_lm]``.

        With any-resolution tiling: ``pixel_values`` ``[N_img, tiles, 3, S, S]`` (padded, as
        transformers' LLaVA-NeXT processor makes them) or ``[all tiles, 3, S, S]``, and ``image_sizes``
        ``[N_img, 2]`` (height, width); returns every image's positions in order, ``[sum tokens, H_lm]``.

        ``vision_features``: the tower's output computed earlier (a frozen tower's feature cache,
        :mod:`zoo.train.feature_cache`), ``[N_img, N, D]`` (any-res: every image's tiles in order, ``[sum T_i, N,
        D]``), in place of ``pixel_values``: the tower is skipped and the rest is the same computation.
        """
        if self.anyres is not None:
            return self._encode_tiles(pixel_values, image_sizes, vision_features)
        if image_sizes is not None:
            raise ZooError(
                "image_sizes were given (LLaVA-NeXT inputs) but the model has no model.vision.anyres; make the inputs "
                "with model.processor(), or compose the model with model.vision.anyres"
            )
        if vision_features is not None:
            features = self._check_vision_features(vision_features, None)  # [N_img, N, D]
        else:
            features = self.vision(pixel_values)  # [N_img, N, D]
        return self.projector(features.to(_param_dtype(self.projector, features.dtype)))  # [N_img, M, H_lm]

    def _check_vision_features(self, features: torch.Tensor, tiles: int | None) -> torch.Tensor:
        """Precomputed tower features must have the tower's shape (a stale or foreign cache cannot slip in)."""
        tokens, width = self.contract.vision_tokens, self.contract.vision_hidden_size
        rows_ok = tiles is None or features.shape[0] == tiles
        if features.dim() != 3 or tuple(features.shape[1:]) != (tokens, width) or not rows_ok:
            expected = f"[{'images' if tiles is None else tiles}, {tokens}, {width}]"
            raise ZooError(
                f"vision_features {list(features.shape)} do not fit the tower {self.composition.vision.name!r}: expected "
                f"{expected} (its tokens and width at select_layer {self.vision.select_layer}, after select)"
            )
        return features

    def _encode_tiles(
        self, pixel_values: torch.Tensor | None, image_sizes: torch.Tensor | None, vision_features: torch.Tensor | None
    ) -> torch.Tensor:
        layout = cast("AnyResLayout", self.anyres)
        if image_sizes is None:
            raise ZooError(
                "model.vision.anyres: pixel_values need image_sizes ([images, 2], height and width of each image); "
                "model.processor() and transformers' LlavaNextProcessor return both"
            )
        checked = layout.check_sizes(image_sizes)  # [N_img, 2]
        sizes = [(int(h), int(w)) for h, w in checked.tolist()]
        if vision_features is not None:
            total = sum(layout.num_tiles(h, w) for h, w in sizes)
            features = self._check_vision_features(vision_features, total)  # [sum T_i, N, D]
        else:
            tiles = layout.tiles_of(cast("torch.Tensor", pixel_values), checked)  # [sum T_i, 3, S, S]
            features = self.vision(tiles)  # [sum T_i, N, D]
        projected = self.projector(features.to(_param_dtype(self.projector, features.dtype)))  # [sum T_i, M, H]
        newline = getattr(self.projector, "image_newline", None)
        per_image = projected.split([layout.num_tiles(h, w) for h, w in sizes])  # each [T_i, M, H]
        packed = [layout.pack(f, h, w, newline) for f, (h, w) in zip(per_image, sizes)]  # each [tokens_i, H]
        if not packed:
            return projected.new_zeros(0, projected.shape[-1])
        return torch.cat(packed, dim=0)  # [sum tokens_i, H]

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with image features scattered in at placeholder positions, ``[B, T, H]``.

        The images come as ``pixel_values``, as the tower's output ``vision_features`` (see
        :meth:`encode_images`) or as projected ``image_features`` ``[N_img, M, H]`` (any-res ``[sum tokens, H]``).
        """
        image_mask = self._image_mask(input_ids)  # [B, T]
        embeds = self.lm.embed(input_ids.masked_fill(image_mask, 0))  # [B, T, H]
        positions = int(image_mask.sum())
        if image_features is None and vision_features is not None and vision_features.shape[0] > 0:
            image_features = self.encode_images(None, image_sizes, vision_features=vision_features)  # [N_img, M, H]
        elif image_features is None and pixel_values is not None and pixel_values.shape[0] > 0:
            image_features = self.encode_images(pixel_values, image_sizes)  # [N_img, M, H] or [sum tokens, H]
        if self.anyres is not None:
            return self._scatter_anyres(embeds, image_mask, positions, image_features, image_sizes)
        given = 0 if image_features is None else image_features.shape[0] * image_features.shape[1]
        if positions != given:
            images = 0 if image_features is None else image_features.shape[0]
            raise ZooError(
                f"input_ids hold {positions} image positions but {images} images x {self.tokens_per_image} "
                f"tokens per image = {given} image features were given; each image needs exactly one "
                f"{self.image_token!r} placeholder expanded to {self.tokens_per_image} ids (use model.processor())"
            )
        if given == 0 or image_features is None:  # (given is 0 when image_features is None)
            return embeds
        features = image_features.reshape(-1, embeds.shape[-1]).to(embeds.dtype)  # [N_img * M, H]
        return embeds.masked_scatter(image_mask.unsqueeze(-1), features)  # [B, T, H]

    def _scatter_anyres(
        self,
        embeds: torch.Tensor,
        image_mask: torch.Tensor,
        positions: int,
        features: torch.Tensor | None,
        image_sizes: torch.Tensor | None,
    ) -> torch.Tensor:
        given = 0 if features is None else features.shape[0]
        if positions != given:
            checked = [] if image_sizes is None else cast("AnyResLayout", self.anyres).check_sizes(image_sizes).tolist()
            sizes = [tuple(s) for s in checked]
            counts = [self.image_tokens_for(h, w) for h, w in sizes]
            raise ZooError(
                f"input_ids hold {positions} image positions but the {len(sizes)} images of sizes {sizes} give "
                f"{given} features ({counts} per image, model.vision.anyres); expand each {self.image_token!r} "
                "placeholder to model.image_tokens_for(height, width) ids (use model.processor())"
            )
        if features is None or given == 0:
            return embeds
        return embeds.masked_scatter(image_mask.unsqueeze(-1), features.to(embeds.dtype))  # [B, T, H]

    def _image_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.image_token_id is None:
            return torch.zeros_like(input_ids, dtype=torch.bool)
        return input_ids == self.image_token_id

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Loss (when ``labels`` are given) and logits, like transformers' Llava.

        Args:
            pixel_values: every image of the batch in order of appearance, ``[N_img, 3, H, W]``
                (any-res: ``[N_img, tiles, 3, S, S]`` as transformers' LLaVA-NeXT processor makes them).
            input_ids: token ids with each image expanded to ``tokens_per_image`` placeholder ids.
            attention_mask: ``[B, T]``, 1 for real tokens (left or right padding).
            labels: ``[B, T]`` targets; image positions are ignored in the loss automatically.
            image_sizes: any-res only: ``[N_img, 2]``, each image's original height and width.
            vision_features: the tower's output for the images, computed earlier (a frozen tower's feature
                cache, :mod:`zoo.train.feature_cache`), ``[N_img, N, D]`` (any-res: ``[sum tiles, N, D]``), in place
                of ``pixel_values``: the tower is skipped, the rest is the same computation.
            **kwargs: passed to the LM (``cache``, ``use_cache``, ``position_ids``, ``logits_to_keep``).
        """
        if input_ids is None:
            raise ZooError("MultiModal.forward needs input_ids (use model.processor() to make them)")
        embeds = self.embed_inputs(
            input_ids, pixel_values, image_sizes=image_sizes, vision_features=vision_features
        )  # [B, T, H]
        if labels is not None:
            labels = labels.masked_fill(self._image_mask(input_ids), IGNORE_INDEX)  # [B, T]
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return self.lm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        image_sizes: torch.Tensor | None = None,
        use_cache: bool = True,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Generate continuations; returns ``[B, T + new]`` (prompt then new tokens), like Llava.

        Images are encoded once, at prefill. With ``use_cache=True`` (the default) transformers'
        ``generate`` runs with a KV cache and every option of it passes through (``max_new_tokens``,
        ``do_sample``, ``temperature``, ``top_p``, ``num_beams``, ``streamer``...). ``use_cache=False``
        runs a plain greedy loop that re-reads the whole sequence each step (a reference for tests).
        ``image_sizes`` goes with any-res ``pixel_values`` (see :meth:`forward`). The defaults are the LM's
        generation config (``self.lm.model.generation_config``: its directory's ``generation_config.json``,
        kept by zoo's checkpoints and Llava exports); each keyword overrides one of its settings.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        _check_left_padded(attention_mask)
        embeds = self.embed_inputs(input_ids, pixel_values, image_sizes=image_sizes)  # [B, T, H]
        # the model's generation_config (chat checkpoints list their stop tokens there) wins over the
        # tokenizer, which only fills what the config leaves unset
        tokenizer, defaults = self.lm._tokenizer, self.lm.model.generation_config
        explicit_eos = "eos_token_id" in generate_kwargs
        if tokenizer is not None and defaults.eos_token_id is None:
            generate_kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
        if self.end_token is not None and tokenizer is not None and not explicit_eos:
            # a model trained to end its answers with data.end_token stops there too (an explicit eos wins)
            stops = generate_kwargs.get("eos_token_id", defaults.eos_token_id)
            generate_kwargs["eos_token_id"] = with_stop_id(stops, tokenizer.convert_tokens_to_ids(self.end_token))
        if tokenizer is not None and defaults.pad_token_id is None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            generate_kwargs.setdefault("pad_token_id", pad)
        if not use_cache:
            return self._greedy_without_cache(input_ids, embeds, attention_mask, **generate_kwargs)
        return self.lm.model.generate(
            input_ids=input_ids, inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs
        )  # [B, T + new]

    def _greedy_without_cache(
        self,
        input_ids: torch.Tensor,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        max_new_tokens: int = 20,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        do_sample: bool = False,
        **unused: Any,
    ) -> torch.Tensor:
        if do_sample or unused.get("num_beams", 1) != 1:
            raise ZooError("generate(use_cache=False) supports greedy decoding only; drop do_sample/num_beams")
        sequences, finished = input_ids, torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, T]
            logits = self.lm(
                inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).logits  # [B, T, V]
            next_ids = logits[:, -1].argmax(-1)  # [B]
            if eos_token_id is not None and pad_token_id is not None:
                next_ids = next_ids.masked_fill(finished, pad_token_id)
            sequences = torch.cat([sequences, next_ids[:, None]], dim=1)  # [B, T + 1]
            embeds = torch.cat([embeds, self.lm.embed(next_ids[:, None])], dim=1)  # [B, T + 1, H]
            attention_mask = torch.cat([attention_mask, torch.ones_like(next_ids[:, None])], dim=1)
            if eos_token_id is not None:
                finished |= torch.isin(next_ids, torch.tensor(eos_token_id, device=next_ids.device).reshape(-1))
                if bool(finished.all()):
                    break
        return sequences

    # -- reporting ------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, dict[str, int]]:
        """Total and trainable parameters per component."""
        counts = {}
        for kind in SLOTS:
            params = list(getattr(self, kind).parameters())
            counts[kind] = {
                "params": sum(p.numel() for p in params),
                "trainable": sum(p.numel() for p in params if p.requires_grad),
            }
        return counts

    def summary(self) -> dict[str, Any]:
        """What ``zoo build --json`` prints: components with params, totals and image tokens."""
        counts = self.parameter_counts()
        return {
            "components": {kind: {"name": self.composition.slot(kind).name, **counts[kind]} for kind in SLOTS},
            "params_total": sum(c["params"] for c in counts.values()),
            "params_trainable": sum(c["trainable"] for c in counts.values()),
            "image_tokens": self.contract.image_tokens if self.anyres is None else self.anyres.tokens_by_pinpoint(),
            "contract": self.contract.to_dict(),
            "dtype": self.composition.dtype,
        }


def _check_left_padded(attention_mask: torch.Tensor) -> None:
    """New tokens are appended after the last position: a row padded on the right would continue its padding."""
    right = (attention_mask[:, -1] == 0).nonzero().flatten().tolist() if attention_mask.shape[-1] else []
    if right:
        raise ZooError(
            f"generate: attention_mask rows {right} are right-padded (they end with padding), so the new tokens "
            "would follow the padding, not the prompt; pad on the left for generation: "
            "model.processor(padding_side='left') (its default) or DataCollator(padding_side='left')"
        )


def _param_dtype(module: nn.Module, fallback: torch.dtype) -> torch.dtype:
    for param in module.parameters():
        return param.dtype
    return fallback
