"""Peak memory of building a composition from safetensors checkpoints, vs transformers' from_pretrained.

Goal: zoo's peak RSS while building from a checkpoint <= 1.3 x the size of the weights it reads.

Setup (once, into ``--dir``, default ``/tmp/zoo-checkpoint-bench``): a random mid-size composition
(CLIP-layout tower 768 wide x 12 layers, mlp2x-gelu, Qwen2-layout LM 768 wide x 8 layers with a 32k
vocabulary; about 185M parameters, ~710 MB in float32) is saved four ways with the real savers:

- ``vision/`` and ``lm/``: the tower and the LM as transformers ``save_pretrained`` directories (the way
  a user points ``model.vision.checkpoint`` / ``model.lm.checkpoint`` at downloaded weights);
- ``zoo/``: ``MultiModal.save`` (every weight is random, so every weight is saved);
- ``hf-llava/``: ``zoo.interop.llava.save_hf_llava`` (transformers' Llava layout, the same weights).

Each loader then runs in a fresh process (so nothing is shared or cached between them) that imports
everything first, loads, then reads every weight once (a loader may map the file and fault pages in
lazily: the peak must cover a model ready to run), and reports its peak RSS (``ru_maxrss``) above the
RSS just before loading:

- ``zoo.build`` of the YAML whose tower and LM name those checkpoint directories;
- ``zoo.load`` of the zoo checkpoint;
- ``LlavaForConditionalGeneration.from_pretrained`` of the Llava directory.

    python benchmarks/checkpoint_memory.py [--dir /tmp/zoo-checkpoint-bench] [--rebuild] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import composition, machine_line, report

GOAL = 1.3
VISION = {"name": "tiny-clip", "arch": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                                        "num_attention_heads": 12, "patch_size": 16, "image_size": 224}}  # fmt: skip
LM = {"name": "tiny-qwen2", "arch": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 8,
                                     "num_attention_heads": 12, "num_key_value_heads": 4, "vocab_size": 32000,
                                     "tie_word_embeddings": False}}  # fmt: skip
MODES = ("zoo-build", "zoo-load", "transformers")


def weights_bytes(*directories: Path) -> int:
    """Total size of the safetensors files under ``directories``."""
    return sum(f.stat().st_size for d in directories for f in d.rglob("*.safetensors"))


def setup(root: Path) -> None:
    """Build the random composition once and save it in the four layouts."""
    import zoo
    from zoo.interop.llava import save_hf_llava

    torch.manual_seed(0)
    model = zoo.build(composition(VISION, LM)).eval()
    model.vision.model.save_pretrained(root / "vision")
    model.lm.model.save_pretrained(root / "lm")
    model.lm.tokenizer.save_pretrained(root / "lm")
    zoo.save(model, root / "zoo")
    save_hf_llava(model, root / "hf-llava")
    (root / "DONE").write_text("ok\n")


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def child(mode: str, root: Path) -> None:
    """Load one way in this (fresh) process and print peak RSS and time as JSON."""
    import gc

    from transformers import LlavaForConditionalGeneration

    import zoo
    from zoo.core.builder import plan
    from zoo.core.registry import get_registry

    get_registry()
    config = composition(
        {"name": "tiny-clip", "checkpoint": str(root / "vision")},
        {"name": "hf-causal-lm", "checkpoint": str(root / "lm")},
    )
    plan(config)  # imports every modeling module and reads config.json only: nothing of the weights
    gc.collect()
    before, max_before = _rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    if mode == "zoo-build":
        model = zoo.build(config)
        read = weights_bytes(root / "vision", root / "lm")
    elif mode == "zoo-load":
        model = zoo.load(root / "zoo")
        read = weights_bytes(root / "zoo")
    else:
        model = LlavaForConditionalGeneration.from_pretrained(root / "hf-llava")
        read = weights_bytes(root / "hf-llava")
    seconds = time.perf_counter() - start
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # A loader may map the safetensors file and fault pages in only when a weight is first read; read
    # every weight once so that the peak covers a model ready to run, whatever the loader defers.
    with torch.no_grad():
        for param in model.parameters():
            param.sum()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"mode": mode, "peak_delta": peak - before, "load_delta": loaded - before,
                      "peak_before_load_exceeded": peak > max_before, "weights_read": read, "param_bytes": params,
                      "seconds": seconds}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/zoo-checkpoint-bench")
    parser.add_argument("--rebuild", action="store_true", help="save the checkpoints again")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(args.dir)
    if args.child:
        child(args.child, root)
        return
    if args.rebuild or not (root / "DONE").exists():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        setup(root)
    results = {}
    for mode in MODES:
        done = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--dir", str(root)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    mb = 2**20
    rows = {
        mode: {
            "weights_read_mb": round(r["weights_read"] / mb, 1),
            "peak_rss_delta_mb": round(r["peak_delta"] / mb, 1),
            "peak_rss_delta_before_first_read_mb": round(r["load_delta"] / mb, 1),
            "peak_over_weights": round(r["peak_delta"] / r["weights_read"], 3),
            "seconds": round(r["seconds"], 2),
            # False: the process had a higher RSS before loading, so the delta is a lower bound
            "peak_is_exact": r["peak_before_load_exceeded"],
        }
        for mode, r in results.items()
    }
    zoo_ratio = rows["zoo-build"]["peak_over_weights"]
    report(
        "peak RSS while building from safetensors checkpoints (fresh process each)",
        {
            "machine": machine_line(),
            "model": "CLIP-layout 768x12 tower + mlp2x-gelu + Qwen2-layout 768x8 LM (32k vocab), float32",
            **rows,
            "zoo_build_vs_transformers_peak": round(
                rows["zoo-build"]["peak_rss_delta_mb"] / rows["transformers"]["peak_rss_delta_mb"], 3
            ),
            "goal": f"zoo-build peak_over_weights <= {GOAL}",
            "meets_goal": zoo_ratio <= GOAL,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
