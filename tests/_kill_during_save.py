"""Helper of test_checkpoint.py: start saving a model over a checkpoint and stall mid-write.

Usage: ``python tests/_kill_during_save.py CHECKPOINT_DIR SEED``. It builds the tiny composition with
``SEED``, wraps the checkpoint writer so that after the first weight file is written into the
temporary directory it prints ``STALLED <temporary dir>`` and sleeps, and calls ``zoo.checkpoint.save``.
The test kills it with SIGKILL at that point (nothing of the swap has happened yet).
"""

from __future__ import annotations

import sys
import time

import torch

import zoo
import zoo.checkpoint

__all__ = ["main"]


def main(directory: str, seed: int) -> None:
    torch.manual_seed(seed)
    model = zoo.build("tiny-clip-mlp-qwen2").eval()
    write = zoo.checkpoint._write_safetensors

    def stalling_write(tensors, path):
        write(tensors, path)
        print(f"STALLED {path.parent}", flush=True)
        time.sleep(120)

    zoo.checkpoint._write_safetensors = stalling_write
    zoo.checkpoint.save(model, directory)
    print("SAVED", flush=True)  # only reached if nobody kills us


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
