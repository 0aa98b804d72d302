"""Bench outputs: a terminal table, ``results.json``, ``results.csv``, ``run.json``, ``report.md``, plots.

``results.json`` is a list of flat result objects, one per combination and batch size (skipped and
failed combinations included, with ``status`` and ``reason``). Fields ending in ``_ratio`` are
zoo / transformers ratios measured in the same run on the same weights; every timing has a ``_spread``
(IQR / median) and a row with a spread above the grid's ``noise_threshold`` has ``noisy: true``.
``run.json`` holds the rest (grid, machine, load at start and end, shard), which ``zoo bench merge``
reads back.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.bench.quality import rank
from zoo.bench.runner import BenchRun
from zoo.sdk.specs import SLOTS

__all__ = [
    "explain_missing_timings",
    "format_table",
    "memory_unit",
    "plot",
    "plot_quality",
    "ranking_markdown",
    "write_csv",
    "write_json",
    "write_outputs",
    "write_report",
    "write_run",
]

LEADING = [
    "id", "status", "vision", "projector", "lm", "image_size", "dtype", "batch_size", "params_total",
    "trainable_total", "image_tokens", "flops_per_sample", "build_s", "vision_encode_ms_median", "forward_ms_median",
    "prefill_ms_median", "decode_per_token_ms_median", "tokens_per_s", "peak_mem_mb", "noisy", "spread_max",
    "noisy_timings", "forward_latency_ratio", "decode_latency_ratio", "generate_throughput_ratio", "eval_accuracy",
    "blank_image_accuracy", "eval_loss", "quality_status",
]  # fmt: skip
LATENCY_CALLS = ("vision_encode", "forward", "prefill", "decode_per_token")


def _si(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{suffix}{unit}"
    return f"{value:.3g}{unit}" if isinstance(value, float) else f"{value}{unit}"


MIB = 2**20
_BYTE_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("B", 1))


def memory_unit(largest_bytes: float) -> tuple[str, float]:
    """The binary unit (name, bytes) in which ``largest_bytes`` reads as a number from 1 to 1023."""
    for name, size in _BYTE_UNITS:
        if abs(largest_bytes) >= size:
            return name, size
    return "B", 1


def _bytes(value: float) -> str:
    name, size = memory_unit(value)
    return f"{value / size:.3g} {name}"


def _num(value: Any, digits: int = 2) -> str:
    if _missing(value):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _missing(value: Any) -> bool:
    """No number to show: absent, ``None`` or NaN (a row may lack any measurement; it shows as "-")."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _scaled(value: Any, factor: float) -> float | None:
    return None if _missing(value) else value * factor


def _text(value: Any) -> str:
    return "-" if _missing(value) else str(value)


def _columns(meta: bool) -> list[tuple[str, Any]]:
    """The table's columns: every one reads its field with ``.get`` (a row without it shows "-")."""
    if meta:
        return [
            ("combination", lambda r: _text(r.get("id"))),
            ("vision", lambda r: _si(r.get("params_vision"))),
            ("projector", lambda r: _si(r.get("params_projector"))),
            ("lm", lambda r: _si(r.get("params_lm"))),
            ("params", lambda r: _si(r.get("params_total"))),
            ("trainable", lambda r: _si(r.get("trainable_total"))),
            ("img tok", lambda r: _text(r.get("image_tokens"))),
            ("FLOP/sample", lambda r: _si(r.get("flops_per_sample"))),
            ("weights MB", lambda r: _num(r.get("weights_mb"), 1)),
            ("build s", lambda r: _num(r.get("build_s"), 3)),
        ]
    return [
        ("combination", lambda r: _text(r.get("id"))),
        ("params", lambda r: _si(r.get("params_total"))),
        ("img tok", lambda r: _text(r.get("image_tokens"))),
        ("FLOP/sample", lambda r: _si(r.get("flops_per_sample"))),
        ("build s", lambda r: _num(r.get("build_s"), 3)),
        ("encode ms", lambda r: _num(r.get("vision_encode_ms_median"))),
        ("forward ms", lambda r: _num(r.get("forward_ms_median"))),
        ("prefill ms", lambda r: _num(r.get("prefill_ms_median"))),
        ("decode ms/tok", lambda r: _num(r.get("decode_per_token_ms_median"))),
        ("tok/s", lambda r: _num(r.get("tokens_per_s"), 1)),
        ("mem", lambda r: "-" if _missing(r.get("peak_mem_mb")) else _bytes(r["peak_mem_mb"] * MIB)),
        ("% peak", lambda r: _num(_scaled(r.get("peak_fraction"), 100), 1)),
        ("fwd ratio", lambda r: _num(r.get("forward_latency_ratio"), 3)),
        ("gen ratio", lambda r: _num(r.get("generate_throughput_ratio"), 3)),
        ("spread", lambda r: "-" if _missing(r.get("spread_max")) else f"{100 * r['spread_max']:.0f}%"),
        ("", lambda r: "NOISY" if r.get("noisy") else ""),
    ]


TIMED_FIELDS = {  # a measured row's timing fields, by the call that makes them
    "vision_encode_ms_median": "vision_encode",
    "forward_ms_median": "forward",
    "prefill_ms_median": "prefill",
    "decode_per_token_ms_median": "decode_per_token",
    "tokens_per_s": "generate",
}


def explain_missing_timings(results: Sequence[dict[str, Any]]) -> None:
    """Give every measured row that lacks a timing its reason in ``timings_left_out`` (the table shows "-").

    The runner records why it left a call out (a KV cache that cannot be rolled back); a timing missing
    without a recorded reason (a merged shard of another version, a call that produced nothing) is named too.
    """
    for row in results:
        if row.get("status") != "ok":
            continue
        stated = str(row.get("timings_left_out") or "")
        calls = dict.fromkeys(call for key, call in TIMED_FIELDS.items() if _missing(row.get(key)))
        unexplained = [f"{call}: not measured (no reason recorded)" for call in calls if f"{call}:" not in stated]
        if unexplained:
            row["timings_left_out"] = "; ".join([stated, *unexplained] if stated else unexplained)


QUALITY_COLUMNS: list[tuple[str, Any]] = [
    ("acc", lambda r: _accuracy_cell(r)),
    ("blank acc", lambda r: _pct(r.get("blank_image_accuracy"))),
    ("eval loss", lambda r: _num(r.get("eval_loss"), 3)),
    ("quality", lambda r: r.get("quality_status", "-")),
]


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _has_quality(run: BenchRun) -> bool:
    return any("quality_status" in r for r in run.results)


def _rows(run: BenchRun) -> tuple[list[str], list[list[str]]]:
    columns = _columns(run.meta) + (QUALITY_COLUMNS if _has_quality(run) else [])
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
            lines.append(f"{row['status']}: {row['id']}: {row.get('reason', '-')}")
    ok = len(run.ok)
    lines.append(
        f"{ok} measured, {sum(r['status'] == 'skipped' for r in run.results)} skipped, "
        f"{sum(r['status'] == 'failed' for r in run.results)} failed in {run.seconds:.1f} s on {_machine_line(run)}"
    )
    lines.append(_load_line(run))
    if run.noisy:
        lines.append(
            f"{len(run.noisy)} of {ok} rows NOISY: a timing's IQR exceeds {100 * run.spec.noise_threshold:.0f}% of "
            "its median; rerun on a quieter machine or with a larger min_run_time before trusting those numbers"
        )
    return "\n".join(lines)


def _load_line(run: BenchRun) -> str:
    """Load averages at start and end against the cores (one line per part of a merged run)."""
    parts = run.parts or [{"machine": run.machine, "shard": list(run.shard) if run.shard else None}]
    lines = []
    for part in parts:
        m = part["machine"]
        start, end = m.get("start", {}).get("loadavg"), m.get("end", {}).get("loadavg")
        if start is None:
            continue
        where = f"shard {part['shard'][0]}/{part['shard'][1]} " if part.get("shard") else ""
        busy = " (busier than its cores: expect noise)" if max(start[0], (end or start)[0]) > m["cpu_count"] else ""
        lines.append(
            f"{where}load average (1/5/15 min) at start {start}, at end {end}, on {m['cpu_count']} cores{busy}"
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
    _bar_axes(ax, labels)


def _bar_axes(ax, labels: list[str]) -> None:
    """Labels down the left, the legend outside on the right (never over a bar), a light grid."""
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    ax.grid(axis="x", alpha=0.3)


def _bar_chart(ax, labels: list[str], series: dict[str, list[float]], errors: dict[str, Any] | None = None):
    count = max(1, len(series))
    height = 0.8 / count
    for index, (name, values) in enumerate(series.items()):
        positions = [i + (index - (count - 1) / 2) * height for i in range(len(labels))]
        xerr = errors.get(name) if errors else None
        ax.barh(positions, values, height=height, xerr=xerr, label=name, capsize=2, error_kw={"elinewidth": 0.8})
    _bar_axes(ax, labels)


def _value(row: dict[str, Any], key: str) -> float:
    """A number to plot: the field, or NaN where the row lacks it (matplotlib draws no bar for NaN)."""
    value = row.get(key)
    return math.nan if value is None or _missing(value) else float(value)


def _whiskers(rows: list[dict[str, Any]], prefix: str) -> list[list[float]]:
    """Error-bar lengths from the median down to the first and up to the third quartile of ``prefix`` (0 when
    a row lacks them)."""

    def gap(row: dict[str, Any], low: str, high: str) -> float:
        width = _value(row, f"{prefix}_ms_{high}") - _value(row, f"{prefix}_ms_{low}")
        return 0.0 if math.isnan(width) else max(0.0, width)

    return [[gap(r, "q1", "median") for r in rows], [gap(r, "median", "q3") for r in rows]]


def _figure(rows: int, cols: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    height = max(2.5, 0.45 * rows + 1.5)
    return plt, *plt.subplots(1, cols, figsize=(8 * cols, height), squeeze=False)


def _save(run: BenchRun, fig, plt, path: Path, title: str) -> Path:
    fig.suptitle(f"{title}\n{_machine_line(run)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight": keeps the legends outside the axes
    plt.close(fig)
    return path


def plot(run: BenchRun, out: str | Path) -> list[Path]:
    """PNG plots: latency and memory per combination and zoo vs transformers (``--meta``: params, FLOPs)."""
    out = Path(out)
    rows = run.ok
    labels = [r["id"] for r in rows]
    written = []

    def save(fig, plt, name: str, title: str) -> None:
        written.append(_save(run, fig, plt, out / name, title))

    if run.meta:
        plt, fig, axes = _figure(len(rows), 2)
        kinds = SLOTS
        _stacked_chart(axes[0][0], labels, {k: [r[f"params_{k}"] / 1e6 for r in rows] for k in kinds})
        axes[0][0].set_xlabel("parameters (M)")
        _stacked_chart(axes[0][1], labels, {k: [r[f"flops_{k}"] / 1e9 for r in rows] for k in kinds})
        axes[0][1].set_xlabel("GFLOP per sample (one forward)")
        save(fig, plt, "params_flops.png", "zoo bench --meta: sizes and FLOPs")
        return written

    plt, fig, axes = _figure(len(rows))
    series = {c: [_value(r, f"{c}_ms_median") for r in rows] for c in LATENCY_CALLS}
    errors = {c: _whiskers(rows, c) for c in LATENCY_CALLS}
    _bar_chart(axes[0][0], labels, series, errors)
    measured = [v for values in series.values() for v in values if not math.isnan(v)]
    if measured and min(measured) > 0:
        axes[0][0].set_xscale("log")
    axes[0][0].set_xlabel("milliseconds (median; whiskers: first to third quartile)")
    save(fig, plt, "latency.png", "latency per combination")

    plt, fig, axes = _figure(len(rows))
    memory = {
        "peak (run)": [_value(r, "peak_mem_mb") for r in rows],
        "weights": [_value(r, "weights_mb") for r in rows],
    }
    if any("ref_peak_mem_mb" in r for r in rows):
        memory["transformers peak (run)"] = [_value(r, "ref_peak_mem_mb") for r in rows]
    largest = max((v for values in memory.values() for v in values if not math.isnan(v)), default=0.0)
    unit, size = memory_unit(largest * MIB)
    memory = {name: [v * MIB / size for v in values] for name, values in memory.items()}
    _bar_chart(axes[0][0], labels, memory)
    axes[0][0].set_xlabel(f"{unit} ({rows[0].get('mem_method', 'peak memory') if rows else 'peak memory'})")
    save(fig, plt, "memory.png", "memory per combination")

    with_ref = [r for r in rows if r.get("forward_latency_ratio") is not None]
    plt, fig, axes = _figure(len(with_ref), 2)
    if with_ref:
        ref_labels = [r["id"] for r in with_ref]
        sides = {"zoo": "", "transformers": "ref_"}
        forward = {side: [_value(r, f"{p}forward_ms_median") for r in with_ref] for side, p in sides.items()}
        _bar_chart(
            axes[0][0], ref_labels, forward, {side: _whiskers(with_ref, f"{p}forward") for side, p in sides.items()}
        )
        axes[0][0].set_xlabel("forward ms (median; whiskers: first to third quartile)")
        throughput = {side: [_value(r, f"{p}tokens_per_s") for r in with_ref] for side, p in sides.items()}
        # tokens/s is batch x N / generate time: its quartiles come from generate's, the other way round
        errors = {side: _throughput_whiskers(with_ref, p) for side, p in sides.items()}
        _bar_chart(axes[0][1], ref_labels, throughput, errors)
        axes[0][1].set_xlabel("generated tokens / s (median; whiskers: quartiles)")
    else:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no combination fits transformers' Llava layout", ha="center", va="center")
            ax.set_axis_off()
    save(fig, plt, "reference.png", "zoo vs transformers LlavaForConditionalGeneration (same weights)")
    if _has_quality(run):
        written += plot_quality(run, out)
    return written


def _throughput_whiskers(rows: list[dict[str, Any]], prefix: str) -> list[list[float]]:
    """Quartile whiskers of tokens/s from those of generate's time (0 where a row lacks them)."""

    def bar(row: dict[str, Any], quartile: str) -> float:
        rate, median = _value(row, f"{prefix}tokens_per_s"), _value(row, f"{prefix}generate_ms_median")
        bound = _value(row, f"{prefix}generate_ms_{quartile}")
        width = rate * (1 - median / bound) if quartile == "q3" else rate * (median / bound - 1)
        return 0.0 if math.isnan(width) or math.isinf(width) else max(0.0, width)

    return [[bar(r, "q3") for r in rows], [bar(r, "q1") for r in rows]]


def plot_quality(run: BenchRun, out: str | Path) -> list[Path]:
    """``pareto.png`` (held-out accuracy against FLOPs and latency, labelled) and ``loss_curves.png``."""
    out = Path(out)
    written: list[Path] = []

    def save(fig, plt, name: str, title: str) -> None:
        written.append(_save(run, fig, plt, out / name, title))

    ranked = [r for r in rank(run.results) if r["quality_status"] != "failed"]
    plt, fig, axes = _figure(0, 2)
    fig.set_size_inches(14, 5.5)
    _pareto(axes[0][0], ranked, "flops_per_sample", "forward FLOPs per sample", log=True)
    _pareto(axes[0][1], ranked, "forward_ms_median", "forward latency, ms (median)", log=False)
    title = "held-out accuracy against cost (line: the Pareto front"
    title += (
        "; bars: intervals over seeds and items)"
        if any(r.get("eval_accuracy_low") is not None for r in ranked)
        else ")"
    )
    save(fig, plt, "pareto.png", title)
    plt, fig, axes = _figure(0)
    fig.set_size_inches(10, 5)
    ax = axes[0][0]
    for label, curve in sorted(run.loss_curves.items()):
        if curve:
            losses = [math.nan if p[1] is None else p[1] for p in curve]  # None: a NaN loss (diverged)
            ax.plot([p[0] for p in curve], losses, label=_short(label), linewidth=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    save(fig, plt, "loss_curves.png", "training loss of every combination (same data order, seed and budget)")
    return written


def _short(label: str) -> str:
    """A combination label without the dtype suffix (every point of one plot shares it)."""
    return label.rsplit("/", 1)[0]


def _pareto(ax, rows: list[dict[str, Any]], cost: str, xlabel: str, *, log: bool) -> None:
    """Accuracy against ``cost``, every point labelled with its combination, the Pareto front drawn."""
    points = [(r[cost], r["eval_accuracy"], r) for r in rows if r.get(cost) is not None]
    if not points:
        ax.text(0.5, 0.5, f"no {cost} measured", ha="center", va="center")
        ax.set_axis_off()
        return
    # four label positions in turn, in order of the points: labels of coinciding points do not overlap
    placements = [((5, 5), "left"), ((5, -10), "left"), ((-5, 5), "right"), ((-5, -10), "right")]
    for index, (x, y, row) in enumerate(sorted(points, key=lambda p: (p[1], p[0]))):
        diverged = row["quality_status"] == "diverged"
        color = "tab:red" if diverged else "tab:grey" if row["quality_status"] == "pruned" else "tab:blue"
        ax.scatter([x], [y], color=color, marker="x" if diverged else "o", zorder=3)
        if row.get("eval_accuracy_low") is not None:  # the interval over seeds and items: an error bar
            error = [[y - row["eval_accuracy_low"]], [row["eval_accuracy_high"] - y]]
            ax.errorbar([x], [y], yerr=error, color=color, capsize=3, linewidth=1, zorder=2)
        offset, align = placements[index % len(placements)]
        note = " (diverged)" if diverged else f" (pruned at {row.get('pruned_at_step')})" if color == "tab:grey" else ""
        text = "+".join(row[kind] for kind in SLOTS) + note
        ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", fontsize=6, ha=align)
    front, best = [], -1.0
    full = [p for p in points if p[2]["quality_status"] != "pruned"]  # a pruned score is at a smaller budget
    for x, y, _ in sorted(full, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:green", alpha=0.6, zorder=2)
    baseline = rows[0].get("majority_baseline")
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", linewidth=0.8, label="majority baseline")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out exact match")
    ax.grid(alpha=0.3)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _machine_text(m: dict[str, Any]) -> str:
    return (
        f"{m['cpu']}, {m['cpu_count']} cores ({m['torch_threads']} torch threads)"
        + (f", GPU {m['gpu']}" if m["gpu"] else ", no GPU")
        + f"; {m['platform']}; python {m['python']}, torch {m['torch']}, transformers {m['transformers']}"
    )


def _parts_section(run: BenchRun) -> list[str]:
    """One line per shard of a merged run: where it ran, how long, how busy the machine was."""
    lines = ["", "## Shards", "", "Absolute times compare only within a shard; ratios compare everywhere.", ""]
    table = []
    for part in run.parts:
        m, shard = part["machine"], part.get("shard")
        loads = [m.get(when, {}).get("loadavg", ["?"])[0] for when in ("start", "end")]
        table.append([
            f"{shard[0]}/{shard[1]}" if shard else "all", m.get("host", "?"), m["gpu"] or m["cpu"],
            f"{loads[0]} -> {loads[1]} ({m['cpu_count']} cores)", f"{part['seconds']:.1f}",
        ])  # fmt: skip
    lines.append(_markdown_table(["shard", "host", "GPU or CPU", "load average 1 min, start -> end", "s"], table))
    return lines


def _noise_section(run: BenchRun) -> list[str]:
    if not run.noisy:
        return []
    threshold = 100 * run.spec.noise_threshold
    lines = ["", "## Noisy rows", ""]
    lines.append(
        f"These rows have a timing whose IQR exceeds {threshold:.0f}% of its median (`noise_threshold`): their "
        "numbers say more about the machine than about the combination. Rerun them on a quieter machine or with "
        "a larger `min_run_time`."
    )
    lines.append("")
    lines += [
        f"- `{r['id']}`: {r.get('noisy_timings', '-')} (largest spread {_num(_scaled(r.get('spread_max'), 100), 0)}%)"
        for r in run.noisy
    ]
    return lines


def _accuracy_cell(row: dict[str, Any]) -> str:
    """``81.2% [78.0, 84.1]`` (mean over seeds with its interval) or ``81.2%``."""
    text = _pct(row.get("eval_accuracy"))
    low, high = row.get("eval_accuracy_low"), row.get("eval_accuracy_high")
    if low is None or high is None:
        return text
    return f"{text} [{100 * low:.1f}, {100 * high:.1f}]"


def _status_cell(row: dict[str, Any]) -> str:
    status = row["quality_status"]
    if status == "pruned":
        return f"pruned at step {row.get('pruned_at_step')} ({_pct(row.get('pruned_score'))})"
    return status + (f": {row['quality_reason']}" if row.get("quality_reason") else "")


def _tie_cell(row: dict[str, Any]) -> str:
    return {"best": "best", True: "tied", False: ""}.get(row.get("tied_with_best"), "")  # type: ignore[arg-type]


def ranking_markdown(run: BenchRun) -> list[str]:
    """The ``## Quality ranking`` section of ``report.md`` (empty without quality results), then where each
    combination's training step time goes."""
    ranked = rank(run.results)
    if not ranked:
        return []
    sections = run.spec.sections
    train = sections.get("train", {})
    summary = run.quality_summary
    seeds = summary.get("seeds", 1)
    lines = ["", "## Quality ranking", ""]
    lines.append(
        "Every combination trained with the same `train:` settings (seed, data order, steps) on `data.train`, "
        "then scored on `data.eval` by exact match, once with the images and once with blank ones; ranked by "
        f"held-out accuracy, then held-out loss; diverged (NaN) and failed combinations last. Budget: {train}."
    )
    if seeds > 1:
        confidence = (sections.get("quality") or {}).get("confidence", 0.95)
        lines += ["", f"Each combination trained with {seeds} seeds (`train.seed` + 0..{seeds - 1}: random init and "
                  f"data order); accuracy is the mean over seeds and held-out items with its {100 * confidence:.0f}% "
                  "bootstrap interval (seeds and items resampled, fixed bootstrap seed); `tied` marks the "
                  "combinations whose interval overlaps the best one's. The blank-image control is the first "
                  "seed's model."]  # fmt: skip
    if summary.get("schedule") == "halving":
        lines += ["", _halving_text(summary)]
    lines.append("")
    table = [
        [str(i + 1), r["combination"], _accuracy_cell(r), _tie_cell(r), _pct(r.get("blank_image_accuracy")),
         _pct(r.get("majority_baseline")), _num(r.get("eval_loss"), 3), _num(r.get("train_loss_final"), 3),
         _si(r.get("trainable_params")), _si(r.get("flops_per_sample")), _num(r.get("forward_ms_median")),
         str(r.get("train_steps_total", r.get("train_steps", "-"))), _num(r.get("train_seconds"), 1),
         _num(r.get("train_samples_per_s"), 1), _status_cell(r)]
        for i, r in enumerate(ranked)
    ]  # fmt: skip
    header = ["rank", "combination", "accuracy", "tie", "blank-image acc", "majority", "eval loss",
              "final train loss", "trainable", "FLOP/sample", "forward ms", "train steps", "train s", "samples/s",
              "status"]  # fmt: skip
    lines.append(_markdown_table(header, table))
    return lines + _time_section(ranked)


def _halving_text(summary: dict[str, Any]) -> str:
    if "shards" in summary:
        parts = [_halving_text(s) for s in summary["shards"]]
        return " ".join(f"Shard {i + 1}: {text}" for i, text in enumerate(parts)) + (
            f" In all: {summary['steps_total']} training steps of the full grid's {summary.get('steps_full_grid')}."
        )
    rounds = "; ".join(f"step {r['step']}: {len(r['combinations'])} -> {len(r['kept'])}" for r in summary["rounds"])
    return (
        f"Successive halving (eta {summary['eta']}, budgets {summary['budgets']}): {rounds}. "
        f"{summary['steps_total']} training steps over all combinations and seeds, against "
        f"{summary['steps_full_grid']} for the full grid ({100 * (summary.get('steps_fraction') or 0):.0f}%)."
    )


def _time_section(ranked: list[dict[str, Any]]) -> list[str]:
    """Where a training step's time goes, per combination (``zoo.train.step_profile``), and the feature cache."""
    timed = [r for r in ranked if r.get("time_step_ms") is not None]
    if not timed:
        return []
    lines = ["", "## Where a training step's time goes", ""]
    lines.append(
        "Share of a training step (steps 2-51 of each run, mean over seeds): waiting for the batch (data), the "
        "tower's forward, the projector's forward, the LM's forward with the loss, the backward pass, and the "
        "optimizer step. With the feature cache the tower's share is 0 and reading the features is data."
    )
    lines.append("")
    table = [
        [r["combination"], _num(r["time_step_ms"], 1),
         *(f"{100 * r[f'time_{p}']:.0f}%" for p in ("data", "tower", "projector", "lm_forward", "backward",
                                                   "optimizer")),
         r.get("feature_cache", "-")]
        for r in timed
    ]  # fmt: skip
    header = ["combination", "step ms", "data", "tower", "projector", "LM forward", "backward", "optimizer",
              "feature cache"]  # fmt: skip
    lines.append(_markdown_table(header, table))
    return lines


def write_report(run: BenchRun, path: str | Path, plots: Sequence[Path] = ()) -> Path:
    """``report.md``: machine and load, grid, results table, noisy rows, ratios, skipped ones, plots."""
    import yaml

    path = Path(path)
    m = run.machine
    header, rows = _rows(run)
    parts = [
        "# zoo bench report" + (" (meta: sizes and FLOPs only)" if run.meta else ""),
        "",
        f"Machine: {_machine_text(m)}." if not run.parts else f"Merged from {len(run.parts)} shards (below).",
        f"Device: `{m['device']}`. Run time: {run.seconds:.1f} s. Grid: `{run.spec.source}`.",
    ]
    load = _load_line(run)
    if load and not run.parts:
        parts.append(load[0].upper() + load[1:] + ".")
    if run.matmul_peak_flops:
        peaks = ", ".join(f"{d}: {_si(v, 'FLOP/s')}" for d, v in run.matmul_peak_flops.items())
        parts.append(f"Matmul peak measured in this run: {peaks}.")
    if run.component_builds:
        per = "shard" if run.parts else "grid"
        parts.append(f"Components built for real: {run.component_builds} (each once per {per}).")
    if run.parts:
        parts += _parts_section(run)
    parts += ["", "```yaml", yaml.safe_dump(run.spec.to_dict(), sort_keys=False).rstrip(), "```", "", "## Results", ""]
    parts.append(_markdown_table(header, rows) if rows else "No combination was measured.")
    parts += _noise_section(run)
    parts += ranking_markdown(run)
    with_ref = [r for r in run.ok if r.get("forward_latency_ratio") is not None]
    if with_ref:
        parts += ["", "## zoo / transformers (same weights, interleaved rounds)", ""]
        names = ("forward_latency_ratio", "prefill_latency_ratio", "decode_latency_ratio", "generate_throughput_ratio")
        ratio_rows = [
            [r["id"], *(f"{_num(r.get(n), 3)} ±{_num(_scaled(r.get(f'{n}_spread'), 100), 0)}%" for n in names),
             "NOISY" if r.get("noisy") else ""]
            for r in with_ref
        ]  # fmt: skip
        columns = ["combination", "forward latency", "prefill latency", "decode latency", "generate throughput", ""]
        parts.append(_markdown_table(columns, ratio_rows))
    no_ref = sorted({(r["combination"], r["reference_skipped"]) for r in run.ok if r.get("reference_skipped")})
    if no_ref:
        parts += ["", "Not compared with transformers:", ""]
        parts += [f"- `{combo}`: {reason}" for combo, reason in no_ref]
    others = [r for r in run.results if r["status"] != "ok"]
    if others:
        parts += ["", "## Skipped and failed", ""]
        parts += [f"- **{r['status']}** `{r['id']}`: {r.get('reason', '-')}" for r in others]
    if plots:
        parts += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    parts += ["", "## Definitions", "", *DEFINITIONS]
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


DEFINITIONS = [
    "- Every timing is a `torch.utils.benchmark.Timer.blocked_autorange` measurement: `min_run_time` seconds per"
    " call and side, split over `rounds` (the Timer warms up and picks a block size itself). Reported: the median"
    " per-call time over all blocks, the quartiles and IQR, and `_spread` = IQR / median. A row is `noisy` when"
    " one of its timings has a spread above `noise_threshold`.",
    "- `vision_encode`: tower + projector on the batch's images. `forward`: one full forward (image + prompt,"
    " logits for every position, no cache). `prefill`: `generate(max_new_tokens=1)` (time to first token).",
    "- `decode_per_token`: one cached single-token step measured directly (embed one token per sample, LM with the"
    " KV cache of the prompt, argmax; the cache is rolled back after each step so every step sees the prompt's"
    " length). `tokens_per_s`: batch x N / median `generate(max_new_tokens=N)`.",
    "- FLOPs: `torch.utils.flop_counter` over one forward of one sample (matmuls, convolutions, attention).",
    "- `peak_fraction`: forward FLOP/s achieved over a square-matmul peak measured on this machine in this run.",
    "- Memory: CUDA `max_memory_allocated` above the allocation before the run, or on CPU the peak RSS (sampled"
    " every ms with psutil) above the RSS before one forward + one generate; weights are already resident.",
    "- `*_ratio`: zoo / transformers `LlavaForConditionalGeneration` holding the same weights, measured in"
    " alternating order (ABBA over rounds) so that drift lands on both sides; `_spread` is the sum of both sides'"
    " spreads. `*_latency_ratio` < 1 and `generate_throughput_ratio` > 1 favour zoo.",
    "- Load average: runnable processes averaged over 1/5/15 minutes (`os.getloadavg`) at the start and end of"
    " the run, and over 1 minute before each row (`loadavg_1m`); above the core count, processes waited for a core.",
]


def write_run(run: BenchRun, path: str | Path) -> Path:
    """``run.json``: grid, machine, load at start and end, shard, matmul peaks (``BenchRun.record``)."""
    path = Path(path)
    path.write_text(json.dumps(run.record(), indent=2, default=str) + "\n", encoding="utf-8")
    return path


def write_outputs(run: BenchRun, out: str | Path) -> dict[str, Path]:
    """Write every output into ``out`` (created if needed); return the paths by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    explain_missing_timings(run.results)
    plots = plot(run, out)
    return {
        "json": write_json(run, out / "results.json"),
        "csv": write_csv(run, out / "results.csv"),
        "run": write_run(run, out / "run.json"),
        "report": write_report(run, out / "report.md", plots),
        **{p.stem: p for p in plots},
    }
