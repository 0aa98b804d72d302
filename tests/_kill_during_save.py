"""Helper of the checkpoint tests: start saving a model over a checkpoint and stall at a chosen point.

Usage: ``python tests/_kill_during_save.py CHECKPOINT_DIR SEED [write|renames]``. It builds the tiny
composition with ``SEED`` and calls ``zoo.checkpoint.saving.save``, stalling (it prints ``STALLED
<temporary dir>`` and sleeps) either after the first weight file is written into the temporary directory
(``write``, the default), or on the rename-aside path (``renameat2`` disabled) right between moving the
old checkpoint aside and moving the new one in (``renames``). The test kills it with SIGKILL there.
"""

from __future__ import annotations

import os
import sys
import time

import torch

import zoo
import zoo.checkpoint.atomic
import zoo.checkpoint.saving

__all__ = ["main"]


def main(directory: str, seed: int, mode: str = "write") -> None:
    torch.manual_seed(seed)
    model = zoo.build("tiny-clip-mlp-qwen2").eval()
    if mode == "write":
        write = zoo.checkpoint.saving._write_safetensors

        def stalling_write(tensors, path, generation):
            write(tensors, path, generation)
            print(f"STALLED {path.parent}", flush=True)
            time.sleep(120)

        zoo.checkpoint.saving._write_safetensors = stalling_write
    else:
        zoo.checkpoint.atomic._exchange = lambda a, b: False  # as where renameat2 is missing
        rename = os.rename

        def stalling_rename(source, destination):
            if ".tmp-" in os.path.basename(source):  # the second rename: the old one is already aside
                print(f"STALLED {source}", flush=True)
                time.sleep(120)
            rename(source, destination)

        zoo.checkpoint.atomic.os.rename = stalling_rename
    zoo.checkpoint.saving.save(model, directory)
    print("SAVED", flush=True)  # only reached if nobody kills us


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])
