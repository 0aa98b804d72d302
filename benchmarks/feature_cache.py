"""Stage-1 training with and without the feature cache of frozen towers: samples/s, fill cost, peak memory.

Goal: ``samples_per_second_ratio`` (with the cache / without) >= 2.0 on a composition whose tower is at
least half of the forward: a CLIP-ViT-B/16-sized tower (12 layers, 768 wide, 224 px, 196 patches;
random weights: the ``clip-vit-b-16`` preset without a checkpoint), ``mlp2x-gelu`` and a small Qwen2-layout
LM (``--lm small``: 256 x 4, ~3M parameters; ``--lm mid``: 512 x 6, ~18M, the other benchmarks' LM). LLaVA
stage 1: tower and LM frozen, the projector trained, so a step is the tower's forward, the projector, the
LM's forward and the backward through the LM to the projector. The cache removes the tower's forward and
the image decoding, so the ratio is at most (tower + LM forward + backward) / (LM forward + backward): it
reaches 2 only where the tower takes as long as the LM's forward and backward together.

One process, one model, one optimizer (AdamW over the projector). Two views of the same records: a
``LlavaDataset`` that opens and preprocesses the images, and one attached to the feature cache
(:func:`zoo.train.feature_fill.prepare_feature_cache`, filled first: its time is the one-time cost). A step
is what Trainer's is: collate a batch from the dataset (images opened and preprocessed, or entries
read from the cache), forward, loss, backward, optimizer step. The two kinds of step run in
interleaved blocks (with, without, without, with, ...) so that both see the same machine load; reported:
the ratio of the median step times and the median of the per-round ratios (each round's two blocks
ran next to each other, so a change of the machine's load mid-run lands on both). One torch thread by
default (``--threads``): on a shared machine a thread pool waits for its slowest thread at every op,
which penalises the LM's many small ops far more than the tower's large matmuls. Peak memory: the growth of the peak RSS (``VmHWM``, reset
through ``/proc/self/clear_refs`` before each block) over each kind's blocks, on Linux.

    python benchmarks/feature_cache.py [--lm small|mid] [--rounds 6] [--batch-size 2] [--images 32] [--json]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from _common import MID_QWEN2, machine_line, median, report

import zoo
from zoo.train.config import parse_train_settings
from zoo.train.data import DataCollator, LlavaDataset
from zoo.train.feature_fill import prepare_feature_cache

SMALL_QWEN2 = {"name": "tiny-qwen2", "arch": {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4,
                                              "num_attention_heads": 4, "num_key_value_heads": 2}}  # fmt: skip
LMS = {"small": SMALL_QWEN2, "mid": MID_QWEN2}


def write_records(folder: Path, count: int, size: int) -> list[dict]:
    """``count`` random ``size`` px images, each with a short question and answer."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        records.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the picture in a few words."},
            {"from": "gpt", "value": "a square of random coloured noise"}]})  # fmt: skip
    return records


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> float | None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    except OSError:
        return None
    return _status_mb("VmRSS")


def forward_share(model: zoo.MultiModal, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """FLOPs of the tower, projector and LM in one forward of ``batch`` (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    with torch.no_grad():
        for name, call in (("tower", lambda: model.vision(batch["pixel_values"])), ("all", lambda: model(**batch))):
            counter = FlopCounterMode(display=False)
            with counter:
                call()
            flops[name] = counter.get_total_flops()
    return {"tower_flops": flops["tower"], "forward_flops": flops["all"],
            "tower_share_of_forward": round(flops["tower"] / flops["all"], 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (each: one block of each kind)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--steps", type=int, default=1, help="steps per block")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--lm", choices=sorted(LMS), default="small", help="the LM: small (256 x 4) or mid (512 x 6)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = {"model": {"vision": {"name": "clip-vit-b-16", "image_size": args.image_size},
                      "projector": {"name": "mlp2x-gelu"}, "lm": LMS[args.lm]}}  # fmt: skip
    model = zoo.build(spec).train()  # the tower and the LM stay in eval mode (frozen)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    collate = DataCollator.from_model(model)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        records = write_records(Path(tmp) / "images", args.images, args.image_size)
        plain = LlavaDataset(records, model, image_folder=Path(tmp) / "images", max_length=512)
        cached = LlavaDataset(records, model, image_folder=Path(tmp) / "images", max_length=512)
        settings = parse_train_settings({"max_steps": 1, "batch_size": args.batch_size,
                                         "feature_cache_dir": str(Path(tmp) / "cache")})  # fmt: skip
        fill = prepare_feature_cache(model, settings, [cached], device=torch.device("cpu"), progress=False)
        share = forward_share(model, collate([plain[i] for i in range(args.batch_size)]))
        position = {"on": 0, "off": 0}

        def step(kind: str) -> float:
            dataset = cached if kind == "on" else plain
            start = time.perf_counter()
            indices = [(position[kind] + i) % len(dataset) for i in range(args.batch_size)]
            position[kind] += args.batch_size
            batch = collate([dataset[i] for i in indices])
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            return time.perf_counter() - start

        step("off"), step("on")  # warm-up
        times: dict[str, list[float]] = {"on": [], "off": []}
        peaks: dict[str, list[float]] = {"on": [], "off": []}
        for round_ in range(args.rounds):
            for kind in ("on", "off") if round_ % 2 == 0 else ("off", "on"):
                before = _reset_peak()
                times[kind] += [step(kind) for _ in range(args.steps)]
                after = _status_mb("VmHWM")
                if before is not None and after is not None:
                    peaks[kind].append(after - before)
    load_end = os.getloadavg()
    step_s = {kind: median(values) for kind, values in times.items()}
    samples = {kind: args.batch_size / s for kind, s in step_s.items()}
    report(
        f"stage-1 training with the feature cache vs without (CLIP-B/16-sized tower, mlp2x-gelu, {args.lm} Qwen2 LM)",
        {
            "machine": machine_line(),
            "load_average_start_end": [load_start, load_end],
            "setup": {"lm": LMS[args.lm]["arch"], "batch_size": args.batch_size, "images": args.images, "image_size": args.image_size,
                      "rounds": args.rounds, "steps_per_block": args.steps, "torch_threads": torch.get_num_threads()},
            **share,
            "samples_per_second": {kind: round(v, 3) for kind, v in samples.items()},
            "samples_per_second_ratio": round(samples["on"] / samples["off"], 3),
            "samples_per_second_ratio_paired": round(median([off / on for on, off in zip(times["on"], times["off"])]), 3),
            "tower_share_of_step_time": round(1 - step_s["on"] / step_s["off"], 3),
            "step_s": {kind: [round(t, 3) for t in values] for kind, values in times.items()},
            "fill": {"images": fill.images, "computed": fill.computed, "seconds": fill.seconds,
                     "bytes": fill.bytes_written, "per_image_ms": round(1e3 * fill.seconds / max(fill.computed, 1), 1)},
            "fill_pays_off_after_epochs": round(fill.seconds / (args.images * (1 / samples["off"] - 1 / samples["on"])), 3),
            "peak_rss_growth_mb": {kind: round(max(v), 1) if v else None for kind, v in peaks.items()},
        },
        args.json,
    )  # fmt: skip


if __name__ == "__main__":
    main()
