"""zoo vs transformers' ``LlavaForConditionalGeneration`` on the same weights, in the same run.

Goals: ``forward_latency_ratio`` (zoo / transformers forward latency) <= 1.0 and
``generate_throughput_ratio`` (zoo / transformers generated tokens per second) >= 1.0.

Runs ``zoo bench`` on ``grids/llava-reference.yaml`` (mid-size random compositions in the Llava
layout, batch 1 and 4): each model is exported with ``zoo.interop.llava.to_hf_llava`` (shared weights) and
both sides are timed in interleaved rounds (torch.utils.benchmark). Prints each combination's ratios and their medians,
and writes the full bench outputs to ``--out``.

    python benchmarks/llava_reference.py [--grid grids/llava-reference.yaml] [--out bench-out/llava-reference]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import machine_line, median, report

from zoo.bench import load_bench, run_bench, write_outputs

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default=str(HERE / "grids" / "llava-reference.yaml"))
    parser.add_argument("--out", default="bench-out/llava-reference")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    run = run_bench(load_bench(args.grid), device=args.device, progress=not args.json)
    write_outputs(run, args.out)
    rows = [r for r in run.ok if r.get("forward_latency_ratio") is not None]
    if not rows:
        raise SystemExit(f"no combination of {args.grid} was compared with transformers; see {args.out}/report.md")
    forward = [r["forward_latency_ratio"] for r in rows]
    generate = [r["generate_throughput_ratio"] for r in rows]
    report(
        "zoo / transformers LlavaForConditionalGeneration (same weights, interleaved rounds)",
        {
            "machine": machine_line(run.machine["device"]),
            "grid": args.grid,
            "per_combination": {
                r["id"]: {
                    "forward_latency_ratio": r["forward_latency_ratio"],
                    "generate_throughput_ratio": r["generate_throughput_ratio"],
                    "zoo_forward_ms": r["forward_ms_median"],
                    "hf_forward_ms": r["ref_forward_ms_median"],
                    "zoo_tokens_per_s": r["tokens_per_s"],
                    "hf_tokens_per_s": r["ref_tokens_per_s"],
                }
                for r in rows
            },
            "forward_latency_ratio_median": round(median(forward), 4),
            "generate_throughput_ratio_median": round(median(generate), 4),
            "goals": "forward_latency_ratio <= 1.0, generate_throughput_ratio >= 1.0",
            "meets_goals": median(forward) <= 1.0 and median(generate) >= 1.0,
            "outputs": args.out,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
