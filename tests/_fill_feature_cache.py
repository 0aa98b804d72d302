"""Fill one feature cache from a separate process (tests/test_feature_cache.py runs two at once).

Usage: python _fill_feature_cache.py CACHE_DIR IMAGE_DIR READY_FILE GO_FILE
Builds the seeded tiny composition, signals READY_FILE, waits for GO_FILE, then computes and stores the
features of every image of IMAGE_DIR (all of them, present or not, so that both writers race on every entry).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

import zoo
from zoo.train.feature_cache import hash_file
from zoo.train.feature_fill import fill, open_cache


def main() -> None:
    cache_dir, image_dir, ready, go = (Path(a) for a in sys.argv[1:5])
    torch.set_num_threads(1)  # two of these share the machine with the test
    torch.manual_seed(0)
    model = zoo.build("tiny-clip-mlp-qwen2").eval()
    cache = open_cache(model, cache_dir, device=torch.device("cpu"))
    images = {hash_file(p): str(p) for p in sorted(image_dir.glob("*.png"))}
    ready.write_text(cache.fingerprint)
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    computed, failed, _ = fill(cache, model, images, batch_size=2, device=torch.device("cpu"))
    print(computed, failed)


if __name__ == "__main__":
    main()
