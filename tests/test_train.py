"""zoo train: the train: schema, a short Trainer run (checkpoints, log, plot, lr groups) and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import zoo
from zoo.cli.app import main
from zoo.errors import ConfigError, OutputDirError
from zoo.train.config import load_train_config, parse_train_settings
from zoo.train.run import train

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
MODEL = {
    "vision": {"name": "tiny-clip"},
    "projector": {"name": "mlp2x-gelu", "lr": 2.0e-3},
    "lm": {"name": "tiny-qwen2", "train": "lora", "lr": 5.0e-4, "lora": {"r": 4, "alpha": 8}},
}


def write_colours(folder: Path, count: int = 12) -> Path:
    """``count`` one-colour images with a question whose answer is the colour."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        name = list(COLOURS)[i % len(COLOURS)]
        Image.new("RGB", (32, 32), COLOURS[name]).save(folder / "images" / f"{i}.png")
        records.append({"id": f"r{i}", "image": f"images/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the image?"}, {"from": "gpt", "value": name}]})  # fmt: skip
    path = folder / "train.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def config(tmp_path: Path, **train: object) -> dict:
    data = write_colours(tmp_path / "data")
    settings = {"output_dir": str(tmp_path / "run"), "max_steps": 4, "batch_size": 2, "lr": 1.0e-3,
                "save_steps": 2, "logging_steps": 1, "scheduler": "linear", **train}  # fmt: skip
    return {"model": MODEL, "data": {"train": str(data), "max_length": 128}, "train": settings}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One 4-step run (checkpoints at 2 and 4), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("train")
    spec = config(tmp)
    return spec, train(spec)


# -- schema ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"max_steps": 3, "epochz": 1}, r"unknown key 'train\.epochz'; did you mean 'epochs'"),
        ({"max_steps": 3, "epochs": 1}, r"exactly one of 'max_steps' and 'epochs' \(both are set\)"),
        ({"output_dir": "x"}, r"exactly one of 'max_steps' and 'epochs' \(neither is set\)"),
        ({"max_steps": 3, "scheduler": "cosin"}, r"train\.scheduler = 'cosin' is not valid; did you mean 'cosine'"),
        ({"max_steps": 3, "lr": -1}, r"train\.lr = -1\.0 is not valid; it must be positive"),
        ({"max_steps": 3, "batch_size": "8"}, r"train\.batch_size = '8' has the wrong type; expected an integer"),
        (
            {"max_steps": 3, "warmup_ratio": 1.5},
            r"train\.warmup_ratio = 1\.5 is not valid; it must be in \[0\.0, 1\.0\)",
        ),
        ({"max_steps": 3, "bf16": True, "fp16": True}, r"train\.bf16 and train\.fp16 are both true"),
        ({"max_steps": 3, "fsdp_config": {"version": 2}}, r"train\.fsdp_config is set but train\.fsdp is not true"),
        ({"max_steps": 3, "deepspeed": "nowhere.json"}, r"train\.deepspeed = 'nowhere\.json': no such DeepSpeed JSON"),
    ],
)
def test_train_section_errors_name_the_key_the_value_and_the_choices(section, message):
    with pytest.raises(ConfigError, match=message):
        parse_train_settings(section, source="run.yaml")


def test_training_file_sections_are_checked(tmp_path):
    spec = config(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown key 'trian'; did you mean 'train'"):
        load_train_config({**spec, "trian": {}})
    with pytest.raises(ConfigError, match=r"missing required section 'data'"):
        load_train_config({"model": MODEL, "train": spec["train"]})
    with pytest.raises(ConfigError, match=r"model\.lm\.train = 'lorra'"):
        load_train_config({**spec, "model": {**MODEL, "lm": {"name": "tiny-qwen2", "train": "lorra"}}})
    relative = load_train_config({**spec, "data": {"train": "d/train.json"}}, base_dir=tmp_path)
    assert relative.data.train == str(tmp_path / "d/train.json")


def test_cli_reports_a_bad_training_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "train.yaml"
    path.write_text("model: {vision: tiny-clip, projector: mlp2x-gelu, lm: tiny-qwen2}\ndata: {train: x.json}\n"
                    "train: {max_steps: 2, optimizer: adamw}\n")  # fmt: skip
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'train.optimizer'; did you mean 'optim'" in err[0]


# -- a run ----------------------------------------------------------------------------------------
def test_a_run_writes_zoo_checkpoints_a_jsonl_log_and_a_loss_plot(run):
    _, result = run
    out = result.output_dir
    assert result.global_step == 4
    claim = [
        ".zoo-output.json",
        ".zoo-output.lock",
    ]  # the marker and the lock file of the run's claim (zoo.checkpoint.claim)
    assert sorted(p.name for p in out.iterdir()) == [*claim, "checkpoint-2", "checkpoint-4", "final", "log.jsonl",
                                                     "loss.png"]  # fmt: skip
    for name in ("checkpoint-2", "checkpoint-4"):
        files = {p.name for p in (out / name).iterdir()}
        assert {"manifest.json", "projector.safetensors", "lm_adapter", "optimizer.pt", "scheduler.pt",
                "rng_state.pth", "trainer_state.json"} <= files  # fmt: skip
        assert "training_args.bin" not in files  # no pickle beside a zoo checkpoint
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logs if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for record in steps:
        assert {"loss", "grad_norm", "learning_rate", "samples_per_second", "tokens_per_second"} <= set(record)
        assert record["samples_per_second"] > 0 and record["tokens_per_second"] > 0
        # per-component learning rates follow one schedule with their own peak (projector 2e-3, LoRA 5e-4)
        assert record["lr/projector"] == pytest.approx(4 * record["lr/lm"])
    assert steps[0]["lr/projector"] == pytest.approx(2.0e-3)


def test_held_out_loss_is_computed_once_at_the_end_unless_eval_steps_is_set(tmp_path):
    spec = config(tmp_path)  # checkpoints at 2 and 4
    spec["data"]["eval"] = spec["data"]["train"]
    result = train(spec)
    logs = [json.loads(line) for line in result.log_file.read_text().splitlines()]
    assert [r["step"] for r in logs if "eval_loss" in r] == [4]  # not at every checkpoint as well
    assert sorted(p.name for p in result.output_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # train.eval_steps asks for evaluations during the run too (Trainer adds the final one)
    from zoo.train.run import training_arguments

    spec["train"]["eval_steps"] = 2
    parsed = load_train_config(spec)
    assert training_arguments(parsed, zoo.build(parsed.model, meta=True), has_eval=True).eval_steps == 2


def test_checkpoints_load_with_zoo_and_hold_the_trained_weights(run):
    _, result = run
    final = zoo.load(result.final_checkpoint)
    last = zoo.load(result.output_dir / "checkpoint-4")
    start = zoo.load(result.output_dir / "checkpoint-2")
    batch = final.processor()("<image>\nWhat colour is the image?", images=[_red()])
    with torch.no_grad():
        a, b, c = (m(**batch).logits for m in (final, last, start))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # steps 3 and 4 changed the weights
    assert final.parameter_counts()["projector"]["trainable"] > 0


def test_zoo_generate_and_convert_read_a_training_checkpoint(run, tmp_path, capsys):
    _, result = run
    image = tmp_path / "red.png"
    _red().save(image)
    code = main(["generate", str(result.output_dir / "checkpoint-4"), "--prompt", "What colour is the image?",
                 "--image", str(image), "--max-new-tokens", "2"])  # fmt: skip
    assert code == 0 and capsys.readouterr().err == ""  # an untrained tiny LM's answer may be blank
    assert main(["convert", "--to-hf-llava", str(result.output_dir / "checkpoint-4"), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()


def test_resume_from_a_mid_run_checkpoint_reproduces_the_uninterrupted_losses(run, tmp_path):
    spec, result = run
    logged = [json.loads(line) for line in (result.output_dir / "log.jsonl").read_text().splitlines()]
    full = {r["step"]: r["loss"] for r in logged if "loss" in r}
    # a run interrupted after checkpoint-2: its output directory as it was then
    interrupted = tmp_path / "run"
    shutil.copytree(result.output_dir / "checkpoint-2", interrupted / "checkpoint-2")
    (interrupted / "log.jsonl").write_text("".join(f"{json.dumps(r)}\n" for r in logged if r["step"] <= 3))
    # without the run's marker (a run of a zoo from before markers), only --resume (or --overwrite) adopts it
    with pytest.raises(
        OutputDirError, match=r"holds files zoo did not write there \(checkpoint-2, log.jsonl; .*--resume"
    ):
        train(spec, output_dir=interrupted)
    shutil.copy(result.output_dir / ".zoo-output.json", interrupted)
    with pytest.raises(ConfigError, match="holds checkpoints of an earlier run; pass --resume"):
        train(spec, output_dir=interrupted)
    (interrupted / ".zoo-output.json").unlink()
    resumed = train(spec, output_dir=interrupted, resume=True)
    assert resumed.global_step == 4
    relogged = [json.loads(line) for line in (interrupted / "log.jsonl").read_text().splitlines()]
    again = {r["step"]: r["loss"] for r in relogged if "loss" in r}
    assert [r["step"] for r in relogged if "loss" in r] == [1, 2, 3, 4]  # step 3 logged once, not twice
    for step in (3, 4):
        assert again[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), step
    a, b = zoo.load(resumed.final_checkpoint), zoo.load(result.final_checkpoint)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(zoo.CheckpointError, match=r"--resume: no checkpoint-N directory in"):
        train(config(tmp_path), resume=True)


def _red():
    from PIL import Image

    return Image.new("RGB", (32, 32), COLOURS["red"])


def test_modality_length_sampler_batches_one_modality_at_a_time_and_is_reproducible():
    from zoo.train.trainer import ModalityLengthSampler

    lengths = [10, -3, 7, -8, 12, 5, -6, 9, -2, 4, 11, -1]  # positive: with images, negative: text only
    sampler = ModalityLengthSampler(batch_size=2, world_size=1, lengths=lengths, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))
    for start in range(0, 10, 2):  # 7 image and 5 text-only samples: 3 + 2 full batches, then the leftovers
        assert len({lengths[i] > 0 for i in order[start : start + 2]}) == 1, order
    assert list(sampler) == order  # the same epoch gives the same order (resume)
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_nothing_to_train_is_a_config_error(tmp_path):
    frozen = {**MODEL, "projector": {"name": "mlp2x-gelu", "train": "frozen"}, "lm": {"name": "tiny-qwen2"}}
    with pytest.raises(ConfigError, match="nothing to train: every component is frozen"):
        train({**config(tmp_path), "model": frozen})


# -- progress where the user looks ----------------------------------------------------------------
STEP_LINE = r"step (\d+)/6 \((\d+)%\) · [\d.]+ samples/s · loss [\d.]+ · eta (\d+)s"


def test_progress_lines_reach_a_redirected_stderr_and_the_jsonl_log(tmp_path):
    """stderr captured (a pipe, not a terminal): one line per logging step with step/total, rate, loss and ETA."""
    import os
    import re
    import subprocess
    import sys

    import yaml

    spec = config(tmp_path, max_steps=6, logging_steps=2, save_steps=100)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run([sys.executable, "-m", "zoo", "train", str(path)], capture_output=True, text=True, env=env,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [re.fullmatch(STEP_LINE, line) for line in done.stderr.splitlines()]
    steps = [(int(m[1]), int(m[2]), int(m[3])) for m in lines if m]
    assert [(s, pct) for s, pct, _ in steps] == [(2, 33), (4, 66), (6, 100)], done.stderr[-2000:]
    assert steps[-1][2] == 0  # nothing left at the last step
    assert re.search(r"^step 6/6 \(100%\) · [\d.]+ samples/s · mean loss [\d.]+ · done in \d+s$", done.stderr, re.M)
    assert "\r" not in done.stderr  # no tqdm bar drawn into the log
    assert "{'loss'" not in done.stdout and done.stdout.startswith("trained 6 steps")  # stdout keeps the result
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps_logged = [r for r in logs if "loss" in r]
    assert [r["step"] for r in steps_logged] == [2, 4, 6]
    assert all(r["max_steps"] == 6 and r["eta_seconds"] >= 0 for r in steps_logged)
    assert steps_logged[-1]["eta_seconds"] == 0


def test_progress_eta_counts_only_the_steps_of_this_run(tmp_path, monkeypatch, capsys):
    """A resumed run's pace comes from its own steps: from step 100 to 140 in 40 s, 160 steps left = 160 s."""
    from types import SimpleNamespace

    import zoo.train.trainer as trainer_module
    from zoo.train.trainer import JsonlLogger

    clock = iter([1000.0, 1040.0])
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    logger = JsonlLogger(tmp_path / "log.jsonl")
    state = SimpleNamespace(is_world_process_zero=True, global_step=100, num_input_tokens_seen=0, max_steps=300,
                            epoch=0.5)  # fmt: skip
    args = SimpleNamespace(train_batch_size=4, gradient_accumulation_steps=2, world_size=1)
    logger.on_train_begin(args, state, None)
    state.global_step, state.num_input_tokens_seen = 140, 8000
    logger.on_log(args, state, None, logs={"loss": 1.2345})
    (record,) = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert record["eta_seconds"] == 160.0 and record["max_steps"] == 300
    assert record["samples_per_second"] == pytest.approx(40 * 4 * 2 / 40)
    assert capsys.readouterr().err.strip() == "step 140/300 (46%) · 8 samples/s · loss 1.234 · eta 2m40s"
