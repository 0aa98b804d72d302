"""Past one machine, on CPU with gloo: DDP under torchrun and an FSDP2-sharded model's checkpoint.

accelerate (1.x) runs FSDP and DeepSpeed only on accelerators, so Trainer's own FSDP path needs GPUs; on
CPU the FSDP test shards with torch's ``fully_shard`` by ``MultiModal.fsdp_wrap_classes`` (what
accelerate's transformer-based wrap policy does) and saves through ``zoo.train.trainer.save_sharded``, the
function ``ZooTrainer`` calls with the state dict Trainer gathers under FSDP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import zoo
from zoo.train.config import load_train_config
from zoo.train.run import train, training_arguments

sys.path.insert(0, str(Path(__file__).parent))
from test_train import MODEL, write_colours

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def torchrun(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(log: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r]


def test_ddp_on_two_processes_gives_the_losses_of_one_process_on_the_same_global_batch(tmp_path):
    data = write_colours(tmp_path / "data", count=16)
    lm = {**MODEL["lm"], "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}  # dropout draws differ per process
    spec = {
        "model": {**MODEL, "lm": lm},
        "data": {"train": str(data), "max_length": 128},
        "train": {"output_dir": str(tmp_path / "ddp"), "max_steps": 3, "batch_size": 2, "lr": 1.0e-3,
                  "save_steps": 3, "logging_steps": 1},
    }  # fmt: skip
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = torchrun("-m", "zoo", "train", str(path))
    assert done.stdout.count("trained 3 steps") == 1  # the summary is printed by the main process only
    ddp = tmp_path / "ddp"
    assert {"rng_state_0.pth", "rng_state_1.pth", "manifest.json"} <= {p.name for p in (ddp / "checkpoint-3").iterdir()}
    single = train({**spec, "train": {**spec["train"], "batch_size": 4}}, output_dir=tmp_path / "one")
    assert losses(ddp / "log.jsonl") == pytest.approx(losses(single.log_file), rel=1e-5)
    assert len(losses(single.log_file)) == 3
    a, b = zoo.load(ddp / "final"), zoo.load(single.final_checkpoint)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-5), name


def test_an_fsdp_sharded_model_saves_a_checkpoint_that_one_process_loads_with_the_same_logits(tmp_path):
    torchrun("tests/distributed/fsdp_save.py", str(tmp_path))
    sys.path.insert(0, str(ROOT / "tests" / "distributed"))
    from fsdp_save import COMPOSITION, batch

    saved = torch.load(tmp_path / "logits.pt", weights_only=True)
    assert saved["wrapped"] >= 2  # the tower's and the LM's blocks were sharded
    model = zoo.load(tmp_path / "checkpoint")
    with torch.no_grad():
        logits = model(**batch(model)).logits
    torch.testing.assert_close(logits, saved["logits"], rtol=1e-5, atol=1e-5)
    torch.manual_seed(0)
    untrained = zoo.build(COMPOSITION).eval()
    with torch.no_grad():
        assert not torch.allclose(untrained(**batch(untrained)).logits, saved["logits"], atol=1e-3)


def test_trainer_fsdp_wraps_the_block_classes_the_components_declare(tmp_path):
    data = write_colours(tmp_path / "data", count=4)
    config = load_train_config({
        "model": MODEL, "data": {"train": str(data)},
        "train": {"output_dir": str(tmp_path / "x"), "max_steps": 1, "fsdp": True, "fsdp_config": {"version": 2}},
    })  # fmt: skip
    model = zoo.build(config.model)
    args = training_arguments(config, model, has_eval=False)
    wrap = args.fsdp_config["transformer_layer_cls_to_wrap"]
    assert wrap == sorted(c.__name__ for c in model.fsdp_wrap_classes) and len(wrap) == 2
    assert args.fsdp_plugin_args["transformer_cls_names_to_wrap"] == ",".join(wrap)
    assert args.fsdp_plugin_args["state_dict_type"] == "FULL_STATE_DICT"  # ZooTrainer saves zoo checkpoints from it
