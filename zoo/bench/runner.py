"""Run a bench grid: build each component once, measure every composition, and time transformers' Llava
on the same weights in the same run.

Example:
    >>> from zoo.bench import load_bench, run_bench, write_outputs
    >>> run = run_bench(load_bench())            # registry.yaml: benches.default
    >>> write_outputs(run, "bench-out")          # results.json / .csv, report.md, plots
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zoo.bench.cache import SLOTS, ComponentCache
from zoo.bench.calls import bench_image_size, make_inputs, timed_calls
from zoo.bench.grid import BenchSpec, Case, Skipped, plan_grid
from zoo.bench.measure import (
    PeakMemory,
    forward_flops,
    machine_info,
    machine_state,
    matmul_peak,
    quiet_transformers,
    torch_threads,
)
from zoo.bench.timing import Timing, time_interleaved
from zoo.core.progress import LineProgress, is_terminal
from zoo.errors import ZooError
from zoo.sdk.weights import parse_device

if TYPE_CHECKING:
    from transformers import LlavaForConditionalGeneration

    from zoo.core.multimodal import MultiModal

__all__ = ["BenchRun", "build_models", "make_inputs", "run_bench"]  # make_inputs: from zoo.bench.calls

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
    shard: tuple[int, int] | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)
    loss_curves: dict[str, list[list[float | None]]] = field(default_factory=dict)
    quality_summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> list[dict[str, Any]]:
        """Rows that were measured."""
        return [r for r in self.results if r["status"] == "ok"]

    @property
    def noisy(self) -> list[dict[str, Any]]:
        """Measured rows with a timing whose spread exceeds the grid's ``noise_threshold``."""
        return [r for r in self.ok if r.get("noisy")]

    def record(self) -> dict[str, Any]:
        """Everything but the rows, as plain data (``run.json``; ``zoo bench merge`` reads it back).

        ``parts`` lists the runs a merged report was made of (one per shard); a single run is its own part.
        """
        return {
            "spec": self.spec.to_dict(),
            "source": self.spec.source,
            "meta": self.meta,
            "shard": list(self.shard) if self.shard else None,
            "seconds": round(self.seconds, 3),
            "machine": self.machine,
            "matmul_peak_flops": self.matmul_peak_flops,
            "component_builds": self.component_builds,
            "parts": self.parts,
            "loss_curves": self.loss_curves,
            "quality_summary": self.quality_summary,
        }


def _tqdm(iterable: Any, progress: bool, **kwargs: Any) -> Any:
    """A tqdm bar on a terminal; elsewhere (a log file, a pipe) one line per finished unit with i/N and ETA."""
    if not is_terminal(sys.stderr):
        return LineProgress(iterable, disable=not progress, file=sys.stderr, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, file=sys.stderr, disable=not progress, dynamic_ncols=True, **kwargs)


def build_models(cases: list[Case], cache: ComponentCache) -> Iterator[tuple[Case, MultiModal | None, dict[str, Any]]]:
    """Yield ``(case, MultiModal, build info)`` for every case, sharing components through ``cache``.

    The components of a case are released from the cache once the consumer moves on to the next case.
    A case whose real build fails yields ``(case, None, {"error": ...})``.
    """
    from zoo.core.builder import build

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


def _reference(model: MultiModal, device: torch.device) -> tuple[LlavaForConditionalGeneration | None, str | None]:
    """transformers' ``LlavaForConditionalGeneration`` with the same weights, or why there is none."""
    try:
        from zoo.interop.llava import to_hf_llava
    except ImportError as error:
        return None, f"zoo.interop.llava is not available ({error})"
    try:
        # transformers wraps PreTrainedModel.to with functools.wraps, whose stub does not bind ``self``
        return to_hf_llava(model).to(device).eval(), None  # type: ignore[arg-type]
    except ZooError as error:
        return None, str(error)


def _side_metrics(timings: dict[str, Timing], batch_size: int, new_tokens: int, prefix: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {}
    for call, timing in timings.items():
        row.update(timing.to_dict(prefix + call))
    generate = timings["generate"]
    row[prefix + "tokens_per_s"] = round(batch_size * new_tokens / (generate.median_ms / 1e3), 3)
    row[prefix + "tokens_per_s_spread"] = round(generate.spread, 4)
    return row


RATIOS = {  # ratio name -> (call, zoo over transformers?)
    "forward_latency_ratio": ("forward", True),
    "prefill_latency_ratio": ("prefill", True),
    "decode_latency_ratio": ("decode_per_token", True),
    "generate_throughput_ratio": ("generate", False),  # tokens/s: transformers' time over zoo's
}


def _ratios(zoo: dict[str, Timing], ref: dict[str, Timing]) -> dict[str, Any]:
    """zoo / transformers ratios of medians, each with its spread (the sum of both sides' spreads)."""
    row: dict[str, Any] = {}
    for name, (call, zoo_over_ref) in RATIOS.items():
        if call in zoo and call in ref:
            a, b = zoo[call], ref[call]
            row[name] = round(a.median_ms / b.median_ms if zoo_over_ref else b.median_ms / a.median_ms, 4)
            row[f"{name}_spread"] = round(a.spread + b.spread, 4)
    return row


def _noise(timings: dict[str, dict[str, Timing]], threshold: float) -> dict[str, Any]:
    """``noisy`` (a timing's IQR / median above ``threshold``, or too few blocks), which ones, the largest spread."""
    named = {
        ("" if side == "zoo" else f"{side}_") + call: timing
        for side, calls in timings.items()
        for call, timing in calls.items()
    }
    spreads = {name: timing.spread for name, timing in named.items()}
    noisy = sorted(name for name, timing in named.items() if timing.noisy(threshold))
    return {
        "noisy": bool(noisy),
        "noisy_timings": ",".join(noisy),
        "spread_max": round(max(spreads.values()), 4),
        "noise_threshold": threshold,
    }


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
    contract, anyres = case.plan.contract, case.plan.anyres
    return {
        "vision_tokens": contract.vision_tokens,
        "image_tokens": _image_tokens(case),
        **({} if anyres is None else {"anyres_tiles": anyres.num_tiles(*bench_image_size(anyres, 0))}),
        "vision_hidden_size": contract.vision_hidden_size,
        "lm_hidden_size": contract.lm_hidden_size,
    }


def _image_tokens(case: Case) -> int:
    """Positions of the benchmark's image (any-res: the tiles of a 1:2 image, :func:`bench_image_size`)."""
    anyres = case.plan.anyres
    return case.plan.contract.image_tokens if anyres is None else anyres.image_tokens(*bench_image_size(anyres, 0))


def _flops_row(model: MultiModal, case: Case, spec: BenchSpec) -> dict[str, Any]:
    seq_len = _image_tokens(case) + spec.prompt_len
    anyres = case.plan.anyres
    tiles = 1 if anyres is None else anyres.num_tiles(*bench_image_size(anyres, 0))
    flops = forward_flops(model, seq_len, tiles=tiles)
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
    row: dict[str, Any] = {}
    with torch.inference_mode(), quiet_transformers():
        sides, left_out = timed_calls(model, ref, inputs, new_tokens)
        row["loadavg_1m"] = machine_state().get("loadavg", [None])[0]
        timings = time_interleaved(sides, min_run_time=spec.min_run_time, rounds=spec.rounds, device=device)
        with PeakMemory(device) as memory:
            sides["zoo"]["forward"]()
            sides["zoo"]["generate"]()
        row["peak_mem_mb"], row["mem_method"] = round(memory.peak_bytes / MB, 3), memory.method
        if "ref" in sides:
            with PeakMemory(device) as memory:
                sides["ref"]["forward"]()
                sides["ref"]["generate"]()
            row["ref_peak_mem_mb"] = round(memory.peak_bytes / MB, 3)
    row.update(_side_metrics(timings["zoo"], batch_size, new_tokens))
    row["min_run_time"], row["rounds"] = spec.min_run_time, spec.rounds
    if left_out:
        row["timings_left_out"] = "; ".join(f"{call}: {reason}" for call, reason in left_out.items())
    if "ref" in timings:
        row.update(_side_metrics(timings["ref"], batch_size, new_tokens, prefix="ref_"))
        row.update(_ratios(timings["zoo"], timings["ref"]))
    row.update(_noise(timings, spec.noise_threshold))
    return row


def run_bench(
    spec: BenchSpec,
    *,
    device: str | torch.device | None = None,
    meta: bool = False,
    reference: bool | None = None,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    train_dir: str | Path | None = None,
) -> BenchRun:
    """Measure every valid combination of ``spec``; skipped ones appear in the results with their reason.

    Args:
        spec: the validated grid (``load_bench``).
        device: where to run (default: CUDA if available, else CPU).
        meta: sizes and FLOPs only, on the ``meta`` device (full-size grids without allocating).
        reference: time transformers' Llava too (default: the spec's ``reference``).
        progress: show progress on stderr: tqdm bars on a terminal, else one line per finished
            combination with i/N, the rate and the ETA.
        shard: ``(I, N)``: run only the ``I``-th of ``N`` slices of the grid (``zoo.bench.grid.shard_of``);
            ``zoo bench merge`` combines the shards' outputs into one report.
        train_dir: where a grid with ``data:`` / ``train:`` sections trains each combination (its
            checkpoints and logs stay there); default: a temporary folder, removed afterwards.
    """
    start = time.perf_counter()
    device = parse_device(device, "--device")
    use_reference = spec.reference if reference is None else reference
    with torch_threads(spec.threads):
        machine = {**machine_info("meta" if meta else device), "start": machine_state()}
        run = BenchRun(spec, [], machine, meta=meta, shard=shard)
        cases = _run(run, device, use_reference, progress)
        if spec.quality is not None and not meta:
            with contextlib.ExitStack() as stack:
                work = Path(train_dir) if train_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
                _quality(run, cases, work, progress)
    if shard is not None:
        for row in run.results:
            row["shard"] = f"{shard[0]}/{shard[1]}"
    run.seconds = time.perf_counter() - start
    machine["end"] = machine_state()
    return run


def _quality(run: BenchRun, cases: list[Case], work: Path, progress: bool) -> None:
    """Train and score every case with the grid's budget (every seed; successive halving if asked); the fields
    go onto each of its rows."""
    from zoo.bench.halving import successive_halving
    from zoo.bench.quality import train_and_evaluate

    spec = run.spec
    quality = spec.quality
    if quality is None:
        return
    if quality.schedule == "halving":
        fields_by, curves, summary = successive_halving(cases, quality, work_dir=work, plugins=spec.plugins,
                                                        max_new_tokens=spec.max_new_tokens, progress=progress)  # fmt: skip
    else:
        fields_by, curves = {}, {}
        bar = _tqdm(cases, progress, desc="zoo bench: train + eval", unit="combo")
        for case in bar:
            label = case.combination.label
            bar.set_postfix_str(label, refresh=False)
            with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its logs; stdout is for --json results
                fields_by[label], curves[label] = train_and_evaluate(
                    case, quality, work_dir=work, plugins=spec.plugins, max_new_tokens=spec.max_new_tokens
                )
        total = sum(int(f.get("train_steps_total", 0)) for f in fields_by.values())
        summary = {"schedule": "full", "seeds": quality.seeds, "steps_total": total}
    run.quality_summary = summary
    run.loss_curves.update(curves)
    for row in run.results:
        if row["combination"] in fields_by:
            row.update(fields_by[row["combination"]])
    from zoo.bench.quality import rank

    rank(run.results)  # sets tied_with_best on the rows


def _run(run: BenchRun, device: torch.device, use_reference: bool, progress: bool) -> list[Case]:
    from zoo.core.builder import build

    spec, meta, results = run.spec, run.meta, run.results
    cases, skipped = plan_grid(spec, run.shard)
    model: MultiModal | None
    if meta:
        bar = _tqdm(cases, progress, desc="zoo bench --meta", unit="combo")
        for case in bar:
            bar.set_postfix_str(case.combination.label, refresh=False)
            built = time.perf_counter()
            model = build(case.plan, meta=True)
            row = {**_base_row(case, None, spec), **_contract_row(case), **_component_rows(model, meta=True)}
            row["build_s"] = round(case.plan.plan_seconds + time.perf_counter() - built, 4)
            row.update(_flops_row(model, case, spec))
            results.append(row)
    else:
        dtypes = sorted({case.config.dtype for case in cases})
        run.matmul_peak_flops = {d: matmul_peak(device, getattr(torch, d), budget_s=spec.min_run_time) for d in dtypes}
        cache = ComponentCache(device)
        bar = _tqdm(None, progress, total=len(cases), desc="zoo bench", unit="combo")
        for case, model, info in build_models(cases, cache):
            bar.set_postfix_str(case.combination.label, refresh=False)
            results.extend(_measure_case(case, model, info, spec, device, use_reference, run))
            bar.update(1)  # one per finished combination (all its batch sizes)
            del model  # free it before the next case's components are built
        bar.close()
        run.component_builds = dict(cache.builds)
    results.extend(_skipped_row(skip, spec) for skip in skipped)
    return cases


def _measure_case(case, model, info, spec, device, use_reference, run) -> list[dict[str, Any]]:
    if model is None:
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
    except Exception as error:  # noqa: BLE001 - one failing combination is reported, the grid goes on
        failed = {**_base_row(case, None, spec), **common, "status": "failed"}
        rows.append({**failed, "reason": f"{type(error).__name__}: {error}", "error_type": type(error).__name__})
    return rows
