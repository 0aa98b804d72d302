"""Worker for tests/test_train_distributed.py: FSDP2 over gloo (CPU), one training step, zoo checkpoint.

Run as ``python -m torch.distributed.run --nproc_per_node 2 tests/distributed/fsdp_save.py OUT``. Every
block class the composition declares (``MultiModal.fsdp_wrap_classes``) is sharded with ``fully_shard``,
as accelerate's transformer-based wrap policy does with Trainer's ``fsdp`` on GPUs; the full state dict is
gathered on every process and rank 0 saves it through ``zoo.train.trainer.save_sharded`` (what ``ZooTrainer``
calls under FSDP). Rank 0 writes the logits of the sharded model on a fixed batch to ``OUT/logits.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard

import zoo
from zoo.core.train_policy import param_groups
from zoo.train.trainer import save_sharded

COMPOSITION = {
    "model": {
        "vision": {"name": "tiny-clip"},
        "projector": {"name": "mlp2x-gelu"},
        "lm": {"name": "tiny-qwen2", "train": "lora", "lora": {"dropout": 0.0}},
    }
}


def batch(model: zoo.MultiModal) -> dict[str, torch.Tensor]:
    from PIL import Image

    images = [Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))]
    processor = model.processor()
    return processor(["<image>\nWhat colour? red", "<image>\nWhat colour? blue"], images=[[images[0]], [images[1]]])


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = zoo.build(COMPOSITION).train()
    wrapped = 0
    for module in list(model.modules()):
        if type(module) in model.fsdp_wrap_classes:
            fully_shard(module)
            wrapped += 1
    fully_shard(model)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-2))
    inputs = batch(model)
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits  # [B, T, V]
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        save_sharded(model, full, out / "checkpoint")
        torch.save({"logits": logits, "wrapped": wrapped}, out / "logits.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
