"""Run a bench grid: build each component once, measure every composition, and time transformers' Llava
on the same weights in the same run.

Example:
    >>> from zoo.bench import load_bench, run_bench, write_outputs
    >>> run = run_bench(load_bench())            # registry.yaml: benches.default
    >>> write_outputs(run, "bench-out")          # results.json / .csv, report.md, plots
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch

from zoo.bench.cache import SLOTS, ComponentCache
from zoo.bench.grid import BenchSpec, Case, Skipped, plan_grid
from zoo.bench.measure import PeakMemory, forward_flops, machine_info, matmul_peak, quiet_transformers, stats, timed
from zoo.errors import ZooError

if TYPE_CHECKING:
    from transformers import LlavaForConditionalGeneration

    from zoo.multimodal import MultiModal

__all__ = ["BenchRun", "build_models", "make_inputs", "run_bench"]

MB = 2**20


@dataclass
class BenchRun:
    """Everything one bench run produced: a result row per combination and batch size, and context."""

    spec: BenchSpec
    results: list[dict[str, Any]]
    machine: dict[str, Any]
    matmul_peak_flops: dict[str, float] = field(default_factory=dict)
    meta: bool = False
    seconds: float = 0.0
    component_builds: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> list[dict[str, Any]]:
        """Rows that were measured."""
        return [r for r in self.results if r["status"] == "ok"]


def _tqdm(iterable: Any, progress: bool, **kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, file=sys.stderr, disable=not progress, dynamic_ncols=True, **kwargs)


def build_models(cases: list[Case], cache: ComponentCache) -> Iterator[tuple[Case, MultiModal | None, dict[str, Any]]]:
    """Yield ``(case, MultiModal, build info)`` for every case, sharing components through ``cache``.

    The components of a case are released from the cache once the consumer moves on to the next case.
    A case whose real build fails yields ``(case, None, {"error": ...})``.
    """
    from zoo.builder import build

    cache.expect(cases)
    for case in cases:
        start = time.perf_counter()
        try:
            modules, info = cache.components(case)
            assemble = time.perf_counter()
            model = build(case.plan, prebuilt=modules).eval()
            info["assemble_s"] = time.perf_counter() - assemble
            info["fresh_s"] = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - one combination that fails to build must not stop the grid
            yield case, None, {"error": str(error), "error_type": type(error).__name__}
        else:
            yield case, model, info
            del model, modules
        finally:
            cache.release(case)


def make_inputs(model: MultiModal, batch_size: int, prompt_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random pixels and a prompt ``[text, <image> x tokens_per_image, text...]`` per sample."""
    if model.image_token_id is None:
        raise ZooError(
            f"language model {model.composition.lm.name!r} has no tokenizer (no checkpoint), so no image placeholder "
            "id exists; bench it with --meta, or set lm.checkpoint / lm.tokenizer"
        )
    generator = torch.Generator().manual_seed(seed)
    device, image_id, vocab = model.device, model.image_token_id, model.lm.vocab_size
    shape = model.vision.pixel_shape
    pixels = torch.randn(batch_size, *shape, generator=generator).to(device, model.vision.dtype)  # [B, C, H, W]
    text = torch.randint(0, vocab, (batch_size, prompt_len), generator=generator)  # [B, P]
    text = torch.where(text == image_id, (text + 1) % vocab, text)
    image = torch.full((batch_size, model.tokens_per_image), image_id)  # [B, M]
    input_ids = torch.cat([text[:, :1], image, text[:, 1:]], dim=1).to(device)  # [B, M + P]
    return {"pixel_values": pixels, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def _reference(model: MultiModal, device: torch.device) -> tuple[LlavaForConditionalGeneration | None, str | None]:
    """transformers' ``LlavaForConditionalGeneration`` with the same weights, or why there is none."""
    try:
        from zoo.hf_llava import to_hf_llava
    except ImportError as error:
        return None, f"zoo.hf_llava is not available ({error})"
    try:
        # transformers wraps PreTrainedModel.to with functools.wraps, whose stub does not bind ``self``
        return to_hf_llava(model).to(device).eval(), None  # type: ignore[arg-type]
    except ZooError as error:
        return None, str(error)


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


def _calls(
    model: MultiModal, ref: LlavaForConditionalGeneration | None, inputs: dict[str, torch.Tensor], new_tokens: int
):
    """The timed calls of each side: name -> zero-argument function."""
    pixels, ids, mask = inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]
    one, many = _generate_kwargs(model, 1), _generate_kwargs(model, new_tokens)
    sides: dict[str, dict[str, Callable[[], Any]]] = {
        "zoo": {
            "vision_encode": lambda: model.encode_images(pixels),
            "forward": lambda: model(pixel_values=pixels, input_ids=ids, attention_mask=mask, use_cache=False),
            "prefill": lambda: model.generate(ids, pixels, mask, **one),
            "generate": lambda: model.generate(ids, pixels, mask, **many),
        }
    }
    if ref is not None:
        image_id = cast(int, model.image_token_id)  # not None: make_inputs checked it
        ref_ids = ids.masked_fill(ids == image_id, ref.config.image_token_id)  # [B, T]
        sides["ref"] = {
            "forward": lambda: ref(pixel_values=pixels, input_ids=ref_ids, attention_mask=mask, use_cache=False),
            "prefill": lambda: ref.generate(input_ids=ref_ids, pixel_values=pixels, attention_mask=mask, **one),
            "generate": lambda: ref.generate(input_ids=ref_ids, pixel_values=pixels, attention_mask=mask, **many),
        }
    return sides


def _time_sides(sides, repeats: int, warmup: int, device: torch.device) -> dict[str, dict[str, list[float]]]:
    """Warm up, then time every call of every side, alternating which side goes first (ABBA) per repeat."""
    names = list(sides)
    times: dict[str, dict[str, list[float]]] = {side: {call: [] for call in calls} for side, calls in sides.items()}
    for _ in range(warmup):
        for side in names:
            for fn in sides[side].values():
                fn()
    for repeat in range(repeats):
        for side in names if repeat % 2 == 0 else names[::-1]:
            for call, fn in sides[side].items():
                times[side][call].append(timed(fn, device))
    return times


def _side_metrics(times: dict[str, list[float]], batch_size: int, new_tokens: int, prefix: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {}
    for call in ("vision_encode", "forward", "prefill"):
        if call in times:
            row.update(stats(times[call]).to_dict(prefix + call))
    decode = [(g - p) / (new_tokens - 1) for g, p in zip(times["generate"], times["prefill"])]
    row.update(stats(decode).to_dict(prefix + "decode_per_token"))
    generate = stats(times["generate"])
    row.update(generate.to_dict(prefix + "generate"))
    row[prefix + "tokens_per_s"] = round(batch_size * new_tokens / (generate.median_ms / 1e3), 3)
    return row


def _component_rows(model: MultiModal, meta: bool) -> dict[str, Any]:
    counts = model.parameter_counts()
    row: dict[str, Any] = {}
    for kind in SLOTS:
        params = counts[kind]["params"]
        trainable = counts[kind]["trainable"]
        row[f"params_{kind}"], row[f"trainable_{kind}"] = params, trainable
    row["params_total"] = sum(row[f"params_{k}"] for k in SLOTS)
    row["trainable_total"] = sum(row[f"trainable_{k}"] for k in SLOTS)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    row["weights_mb"] = round(weight_bytes / MB, 3)
    return row


def _base_row(case: Case, batch_size: int | None, spec: BenchSpec) -> dict[str, Any]:
    combo = case.combination
    label = combo.label
    return {
        "id": label if batch_size is None else f"{label}/bs{batch_size}",
        "combination": label,
        "vision": combo.vision["name"],
        "projector": combo.projector["name"],
        "lm": combo.lm["name"],
        "image_size": combo.image_size,
        "dtype": combo.dtype,
        "batch_size": batch_size,
        "status": "ok",
        "prompt_len": spec.prompt_len,
        "max_new_tokens": spec.max_new_tokens,
    }


def _contract_row(case: Case) -> dict[str, Any]:
    contract = case.plan.contract
    return {
        "vision_tokens": contract.vision_tokens,
        "image_tokens": contract.image_tokens,
        "vision_hidden_size": contract.vision_hidden_size,
        "lm_hidden_size": contract.lm_hidden_size,
    }


def _flops_row(model: MultiModal, case: Case, spec: BenchSpec) -> dict[str, Any]:
    seq_len = case.plan.contract.image_tokens + spec.prompt_len
    flops = forward_flops(model, seq_len)
    return {"seq_len": seq_len, **{f"flops_{k}": v for k, v in flops.items() if k != "total"},
            "flops_per_sample": flops["total"]}  # fmt: skip


def _skipped_row(skip: Skipped, spec: BenchSpec) -> dict[str, Any]:
    combo = skip.combination
    return {
        "id": combo.label, "combination": combo.label, "vision": combo.vision["name"],
        "projector": combo.projector["name"], "lm": combo.lm["name"], "image_size": combo.image_size,
        "dtype": combo.dtype, "batch_size": None, "status": "skipped", "reason": skip.reason,
        "error_type": skip.error_type, "prompt_len": spec.prompt_len, "max_new_tokens": spec.max_new_tokens,
    }  # fmt: skip


def _measure_batch(
    model: MultiModal, ref: LlavaForConditionalGeneration | None, batch_size: int, spec: BenchSpec, device: torch.device
) -> dict[str, Any]:
    new_tokens = spec.max_new_tokens
    inputs = make_inputs(model, batch_size, spec.prompt_len)
    sides = _calls(model, ref, inputs, new_tokens)
    row: dict[str, Any] = {}
    with torch.inference_mode(), quiet_transformers():
        times = _time_sides(sides, spec.repeats, spec.warmup, device)
        with PeakMemory(device) as memory:
            sides["zoo"]["forward"]()
            sides["zoo"]["generate"]()
        row["peak_mem_mb"], row["mem_method"] = round(memory.peak_bytes / MB, 3), memory.method
        if ref is not None:
            with PeakMemory(device) as memory:
                sides["ref"]["forward"]()
                sides["ref"]["generate"]()
            row["ref_peak_mem_mb"] = round(memory.peak_bytes / MB, 3)
    row.update(_side_metrics(times["zoo"], batch_size, new_tokens))
    row["repeats"], row["warmup"] = spec.repeats, spec.warmup
    if ref is not None:
        row.update(_side_metrics(times["ref"], batch_size, new_tokens, prefix="ref_"))
        row["forward_latency_ratio"] = round(row["forward_ms_median"] / row["ref_forward_ms_median"], 4)
        row["prefill_latency_ratio"] = round(row["prefill_ms_median"] / row["ref_prefill_ms_median"], 4)
        row["generate_throughput_ratio"] = round(row["tokens_per_s"] / row["ref_tokens_per_s"], 4)
    return row


def run_bench(
    spec: BenchSpec,
    *,
    device: str | torch.device | None = None,
    meta: bool = False,
    reference: bool | None = None,
    progress: bool = True,
) -> BenchRun:
    """Measure every valid combination of ``spec``; skipped ones appear in the results with their reason.

    Args:
        spec: the validated grid (``load_bench``).
        device: where to run (default: CUDA if available, else CPU).
        meta: sizes and FLOPs only, on the ``meta`` device (full-size grids without allocating).
        reference: time transformers' Llava too (default: the spec's ``reference``).
        progress: show tqdm progress bars on stderr.
    """
    from zoo.builder import build

    start = time.perf_counter()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    use_reference = spec.reference if reference is None else reference
    cases, skipped = plan_grid(spec)
    results: list[dict[str, Any]] = []
    run = BenchRun(spec, results, machine_info("meta" if meta else device), meta=meta)
    model: MultiModal | None
    if meta:
        for case in _tqdm(cases, progress, desc="zoo bench --meta", unit="combo"):
            built = time.perf_counter()
            model = build(case.plan, meta=True)
            row = {**_base_row(case, None, spec), **_contract_row(case), **_component_rows(model, meta=True)}
            row["build_s"] = round(case.plan.plan_seconds + time.perf_counter() - built, 4)
            row.update(_flops_row(model, case, spec))
            results.append(row)
    else:
        dtypes = sorted({case.config.dtype for case in cases})
        run.matmul_peak_flops = {d: matmul_peak(device, getattr(torch, d)) for d in dtypes}
        cache = ComponentCache(device)
        bar = _tqdm(None, progress, total=len(cases) * len(spec.batch_sizes), desc="zoo bench", unit="run")
        for case, model, info in build_models(cases, cache):
            bar.set_postfix_str(case.combination.label, refresh=False)
            results.extend(_measure_case(case, model, info, spec, device, use_reference, run, bar))
            del model  # free it before the next case's components are built
        bar.close()
        run.component_builds = dict(cache.builds)
    results.extend(_skipped_row(skip, spec) for skip in skipped)
    run.seconds = time.perf_counter() - start
    return run


def _measure_case(case, model, info, spec, device, use_reference, run, bar) -> list[dict[str, Any]]:
    if model is None:
        bar.update(len(spec.batch_sizes))
        row = {**_base_row(case, None, spec), "status": "failed", "reason": info["error"]}
        return [{**row, "error_type": info["error_type"]}]
    common = {**_contract_row(case), **_component_rows(model, meta=False)}
    build_s = case.plan.plan_seconds + sum(info[k]["build_s"] for k in SLOTS) + info["assemble_s"]
    common["build_s"] = round(build_s, 4)
    common["components_reused"] = ",".join(k for k in SLOTS if info[k]["reused"])
    rows = []
    try:
        common.update(_flops_row(model, case, spec))
        ref, ref_reason = _reference(model, device) if use_reference else (None, "reference disabled")
        common["reference"] = "transformers.LlavaForConditionalGeneration" if ref is not None else None
        common["reference_skipped"] = ref_reason
        peak = run.matmul_peak_flops[case.config.dtype]
        for batch_size in spec.batch_sizes:
            row = {**_base_row(case, batch_size, spec), **common}
            row.update(_measure_batch(model, ref, batch_size, spec, device))
            achieved = row["flops_per_sample"] * batch_size / (row["forward_ms_median"] / 1e3)
            row["achieved_flops_per_s"] = round(achieved, 1)
            row["matmul_peak_flops_per_s"] = round(peak, 1)
            row["peak_fraction"] = round(achieved / peak, 4)
            rows.append(row)
            bar.update(1)
    except Exception as error:  # noqa: BLE001 - one failing combination is reported, the grid goes on
        bar.update(len(spec.batch_sizes) - len(rows))
        failed = {**_base_row(case, None, spec), **common, "status": "failed"}
        rows.append({**failed, "reason": f"{type(error).__name__}: {error}", "error_type": type(error).__name__})
    return rows
