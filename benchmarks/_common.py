"""Shared pieces of the benchmark scripts: the mid-size compositions and the machine description.

The scripts run from a checkout (``python benchmarks/<script>.py``) with zoo installed; nothing here
downloads weights: every model is random, built from the registry's tiny presets with ``arch`` overrides.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import torch

from zoo.bench.measure import machine_info

__all__ = ["MID_CLIP", "MID_LLAMA", "MID_QWEN2", "MID_SIGLIP", "composition", "machine_line", "median", "report"]

# ~11M-parameter ViT (CLIP layout), 224 px, patch 16: 196 patches (+ CLS)
MID_CLIP = {"name": "tiny-clip", "arch": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6,
                                          "num_attention_heads": 6, "patch_size": 16, "image_size": 224}}  # fmt: skip
MID_SIGLIP = {"name": "tiny-siglip", "arch": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6,
                                              "num_attention_heads": 6, "patch_size": 16, "image_size": 224}}  # fmt: skip
# ~18M-parameter decoders (GQA 8/2 heads), small vocabulary of the tiny tokenizer
MID_QWEN2 = {"name": "tiny-qwen2", "arch": {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 6,
                                            "num_attention_heads": 8, "num_key_value_heads": 2}}  # fmt: skip
MID_LLAMA = {"name": "tiny-llama", "arch": {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 6,
                                            "num_attention_heads": 8, "num_key_value_heads": 2}}  # fmt: skip


def composition(vision: dict, lm: dict, projector: str = "mlp2x-gelu", dtype: str = "float32") -> dict[str, Any]:
    """A model YAML mapping for ``zoo.build``."""
    return {"model": {"vision": vision, "projector": {"name": projector}, "lm": lm, "dtype": dtype}}


def machine_line(device: str | torch.device = "cpu") -> str:
    """One line naming the machine the numbers come from."""
    m = machine_info(device)
    where = f"GPU {m['gpu']}" if m["gpu"] else "no GPU"
    return (
        f"{m['cpu']}, {m['cpu_count']} cores ({m['torch_threads']} torch threads), {m.get('memory_gb', '?')} GB RAM, "
        f"{where}; torch {m['torch']}, transformers {m['transformers']}"
    )


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return statistics.median(values)


def report(title: str, data: dict[str, Any], as_json: bool) -> None:
    """Print ``data`` as JSON, or as ``key: value`` lines under ``title``."""
    if as_json:
        print(json.dumps({"benchmark": title, **data}, indent=2, default=str))
        return
    print(title)
    for key, value in data.items():
        print(f"  {key}: {value}")
