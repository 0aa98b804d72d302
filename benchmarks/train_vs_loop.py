"""zoo train against a plain PyTorch loop on zoo's Python API: same composition, data, budget and seeds.

Two tasks: the shapes task zoo generates (``zoo.train.shapes``) and handwritten digits from a data set zoo did
not make (scikit-learn's ``load_digits``, 1797 real 8x8 scans shipped inside the package, upscaled to
32 px; 1400 for training, the rest held out; question "Which digit is this?", answer the digit's name).
For each task and seed both trainers start from the same random init (``torch.manual_seed(seed)``
before ``zoo.build``) and run the same steps, batch size, AdamW learning rate, warm-up and cosine
schedule, with the same ``data.system_prompt``; both are then scored by ``zoo.train.evaluate`` (greedy, exact
match) on the same held-out questions. The plain loop is what a user writes: ``LlavaDataset`` +
``DataCollator`` in a shuffled ``DataLoader``, ``param_groups`` into AdamW, transformers' cosine schedule.

    pip install -e '.[bench]'   # scikit-learn: only this script needs it
    python benchmarks/train_vs_loop.py [--steps 600] [--seeds 0 1 2] [--tasks shapes digits] [--json]

Prints mean and spread of held-out accuracy per task and trainer, with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine_line, report

import zoo
from zoo.train.evaluate import evaluate

HERE = Path(__file__).parent
DATA = HERE / "grids" / "data"
MODEL = {
    "vision": {"name": "tiny-clip", "select_layer": -1},
    "projector": {"name": "mlp2x-gelu"},
    "lm": {"name": "tiny-qwen2", "train": "full"},
}
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digits(folder: Path, train: int = 1400) -> tuple[Path, Path]:
    """scikit-learn's digits as LLaVA JSON + 32 px PNGs (nearest-neighbour upscale of the 8x8 scans)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        name = f"images/{index:04d}.png"
        grey = (pixels * (255 / 16)).round().astype("uint8")  # 0..16 -> 0..255
        Image.fromarray(grey, mode="L").resize((32, 32), Image.Resampling.NEAREST).convert("RGB").save(folder / name)
        records.append({"id": f"digit-{index}", "image": name, "type": "digit", "conversations": [
            {"from": "human", "value": "<image>\nWhich digit is this?"}, {"from": "gpt", "value": DIGITS[int(label)]}]})  # fmt: skip
    paths = folder / "train.json", folder / "eval.json"
    paths[0].write_text(json.dumps(records[:train]), encoding="utf-8")
    paths[1].write_text(json.dumps(records[train:]), encoding="utf-8")
    return paths


def write_task(task: str) -> tuple[Path, Path]:
    folder = DATA / task
    if not (folder / "eval.json").is_file():
        if task == "digits":
            return write_digits(folder)
        from zoo.train.shapes import write_shapes

        write_shapes(folder, train=3000, eval=300, seed=0, image_size=64, overwrite=True)
    return folder / "train.json", folder / "eval.json"


def settings(steps: int, seed: int) -> dict[str, Any]:
    return {"max_steps": steps, "batch_size": 16, "lr": 3.0e-3, "scheduler": "cosine", "warmup_ratio": 0.05,
            "weight_decay": 0.0, "save_steps": steps, "logging_steps": 50, "seed": seed}  # fmt: skip


def with_zoo_train(train_file: Path, out: Path, steps: int, seed: int, system_prompt: Any) -> Any:
    from zoo.train.run import train

    data = {"train": str(train_file), "max_length": 128, "system_prompt": system_prompt}
    result = train({"model": MODEL, "data": data, "train": {**settings(steps, seed), "output_dir": str(out)}})
    return zoo.load(result.final_checkpoint)


def with_plain_loop(train_file: Path, steps: int, seed: int, system_prompt: Any) -> Any:
    from torch.utils.data import DataLoader
    from transformers import get_cosine_schedule_with_warmup

    from zoo.core.train_policy import param_groups
    from zoo.train.data import DataCollator, LlavaDataset

    torch.manual_seed(seed)
    model = zoo.build({"model": MODEL})
    model.system_prompt = system_prompt
    dataset = LlavaDataset(str(train_file), model, max_length=128)
    loader = DataLoader(dataset, batch_size=16, shuffle=True, collate_fn=DataCollator.from_model(model),
                        generator=torch.Generator().manual_seed(seed), drop_last=True)  # fmt: skip
    optimizer = torch.optim.AdamW(param_groups(model, 3.0e-3, weight_decay=0.0))
    schedule = get_cosine_schedule_with_warmup(optimizer, round(0.05 * steps), steps)
    model.train()
    step = 0
    while step < steps:
        for batch in loader:
            model(**batch).loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step == steps:
                break
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=["shapes", "digits"], choices=["shapes", "digits"])
    parser.add_argument("--system-prompt", default=None, help="data.system_prompt for both (default: none)")
    parser.add_argument("--out", default="bench-out/train-vs-loop")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    start, load_start = time.perf_counter(), os.getloadavg()
    rows, summary = [], {}
    for task in args.tasks:
        train_file, eval_file = write_task(task)
        scores: dict[str, list[float]] = {"zoo train": [], "plain loop": []}
        for seed in args.seeds:
            for trainer in scores:
                began = time.perf_counter()
                if trainer == "zoo train":
                    out = Path(args.out) / f"{task}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
                    model = with_zoo_train(train_file, out, args.steps, seed, args.system_prompt)
                else:
                    model = with_plain_loop(train_file, args.steps, seed, args.system_prompt)
                accuracy = evaluate(model, str(eval_file), max_new_tokens=4)["accuracy"]
                scores[trainer].append(accuracy)
                rows.append({"task": task, "trainer": trainer, "seed": seed, "accuracy": round(accuracy, 4),
                             "seconds": round(time.perf_counter() - began, 1)})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
        summary[task] = {
            trainer: {"mean": round(statistics.mean(v), 4), "stdev": round(statistics.pstdev(v), 4),
                      "min": min(v), "max": max(v)}
            for trainer, v in scores.items()
        }  # fmt: skip
    report(
        "zoo train vs a plain PyTorch loop (same composition, data, budget, seeds, system prompt)",
        {
            "machine": machine_line(),
            "load_average_start_end": [load_start, os.getloadavg()],
            "steps": args.steps,
            "seeds": args.seeds,
            "system_prompt": args.system_prompt,
            "seconds": round(time.perf_counter() - start, 1),
            "summary": summary,
            "runs": rows,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
