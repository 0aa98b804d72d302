"""Training step speed and memory: zoo's ``MultiModal`` vs transformers' ``LlavaForConditionalGeneration``.

Goals: ``samples_per_second_ratio`` (zoo / transformers) >= 1.0 and ``peak_memory_ratio`` <= 1.0.

Both models compute the same function with the same weights: the zoo model (CLIP-layout tower 384 x 6,
224 px, mlp2x-gelu, Qwen2-layout LM 512 x 6; LLaVA stage 2 without LoRA: tower frozen, projector and LM
trained) is exported with ``zoo.interop.llava.to_hf_llava`` and deep-copied, so each side has its own
weights and optimizer. Each side is a Trainer (``ZooTrainer`` and ``transformers.Trainer``, the same
``TrainingArguments``), and a step is Trainer's own ``training_step`` (forward, loss, backward through
accelerate) plus the optimizer step, on the same collated batches of ``zoo.train.data.LlavaDataset``. Steps
are timed in interleaved blocks (zoo, transformers, transformers, zoo, ...), medians compared. Peak
memory: on a GPU ``max_memory_allocated`` around each side's steps; on CPU (Linux) the peak RSS growth
over the steps (``VmHWM`` reset through ``/proc/self/clear_refs``) of one fresh process per side that holds
only that side's model (the two models cannot share one process's RSS).

    python benchmarks/train_speed.py [--batch-size 4] [--repeats 7] [--steps 3] [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import MID_CLIP, MID_QWEN2, machine_line, median, report

import zoo
from zoo.interop.llava import to_hf_llava

QUESTIONS = ("What is in the picture?", "Describe the colours.", "Is there a square?", "Where is the shape?")


def build(seed: int = 0) -> zoo.MultiModal:
    torch.manual_seed(seed)
    spec = {"model": {"vision": MID_CLIP, "projector": {"name": "mlp2x-gelu"}, "lm": {**MID_QWEN2, "train": "full"}}}
    return zoo.build(spec).train()


def reference(model: zoo.MultiModal) -> torch.nn.Module:
    """transformers' Llava with a copy of the same weights, trained in the same parts."""
    hf = copy.deepcopy(to_hf_llava(model)).train()
    hf.model.vision_tower.requires_grad_(False)
    return hf


def batches(model: zoo.MultiModal, folder: Path, batch_size: int, count: int) -> list[dict[str, torch.Tensor]]:
    """``count`` collated batches of LLaVA records with random 224 px images and 20-60-word answers."""
    from PIL import Image

    from zoo.train.data import DataCollator, LlavaDataset

    generator = torch.Generator().manual_seed(0)
    records = []
    for i in range(batch_size * count):
        pixels = torch.randint(0, 256, (224, 224, 3), generator=generator, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
        words = int(torch.randint(20, 60, (1,), generator=generator))
        answer = " ".join(["red", "square", "on", "the", "left", "of", "a", "blue", "circle"] * 7)[: words * 5]
        records.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": f"<image>\n{QUESTIONS[i % 4]}"}, {"from": "gpt", "value": answer}]})  # fmt: skip
    dataset = LlavaDataset(records, model, image_folder=folder, max_length=512)
    collate = DataCollator.from_model(model)
    return [collate([dataset[i * batch_size + j] for j in range(batch_size)]) for i in range(count)]


def trainer(model: torch.nn.Module, out: Path, device: str) -> object:
    from transformers import Trainer, TrainingArguments

    from zoo.train.trainer import ZooTrainer

    args = TrainingArguments(output_dir=str(out), report_to="none", learning_rate=1e-5, use_cpu=device == "cpu",
                             max_steps=1, save_strategy="no", disable_tqdm=True)  # fmt: skip
    cls = ZooTrainer if isinstance(model, zoo.MultiModal) else Trainer
    made = cls(model=model.to(device), args=args)
    made.create_optimizer()
    made.current_gradient_accumulation_steps = 1  # what train() sets before its first training_step
    return made


def step(made: object, batch: dict[str, torch.Tensor]) -> float:
    model = made.model  # type: ignore[attr-defined]
    loss = made.training_step(model, batch)  # type: ignore[attr-defined]
    made.optimizer.step()  # type: ignore[attr-defined]
    made.optimizer.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
    return float(loss)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_memory_in_process(side: str, batch_size: int, steps: int, device: str) -> None:
    """Child mode for CPU: run ``steps`` steps of one side, print the peak RSS growth in MB."""
    with tempfile.TemporaryDirectory() as tmp:
        model = build()
        data = batches(model, Path(tmp), batch_size, 2)
        target = model if side == "zoo" else to_hf_llava(model).train()  # shares the weights: no second copy
        if side != "zoo":
            target.model.vision_tower.requires_grad_(False)
            del model
        made = trainer(target, Path(tmp) / "out", device)
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
        before = _status_mb("VmRSS")
        for i in range(steps):
            step(made, data[i % 2])
        peak = _status_mb("VmHWM")
    print(json.dumps({"side": side, "peak_mb": peak - before}))


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved blocks per side")
    parser.add_argument("--steps", type=int, default=3, help="training steps per block")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--memory-child", choices=("zoo", "hf"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        measure_memory_in_process(args.memory_child, args.batch_size, args.steps, args.device)
        return

    with tempfile.TemporaryDirectory() as tmp:
        model = build()
        hf = reference(model)
        data = batches(model, Path(tmp), args.batch_size, 4)
        sides = {
            "zoo": trainer(model, Path(tmp) / "zoo", args.device),
            "hf": trainer(hf, Path(tmp) / "hf", args.device),
        }
        data = [{k: v.to(args.device) for k, v in b.items()} for b in data]
        first = {name: step(made, data[0]) for name, made in sides.items()}  # warm-up; same loss on both sides
        times: dict[str, list[float]] = {"zoo": [], "hf": []}
        peaks: dict[str, float] = {}
        for repeat in range(args.repeats):
            for name in ("zoo", "hf") if repeat % 2 == 0 else ("hf", "zoo"):
                if args.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                sync(args.device)
                start = time.perf_counter()
                for i in range(args.steps):
                    step(sides[name], data[(repeat + i) % len(data)])
                sync(args.device)
                times[name].append((time.perf_counter() - start) / args.steps)
                if args.device.startswith("cuda"):
                    peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated() / 2**20)
    print(f"step ms (medians): zoo {1000 * median(times['zoo']):.1f}, transformers {1000 * median(times['hf']):.1f}; "
          "measuring memory...", file=sys.stderr, flush=True)  # fmt: skip
    if not args.device.startswith("cuda"):
        for name in ("zoo", "hf"):
            command = [sys.executable, __file__, "--memory-child", name, "--batch-size", str(args.batch_size),
                       "--steps", str(args.steps), "--device", args.device]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            peaks[name] = json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]
    zoo_sps = args.batch_size / median(times["zoo"])
    hf_sps = args.batch_size / median(times["hf"])
    report(
        "training step: zoo MultiModal vs transformers LlavaForConditionalGeneration (same weights, same Trainer)",
        {
            "machine": machine_line(args.device),
            "setup": f"batch {args.batch_size}, {args.repeats} interleaved blocks x {args.steps} steps per side",
            "first_step_loss": {k: round(v, 6) for k, v in first.items()},
            "zoo_step_ms_median": round(1000 * median(times["zoo"]), 1),
            "hf_step_ms_median": round(1000 * median(times["hf"]), 1),
            "zoo_samples_per_second": round(zoo_sps, 2),
            "hf_samples_per_second": round(hf_sps, 2),
            "samples_per_second_ratio": round(zoo_sps / hf_sps, 4),
            "zoo_peak_memory_mb": round(peaks["zoo"], 1),
            "hf_peak_memory_mb": round(peaks["hf"], 1),
            "peak_memory_ratio": round(peaks["zoo"] / peaks["hf"], 4),
            "memory_measure": "max_memory_allocated" if args.device.startswith("cuda") else "peak RSS growth",
            "goals": "samples_per_second_ratio >= 1.0, peak_memory_ratio <= 1.0",
        },
        args.json,
    )


if __name__ == "__main__":
    main()
