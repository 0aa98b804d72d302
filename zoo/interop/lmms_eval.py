"""An lmms-eval model backed by any zoo composition: ``lmms-eval --model zoo --model_args target=...``.

lmms-eval finds it through the entry point ``zoo`` of group ``lmms_eval.models`` (declared in zoo's
``pyproject.toml``), so the model is there as soon as zoo and lmms-eval are installed side by side
(``pip install 'zoo-vlm[eval]'``)::

    lmms-eval eval --model zoo --model_args target=ckpt/,batch_size=4 --tasks mme --include_path my_tasks/

``target`` is anything ``zoo.interop.targets.load_target`` takes: a zoo checkpoint, a Llava directory, a YAML
file or a composition name. Model arguments: ``device`` (``cpu``), ``batch_size``,
``max_new_tokens`` (when a task sets none; default: the model's generation config's, else 128), ``chat_template`` (``true``: wrap each prompt in the
tokenizer's chat template when it has one) and ``plugins`` (plugin modules or files, ``;``-separated);
lmms-eval's own ``--batch_size`` and ``--device`` set the batch size and the device. Generation follows the
model's generation config (its LM directory's ``generation_config.json``, kept in zoo's checkpoints and Llava
exports) wherever a task's ``generation_kwargs`` say nothing.

Only lmms-eval imports this module (it needs lmms-eval); zoo itself never does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model

from zoo.errors import ZooError
from zoo.sdk.images import to_rgb

__all__ = ["ZooLMM", "manifest"]

DEFAULT_MAX_NEW_TOKENS = 128


def manifest() -> Any:
    """The entry-point payload of group ``lmms_eval.models``: registers the model id ``zoo``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="zoo", simple_class_path=f"{__name__}.ZooLMM")


@register_model("zoo")
class ZooLMM(lmms):
    """lmms-eval's ``lmms`` interface over a zoo ``MultiModal`` (generation and log-likelihood requests).

    Args:
        target: a zoo checkpoint directory, a Llava directory, a YAML file or a composition name.
        device: torch device (lmms-eval passes ``--device``); default ``cpu``.
        batch_size: requests per forward / generate call (lmms-eval passes ``--batch_size``).
        max_new_tokens: generation budget when a task's ``generation_kwargs`` set none (default: the model's
            generation config's, else 128). Every other setting the task leaves out is the generation config's.
        chat_template: render prompts with the tokenizer's chat template when it has one.
        plugins: extra zoo plugin modules or files, ``;``-separated.
        max_batch_size: accepted for lmms-eval's ``--max_batch_size``; ``batch_size`` decides.

    Example:
        >>> lm = ZooLMM(target="tiny-clip-mlp-qwen2")
    """

    def __init__(
        self,
        target: str,
        device: str | None = None,
        batch_size: int | str | None = 1,
        max_new_tokens: int | None = None,
        chat_template: bool = True,
        plugins: str = "",
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        from zoo.interop.targets import load_target

        self._batch_size = _positive_int(batch_size if batch_size not in (None, "") else 1, "batch_size")
        self.max_new_tokens = None if max_new_tokens in (None, "") else _positive_int(max_new_tokens, "max_new_tokens")
        self.chat_template = bool(chat_template)
        self._device = torch.device(device or "cpu")
        plugin_list = tuple(p for p in str(plugins).split(";") if p)
        self.model = load_target(str(target), plugins=plugin_list, device=self._device)
        if not self.model.lm.has_tokenizer:
            raise ZooError(f"target = {target!r} has no tokenizer; lmms-eval needs one (give the LM a tokenizer)")
        self.processor = self.model.processor()
        self.tokenizer = self.processor.tokenizer

    @property
    def batch_size(self) -> int:
        """Requests per model call."""
        return self._batch_size

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self._device

    # -- requests -------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy (or sampled, when the task asks) continuations, cut at the task's ``until`` strings."""
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(_kwargs_key(request.args[1]), []).append(index)
        for indices in groups.values():
            options, until = self._generation_options(dict(requests[indices[0]].args[1] or {}))
            for chunk in _chunks(self._by_length(requests, indices), self.batch_size):
                prompts, images = zip(*(self._prompt(requests[i]) for i in chunk))
                batch = self.processor(list(prompts), images=list(images), padding_side="left")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                output = self.model.generate(**batch, **options)  # [B, T + new]
                texts = self.processor.decode(output[:, batch["input_ids"].shape[1] :])
                for i, prompt, text in zip(chunk, prompts, texts):
                    results[i] = _cut(text, until)
                    self.cache_hook.add_partial("generate_until", (prompt, requests[i].args[1]), results[i])
        return [r if r is not None else "" for r in results]

    def loglikelihood(self, requests: list[Instance]) -> list[Any]:
        """Per request: the continuation's mean negative log-likelihood per token given the context (and
        images), and whether greedy decoding would have produced exactly that continuation.

        lmms-eval's convention is a loss, not a log-probability: its ``multiple_choice`` scoring takes the
        choice with the smallest first value and its ``perplexity`` is ``exp`` of the mean, as with its
        built-in LLaVA models (whose value is the LM's mean cross-entropy over the continuation).
        """
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for chunk in _chunks(self._by_length(requests, range(len(requests))), self.batch_size):
            contexts, wholes, images = [], [], []
            for i in chunk:
                context, continuation, visuals = self._scored_pair(requests[i])
                contexts.append(context)
                wholes.append(context + continuation)
                images.append(visuals)
            batch = self.processor(wholes, images=images, padding_side="right")
            lengths = batch["attention_mask"].sum(-1).tolist()  # [B]
            starts = [len(self.processor(c, images=v)["input_ids"][0]) for c, v in zip(contexts, images)]
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.inference_mode():
                logits = self.model(**batch).logits.float()  # [B, T, V]
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # [B, T-1, V]: position t predicts t+1
            targets = batch["input_ids"][:, 1:]  # [B, T-1]
            for row, (i, start, length) in enumerate(zip(chunk, starts, lengths)):
                if length <= start:
                    raise ZooError(
                        f"request {i}: the continuation {wholes[row][len(contexts[row]) :]!r} adds no token "
                        "after the context; lmms-eval scores at least one continuation token"
                    )
                span = slice(start - 1, length - 1)
                wanted = targets[row, span]  # [C]
                scores = logprobs[row, span].gather(-1, wanted[:, None]).squeeze(-1)  # [C]
                greedy = bool((logprobs[row, span].argmax(-1) == wanted).all())
                results[i] = (float(-scores.mean()), greedy)
                self.cache_hook.add_partial("loglikelihood", (contexts[row], wholes[row]), results[i])
        return _as_outputs(results)

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        """Multi-round tasks feed earlier answers back through task code; zoo does not support them yet."""
        raise ZooError("the zoo lmms-eval model answers generate_until and loglikelihood requests, not multi-round")

    # -- helpers --------------------------------------------------------------------------------
    def _doc(self, request: Instance) -> Any:
        *_, doc_id, task, split = request.args
        return self.task_dict[task][split][doc_id]

    def _visuals(self, request: Instance, doc_to_visual: Callable[[Any], Any] | None) -> list[Any]:
        if doc_to_visual is None:
            return []
        visuals = doc_to_visual(self._doc(request)) or []
        images = []
        for visual in visuals if isinstance(visuals, list | tuple) else [visuals]:
            if not hasattr(visual, "convert"):
                raise ZooError(
                    f"task {request.args[-2]!r} gave a {type(visual).__name__} visual; the zoo model takes images "
                    "(PIL), not video or audio"
                )
            images.append(to_rgb(visual))  # alpha onto white, as transformers' processors and zoo's files
        return images

    def _render(self, context: str, images: Sequence[Any]) -> tuple[str, bool]:
        """Place one image token per image (lmms-eval prompts usually hold none) and apply the chat template
        when there is one; returns the prompt and whether it is a chat turn."""
        token = self.model.image_token
        if images and token not in context:
            context = "\n".join([*([token] * len(images)), context])
        if self.chat_template and getattr(self.tokenizer, "chat_template", None):
            return self.processor.apply_chat_template([{"role": "user", "content": context}]), True
        return context, False

    def _prompt(self, request: Instance) -> tuple[str, list[Any]]:
        context, _, doc_to_visual, *_ = request.args
        images = self._visuals(request, doc_to_visual)
        return self._render(context, images)[0], images

    def _scored_pair(self, request: Instance) -> tuple[str, str, list[Any]]:
        context, target, doc_to_visual, *_ = request.args
        continuation = str(target if isinstance(target, str) else target(self._doc(request)))
        images = self._visuals(request, doc_to_visual)
        rendered, chat = self._render(context, images)
        if chat:  # the answer opens the assistant's message, without the task's delimiter
            return rendered, continuation.lstrip(), images
        stripped = rendered.rstrip()  # raw text: a trailing space belongs to the continuation's first token
        return stripped, rendered[len(stripped) :] + continuation, images

    def _by_length(self, requests: list[Instance], indices: Sequence[int] | range) -> list[int]:
        """Longest contexts first: batches of similar length, and a memory error shows up at once."""
        return sorted(indices, key=lambda i: -len(str(requests[i].args[0])))

    def _generation_options(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The task's ``generation_kwargs`` over the model's generation config (its LM directory's
        ``generation_config.json``): a setting the task leaves out is the model's; ``max_new_tokens``: the
        task's, else ``model_args``' ``max_new_tokens``, else the generation config's, else 128."""
        from zoo.sdk.generation_config import default_options

        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        budget = kwargs.pop("max_new_tokens", None) or self.max_new_tokens
        explicit: dict[str, Any] = {"max_new_tokens": int(budget) if budget else None}
        if "temperature" in kwargs or "do_sample" in kwargs:  # lmms-eval's convention: temperature 0 is greedy
            temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
            explicit["do_sample"] = bool(kwargs.pop("do_sample", False)) or temperature > 0
            explicit["temperature"] = temperature if temperature > 0 else None
        for key, kind in (("top_p", float), ("top_k", int), ("num_beams", int), ("repetition_penalty", float)):
            if kwargs.get(key) is not None:
                explicit[key] = kind(kwargs.pop(key))
        config = getattr(self.model.lm.model, "generation_config", None)
        options = default_options(config, explicit, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
        if until:
            options.update(stop_strings=until, tokenizer=self.tokenizer)
        return options, until


def _as_outputs(results: list[tuple[float, bool]]) -> list[Any]:
    """lmms-eval 0.7 turns every model output that is not text into ``str(output)`` unless it comes wrapped in
    its ``GenerationResult``; wrapped, the ``(loss, is_greedy)`` pair reaches the task's scoring intact."""
    try:
        from lmms_eval.api.instance import GenerationResult
    except ImportError:  # lmms-eval before 0.7 takes the pairs as they are
        return list(results)
    return [GenerationResult(text=pair, token_counts=None) for pair in results]  # type: ignore[arg-type]


def _cut(text: str, until: Sequence[str]) -> str:
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


def _kwargs_key(kwargs: Any) -> str:
    return json.dumps(kwargs or {}, sort_keys=True, default=str)


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ZooError(f"model_args {name} = {value!r} is not valid; give a positive integer")
    return number
