"""Bench outputs: a terminal table, ``results.json``, ``results.csv``, ``report.md`` and PNG plots.

``results.json`` is a list of flat result objects, one per combination and batch size (skipped and
failed combinations included, with ``status`` and ``reason``). Fields ending in ``_ratio`` are
zoo / transformers ratios measured in the same run on the same weights.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.bench.runner import BenchRun

__all__ = ["format_table", "plot", "write_csv", "write_json", "write_outputs", "write_report"]

LEADING = [
    "id", "status", "vision", "projector", "lm", "image_size", "dtype", "batch_size", "params_total",
    "trainable_total", "image_tokens", "flops_per_sample", "build_s", "vision_encode_ms_median", "forward_ms_median",
    "prefill_ms_median", "decode_per_token_ms_median", "tokens_per_s", "peak_mem_mb", "forward_latency_ratio",
    "generate_throughput_ratio",
]  # fmt: skip
LATENCY_CALLS = ("vision_encode", "forward", "prefill", "decode_per_token")


def _si(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{suffix}{unit}"
    return f"{value:.3g}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _columns(meta: bool) -> list[tuple[str, Any]]:
    if meta:
        return [
            ("combination", lambda r: r["id"]),
            ("vision", lambda r: _si(r["params_vision"])),
            ("projector", lambda r: _si(r["params_projector"])),
            ("lm", lambda r: _si(r["params_lm"])),
            ("params", lambda r: _si(r["params_total"])),
            ("trainable", lambda r: _si(r["trainable_total"])),
            ("img tok", lambda r: str(r["image_tokens"])),
            ("FLOP/sample", lambda r: _si(r["flops_per_sample"])),
            ("weights MB", lambda r: _num(r["weights_mb"], 1)),
            ("build s", lambda r: _num(r["build_s"], 3)),
        ]
    return [
        ("combination", lambda r: r["id"]),
        ("params", lambda r: _si(r["params_total"])),
        ("img tok", lambda r: str(r["image_tokens"])),
        ("FLOP/sample", lambda r: _si(r["flops_per_sample"])),
        ("build s", lambda r: _num(r["build_s"], 3)),
        ("encode ms", lambda r: _num(r["vision_encode_ms_median"])),
        ("forward ms", lambda r: _num(r["forward_ms_median"])),
        ("prefill ms", lambda r: _num(r["prefill_ms_median"])),
        ("decode ms/tok", lambda r: _num(r["decode_per_token_ms_median"])),
        ("tok/s", lambda r: _num(r["tokens_per_s"], 1)),
        ("mem MB", lambda r: _num(r["peak_mem_mb"], 1)),
        ("% peak", lambda r: _num(100 * r["peak_fraction"], 1)),
        ("fwd ratio", lambda r: _num(r.get("forward_latency_ratio"), 3)),
        ("gen ratio", lambda r: _num(r.get("generate_throughput_ratio"), 3)),
    ]


def _rows(run: BenchRun) -> tuple[list[str], list[list[str]]]:
    columns = _columns(run.meta)
    return [name for name, _ in columns], [[fn(r) for _, fn in columns] for r in run.ok]


def format_table(run: BenchRun) -> str:
    """The terminal table: one line per measured combination, then the skipped and failed ones."""
    header, rows = _rows(run)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    align = [str.ljust] + [str.rjust] * (len(header) - 1)
    lines = ["  ".join(a(h, w) for a, h, w in zip(align, header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(a(c, w) for a, c, w in zip(align, row, widths)) for row in rows]
    for row in run.results:
        if row["status"] != "ok":
            lines.append(f"{row['status']}: {row['id']}: {row['reason']}")
    ok = len(run.ok)
    lines.append(
        f"{ok} measured, {sum(r['status'] == 'skipped' for r in run.results)} skipped, "
        f"{sum(r['status'] == 'failed' for r in run.results)} failed in {run.seconds:.1f} s on {_machine_line(run)}"
    )
    return "\n".join(lines)


def _machine_line(run: BenchRun) -> str:
    m = run.machine
    where = m["gpu"] or f"{m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} torch threads)"
    return f"{where}, torch {m['torch']}" + (" [meta]" if run.meta else "")


def write_json(run: BenchRun, path: str | Path) -> Path:
    """``results.json``: the list of result objects."""
    path = Path(path)
    path.write_text(json.dumps(run.results, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _fieldnames(results: Sequence[dict[str, Any]]) -> list[str]:
    present = {k for row in results for k in row}
    rest = sorted(present - set(LEADING))
    return [k for k in LEADING if k in present] + rest


def write_csv(run: BenchRun, path: str | Path) -> Path:
    """``results.csv``: one row per result, the union of all fields as columns."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_fieldnames(run.results), restval="")
        writer.writeheader()
        for row in run.results:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return path


def _stacked_chart(ax, labels: list[str], series: dict[str, list[float]]) -> None:
    left = [0.0] * len(labels)
    for name, values in series.items():
        ax.barh(range(len(labels)), values, left=left, height=0.7, label=name)
        left = [a + b for a, b in zip(left, values)]
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.legend(fontsize=7)
    ax.grid(axis="x", alpha=0.3)


def _bar_chart(ax, labels: list[str], series: dict[str, list[float]], errors: dict[str, Any] | None = None):
    count = max(1, len(series))
    height = 0.8 / count
    for index, (name, values) in enumerate(series.items()):
        positions = [i + (index - (count - 1) / 2) * height for i in range(len(labels))]
        xerr = errors.get(name) if errors else None
        ax.barh(positions, values, height=height, xerr=xerr, label=name, capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.legend(fontsize=7)
    ax.grid(axis="x", alpha=0.3)


def _figure(rows: int, cols: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    height = max(2.5, 0.45 * rows + 1.5)
    return plt, *plt.subplots(1, cols, figsize=(7 * cols, height), squeeze=False)


def plot(run: BenchRun, out: str | Path) -> list[Path]:
    """PNG plots: latency and memory per combination and zoo vs transformers (``--meta``: params, FLOPs)."""
    out = Path(out)
    rows = run.ok
    labels = [r["id"] for r in rows]
    written = []

    def save(fig, plt, name: str, title: str) -> None:
        fig.suptitle(f"{title}\n{_machine_line(run)}", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)

    if run.meta:
        plt, fig, axes = _figure(len(rows), 2)
        kinds = ("vision", "projector", "lm")
        _stacked_chart(axes[0][0], labels, {k: [r[f"params_{k}"] / 1e6 for r in rows] for k in kinds})
        axes[0][0].set_xlabel("parameters (M)")
        _stacked_chart(axes[0][1], labels, {k: [r[f"flops_{k}"] / 1e9 for r in rows] for k in kinds})
        axes[0][1].set_xlabel("GFLOP per sample (one forward)")
        save(fig, plt, "params_flops.png", "zoo bench --meta: sizes and FLOPs")
        return written

    plt, fig, axes = _figure(len(rows))
    series = {c: [r[f"{c}_ms_median"] for r in rows] for c in LATENCY_CALLS}
    errors = {  # whiskers from the first to the third quartile
        c: [[max(0.0, r[f"{c}_ms_median"] - r[f"{c}_ms_q1"]) for r in rows],
            [max(0.0, r[f"{c}_ms_q3"] - r[f"{c}_ms_median"]) for r in rows]]
        for c in LATENCY_CALLS
    }  # fmt: skip
    _bar_chart(axes[0][0], labels, series, errors)
    if rows and min(min(v) for v in series.values()) > 0:
        axes[0][0].set_xscale("log")
    axes[0][0].set_xlabel("milliseconds (median; whiskers: first to third quartile)")
    save(fig, plt, "latency.png", "latency per combination")

    plt, fig, axes = _figure(len(rows))
    memory = {"peak (run)": [r["peak_mem_mb"] for r in rows], "weights": [r["weights_mb"] for r in rows]}
    if any("ref_peak_mem_mb" in r for r in rows):
        memory["transformers peak (run)"] = [r.get("ref_peak_mem_mb", 0.0) for r in rows]
    _bar_chart(axes[0][0], labels, memory)
    axes[0][0].set_xlabel(f"MiB ({rows[0]['mem_method'] if rows else 'peak memory'})")
    save(fig, plt, "memory.png", "memory per combination")

    with_ref = [r for r in rows if r.get("forward_latency_ratio") is not None]
    plt, fig, axes = _figure(len(with_ref), 2)
    if with_ref:
        ref_labels = [r["id"] for r in with_ref]
        forward = {"zoo": [r["forward_ms_median"] for r in with_ref],
                   "transformers": [r["ref_forward_ms_median"] for r in with_ref]}  # fmt: skip
        _bar_chart(axes[0][0], ref_labels, forward)
        axes[0][0].set_xlabel("forward ms (median)")
        throughput = {"zoo": [r["tokens_per_s"] for r in with_ref],
                      "transformers": [r["ref_tokens_per_s"] for r in with_ref]}  # fmt: skip
        _bar_chart(axes[0][1], ref_labels, throughput)
        axes[0][1].set_xlabel("generated tokens / s (median)")
    else:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no combination fits transformers' Llava layout", ha="center", va="center")
            ax.set_axis_off()
    save(fig, plt, "reference.png", "zoo vs transformers LlavaForConditionalGeneration (same weights)")
    return written


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(run: BenchRun, path: str | Path, plots: Sequence[Path] = ()) -> Path:
    """``report.md``: machine, grid, results table, skipped combinations, ratios, plots, definitions."""
    import yaml

    path = Path(path)
    m = run.machine
    header, rows = _rows(run)
    parts = [
        "# zoo bench report" + (" (meta: sizes and FLOPs only)" if run.meta else ""),
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores ({m['torch_threads']} torch threads)"
        + (f", GPU {m['gpu']}" if m["gpu"] else ", no GPU")
        + f"; {m['platform']}; python {m['python']}, torch {m['torch']}, transformers {m['transformers']}.",
        f"Device: `{m['device']}`. Run time: {run.seconds:.1f} s. Grid: `{run.spec.source}`.",
    ]
    if run.matmul_peak_flops:
        peaks = ", ".join(f"{d}: {_si(v, 'FLOP/s')}" for d, v in run.matmul_peak_flops.items())
        parts.append(f"Matmul peak measured in this run: {peaks}.")
    if run.component_builds:
        parts.append(f"Components built for real: {run.component_builds} (each once per grid).")
    parts += ["", "```yaml", yaml.safe_dump(run.spec.to_dict(), sort_keys=False).rstrip(), "```", "", "## Results", ""]
    parts.append(_markdown_table(header, rows) if rows else "No combination was measured.")
    with_ref = [r for r in run.ok if r.get("forward_latency_ratio") is not None]
    if with_ref:
        parts += ["", "## zoo / transformers (same weights, interleaved repeats)", ""]
        ratio_rows = [
            [r["id"], _num(r["forward_latency_ratio"], 3), _num(r["prefill_latency_ratio"], 3),
             _num(r["generate_throughput_ratio"], 3)]
            for r in with_ref
        ]  # fmt: skip
        parts.append(_markdown_table(["combination", "forward latency", "prefill latency", "generate throughput"],
                                     ratio_rows))  # fmt: skip
    no_ref = sorted({(r["combination"], r["reference_skipped"]) for r in run.ok if r.get("reference_skipped")})
    if no_ref:
        parts += ["", "Not compared with transformers:", ""]
        parts += [f"- `{combo}`: {reason}" for combo, reason in no_ref]
    others = [r for r in run.results if r["status"] != "ok"]
    if others:
        parts += ["", "## Skipped and failed", ""]
        parts += [f"- **{r['status']}** `{r['id']}`: {r['reason']}" for r in others]
    if plots:
        parts += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    parts += ["", "## Definitions", "", *DEFINITIONS]
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


DEFINITIONS = [
    "- Latencies are medians over `repeats` timed runs after `warmup` untimed ones; IQR in results.json/csv.",
    "- `vision_encode`: tower + projector on the batch's images. `forward`: one full forward (image + prompt,"
    " logits for every position, no cache). `prefill`: `generate(max_new_tokens=1)` (time to first token).",
    "- `decode_per_token`: (generate(N) - prefill) / (N - 1) per repeat; `tokens_per_s`: batch x N / generate(N).",
    "- FLOPs: `torch.utils.flop_counter` over one forward of one sample (matmuls, convolutions, attention).",
    "- `peak_fraction`: forward FLOP/s achieved over a square-matmul peak measured on this machine in this run.",
    "- Memory: CUDA `max_memory_allocated` above the allocation before the run, or on CPU the peak RSS (sampled"
    " every ms with psutil) above the RSS before one forward + one generate; weights are already resident.",
    "- `*_ratio`: zoo / transformers `LlavaForConditionalGeneration` holding the same weights, repeats"
    " interleaved (ABBA) to cancel drift: `forward_latency_ratio` < 1 and `generate_throughput_ratio` > 1"
    " favour zoo.",
]


def write_outputs(run: BenchRun, out: str | Path) -> dict[str, Path]:
    """Write every output into ``out`` (created if needed); return the paths by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot(run, out)
    return {
        "json": write_json(run, out / "results.json"),
        "csv": write_csv(run, out / "results.csv"),
        "report": write_report(run, out / "report.md", plots),
        **{p.stem: p for p in plots},
    }
