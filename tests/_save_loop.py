"""Helper of test_checkpoint_saves.py: re-save one checkpoint for many generations, like a trainer.

Usage: ``python tests/_save_loop.py CHECKPOINT_DIR GENERATIONS [exchange|aside]``. Generation ``g``
fills the first parameter of every component with ``g`` (the tag a loader compares) and saves over the
same directory; it prints ``SAVED g`` after each save. ``aside`` swaps by rename-aside, as where
``renameat2`` is missing (the checkpoint path is briefly absent: loads must wait, not fail).
"""

from __future__ import annotations

import sys

import torch

import zoo
import zoo.checkpoint.atomic

__all__ = ["main"]


def main(directory: str, generations: int, swap: str = "exchange") -> None:
    if swap == "aside":
        zoo.checkpoint.atomic._exchange = lambda a, b: False
    torch.manual_seed(0)
    model = zoo.build("tiny-clip-mlp-qwen2").eval()
    for generation in range(1, generations + 1):
        with torch.no_grad():
            for kind in ("vision", "projector", "lm"):
                next(getattr(model, kind).parameters()).fill_(float(generation))
        zoo.save(model, directory)
        print(f"SAVED {generation}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])
