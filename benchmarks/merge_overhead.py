"""Merge overhead of ``MultiModal``: its forward over the sum of its components' own forwards.

Goal: at most 3 %. The components run on their own exactly what ``MultiModal.forward`` runs through
them: the tower on the pixels, the projector on the tower's features, and the LM on token ids of the
same length (so the LM's own embedding lookup is on both sides). The difference is what ``MultiModal``
adds: the image mask, the placeholder count check, the masked scatter and the dtype casts.

Repeats interleave the two sides (ABBA) to cancel drift; the headline is the median over repeats of
``full / (tower + projector + lm)`` measured back to back.

    python benchmarks/merge_overhead.py [--repeats 20] [--batch-size 1] [--device cpu] [--json]
"""

from __future__ import annotations

import argparse

import torch
from _common import MID_CLIP, MID_QWEN2, composition, machine_line, median, report

import zoo
from zoo.bench.measure import quiet_transformers, timed
from zoo.bench.runner import make_inputs

GOAL = 0.03


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = zoo.build(composition(MID_CLIP, MID_QWEN2), device=args.device).eval()
    inputs = make_inputs(model, args.batch_size, args.prompt_len)
    pixels, ids, mask = inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]
    text_ids = ids.masked_fill(ids == model.image_token_id, 0)  # [B, T]: same length, text only
    with torch.inference_mode():
        features = model.vision(pixels)  # [B, N, D]

    def full():
        return model(pixel_values=pixels, input_ids=ids, attention_mask=mask, use_cache=False)

    parts = {
        "vision": lambda: model.vision(pixels),
        "projector": lambda: model.projector(features),
        "lm": lambda: model.lm.model(input_ids=text_ids, attention_mask=mask, use_cache=False),
    }
    times: dict[str, list[float]] = {"full": [], **{k: [] for k in parts}}
    with torch.inference_mode(), quiet_transformers():
        for _ in range(args.warmup):
            full()
            for fn in parts.values():
                fn()
        for repeat in range(args.repeats):
            order = ["full", "parts"] if repeat % 2 == 0 else ["parts", "full"]
            for side in order:
                if side == "full":
                    times["full"].append(timed(full, args.device))
                else:
                    for name, fn in parts.items():
                        times[name].append(timed(fn, args.device))
    paired = [f / (v + p + m) for f, v, p, m in zip(times["full"], times["vision"], times["projector"], times["lm"])]
    overhead = median(paired) - 1
    of_medians = median(times["full"]) / sum(median(times[k]) for k in parts) - 1
    ms = {k: round(median(v) * 1e3, 3) for k, v in times.items()}
    report(
        "merge overhead: MultiModal.forward / (tower + projector + LM forwards)",
        {
            "machine": machine_line(args.device),
            "composition": "clip 384x6 (224 px, 196 patches) + mlp2x-gelu + qwen2 512x6, float32",
            "batch_size": args.batch_size,
            "seq_len": ids.shape[1],
            "repeats": args.repeats,
            "median_ms": ms,
            "overhead_median_of_paired_ratios": f"{overhead:+.2%}",
            "overhead_ratio_of_medians": f"{of_medians:+.2%}",
            "goal": f"<= {GOAL:.0%}",
            "meets_goal": overhead <= GOAL,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
