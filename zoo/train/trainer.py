"""transformers' ``Trainer`` for a ``MultiModal``: zoo checkpoints, per-component learning rates, a JSONL log.

``ZooTrainer`` changes only what a plain ``nn.Module`` needs (a ``MultiModal`` is not a
``PreTrainedModel``); the training loop, DDP / FSDP / DeepSpeed, mixed precision, gradient
accumulation, RNG and optimizer state on resume are transformers' and accelerate's:

- ``create_optimizer``: one group per trained component with its ``lr`` (:func:`zoo.core.train_policy.param_groups`),
  each split into decayed weights and undecayed biases / norms as Trainer does; the optimizer class and
  its options still come from ``TrainingArguments.optim``.
- ``_save``: every checkpoint (``checkpoint-N/``) is a zoo checkpoint (``manifest.json`` + safetensors),
  readable by ``zoo.load``, ``zoo generate`` and ``zoo convert``; Trainer adds its optimizer, scheduler,
  RNG and ``trainer_state.json`` beside it. Under FSDP / DeepSpeed the full state dict Trainer gathers
  is put into a replica built on ``meta`` and saved from there.
- resume: the zoo weights are loaded into the model before accelerate wraps it; Trainer restores the rest.
  An incomplete checkpoint (a run killed while saving it) is refused, naming the last complete one
  (:mod:`zoo.train.checkpoints`).
- ``save_total_limit``: old checkpoints are rotated by zoo, which removes only complete zoo training
  checkpoints (Trainer's rotation would remove any ``checkpoint-*`` folder).
- ``group_by_modality_length``: LLaVA's sampler (image and text-only samples in separate mega-batches,
  each sorted by length).
- ``profiler``: a :class:`zoo.train.step_profile.StepProfiler` times the wait for data and each training step.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Sampler
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from zoo.checkpoint.loading import load_weights
from zoo.checkpoint.saving import save
from zoo.core.progress import eta_seconds, format_duration, format_progress, write_line
from zoo.core.train_policy import param_groups
from zoo.errors import CheckpointError, ConfigError
from zoo.train.checkpoints import resume_point, rotate

if TYPE_CHECKING:
    from zoo.core.multimodal import MultiModal
    from zoo.train.step_profile import StepProfiler

__all__ = ["LOG_FILE", "JsonlLogger", "ModalityLengthSampler", "StopAt", "ZooTrainer", "plot_losses", "save_sharded"]

LOG_FILE = "log.jsonl"


class ZooTrainer(Trainer):
    """``transformers.Trainer`` for ``zoo.MultiModal`` (see the module docstring for what differs).

    Args:
        *args: as ``transformers.Trainer``.
        group_by_modality_length: sample with :class:`ModalityLengthSampler` (the dataset needs
            ``modality_lengths``, as ``zoo.train.data.LlavaDataset`` has).
        **kwargs: as ``transformers.Trainer``.
    """

    def __init__(
        self, *args: Any, group_by_modality_length: bool = False, profiler: StepProfiler | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.group_by_modality_length = group_by_modality_length
        self._zoo_save_total_limit: int | None = None  # args.save_total_limit while train() runs (zoo rotates)
        self.profiler = profiler
        if profiler is not None:
            self.add_callback(profiler)

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        """Trainer's, timed for the step profile (the wait for data: dataset, collator, feature cache)."""
        if self.profiler is None:
            return super().get_batch_samples(epoch_iterator, num_batches, device)
        start = self.profiler.data_begin()
        try:
            return super().get_batch_samples(epoch_iterator, num_batches, device)
        finally:
            self.profiler.data_end(start)

    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Trainer's, timed for the step profile (forward and backward of one micro-batch)."""
        if self.profiler is None:
            return super().training_step(*args, **kwargs)
        start = self.profiler.train_step_begin()
        try:
            return super().training_step(*args, **kwargs)
        finally:
            self.profiler.train_step_end(start)

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """AdamW (or ``args.optim``) over per-component groups with their own learning rates."""
        if self.optimizer is not None:
            return self.optimizer
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        decay = {id(p) for n, p in target.named_parameters() if n in set(self.get_decay_parameter_names(target))}
        groups = []
        for group in param_groups(target, self.args.learning_rate, self.args.weight_decay):
            params = group.pop("params")
            groups.append({**group, "params": [p for p in params if id(p) in decay]})
            groups.append({**group, "name": f"{group['name']}.no_decay", "weight_decay": 0.0,
                           "params": [p for p in params if id(p) not in decay]})  # fmt: skip
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ConfigError("nothing to train: every component is frozen; set model.<slot>.train: full or lora")
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, target)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Write a zoo checkpoint (Trainer calls this on the saving process with the gathered state dict)."""
        if not self.args.should_save:
            return
        model: MultiModal = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        save_sharded(model, state_dict, output_dir or str(self.args.output_dir))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Trainer's ``save_model``, then a barrier: the zoo checkpoint directory is written atomically by
        the main process, and no process may add its resume files (RNG state) to it before that."""
        super().save_model(output_dir, _internal_call=_internal_call)
        self.accelerator.wait_for_everyone()

    def train(  # type: ignore[override]  # same parameters, passed through
        self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any
    ) -> Any:
        """Trainer's ``train``; a resumed run first loads the checkpoint's zoo weights into the model.

        ``True`` resumes from the latest ``checkpoint-N``; an incomplete one (a run killed while saving it)
        is refused, naming why and the last complete one.
        """
        if resume_from_checkpoint:
            latest = resume_from_checkpoint is True or resume_from_checkpoint == "latest"
            path = resume_point(str(self.args.output_dir), None if latest else str(resume_from_checkpoint))
            load_weights(self.accelerator.unwrap_model(self.model), path)
            resume_from_checkpoint = str(path)
        limit, self.args.save_total_limit = self.args.save_total_limit, None  # zoo rotates (_save_checkpoint)
        self._zoo_save_total_limit = limit
        try:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            self.args.save_total_limit = limit

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Trainer's checkpoint, then ``save_total_limit`` applied to zoo's complete training checkpoints only
        (Trainer's own rotation removes any ``checkpoint-*`` folder, a user's included)."""
        super()._save_checkpoint(model, trial)
        limit = self._zoo_save_total_limit
        if self.args.should_save and limit:
            run_dir = self._get_output_dir(trial=trial)
            just_saved = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            rotate(run_dir, limit, keep=(just_saved, self.state.best_model_checkpoint))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """No-op: :meth:`train` loaded the zoo weights before the model was wrapped."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = getattr(dataset, "modality_lengths", None)
        if self.group_by_modality_length and lengths is not None:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return ModalityLengthSampler(self.args.train_batch_size, self.args.world_size, lengths, seed=seed)
        return super()._get_train_sampler(train_dataset)


def save_sharded(model: MultiModal, state_dict: dict[str, torch.Tensor] | None, directory: str | os.PathLike) -> Path:
    """Save ``model`` as a zoo checkpoint; when its parameters are shards (FSDP, DeepSpeed ZeRO-3), from
    ``state_dict``, the full tensors gathered on this process, put into a replica built on ``meta``.

    Example (FSDP2, every process calls the gather, the main one saves)::

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            save_sharded(model, full, "ckpt")
    """
    if state_dict is not None and _is_sharded(model):
        return save(_replica(model, state_dict), directory)
    return save(model, directory)


def _is_sharded(model: torch.nn.Module) -> bool:
    """Parameters that are not the full tensors (FSDP flat / DTensor shards, DeepSpeed ZeRO-3 stubs)."""
    from torch.distributed.tensor import DTensor

    if any(type(m).__name__.startswith(("FullyShardedDataParallel", "FSDP")) for m in model.modules()):
        return True  # FSDP1 wrappers, FSDP2's FSDP<Block> classes
    return any(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in model.parameters())


def _replica(model: MultiModal, state_dict: dict[str, torch.Tensor]) -> MultiModal:
    """A ``MultiModal`` of the same composition holding ``state_dict`` (gathered full tensors)."""
    from zoo.core.builder import build

    replica = build(model.composition, meta=True)
    keys = set(replica.state_dict())
    cleaned = {_strip_wrappers(k): v for k, v in state_dict.items()}
    missing = sorted(keys - set(cleaned))
    if missing:
        raise CheckpointError(f"the gathered state dict lacks {missing[:4]} (and {max(len(missing) - 4, 0)} more)")
    replica.load_state_dict({k: cleaned[k] for k in keys}, strict=True, assign=True)
    inner = replica.lm.model
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    if getattr(base.config, "tie_word_embeddings", False):
        base.tie_weights()
    return replica


def _strip_wrappers(key: str) -> str:
    for marker in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."):
        key = key.replace(marker, "")
    return key


class ModalityLengthSampler(Sampler[int]):
    """LLaVA's ``group_by_modality_length``: mega-batches of image samples and of text-only samples.

    ``lengths`` are signed (positive: with images, negative: text-only). Each modality is shuffled,
    cut into mega-batches of ``batch_size * world_size`` sorted by length (so that padding is small
    and every process gets a similar length), and the full mega-batches of both modalities are
    shuffled together; the two partial ones come last.
    The order depends only on ``seed`` and the epoch (``set_epoch``), so a resumed run sees the same one.
    """

    def __init__(self, batch_size: int, world_size: int, lengths: Sequence[int], *, seed: int = 0) -> None:
        self.megabatch = batch_size * world_size
        self.lengths = list(lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (Trainer and accelerate call this at each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        groups: list[list[int]] = []
        leftovers: list[list[int]] = []
        for keep in (lambda n: n > 0, lambda n: n <= 0):
            indices = [i for i, n in enumerate(self.lengths) if keep(n)]
            shuffled = [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]
            for start in range(0, len(shuffled), self.megabatch):
                chunk = sorted(shuffled[start : start + self.megabatch], key=lambda i: -abs(self.lengths[i]))
                (groups if len(chunk) == self.megabatch else leftovers).append(chunk)
        for g in torch.randperm(len(groups), generator=generator).tolist():
            yield from groups[g]
        for chunk in leftovers:  # the partial mega-batches of both modalities, last (as LLaVA)
            yield from chunk


class JsonlLogger(TrainerCallback):
    """Appends every training log to ``OUTPUT/log.jsonl`` and prints a progress line to stderr.

    A record holds loss, lr per group, grad norm, samples/s, tokens/s (measured between two logs;
    ``samples_per_second`` counts every process's samples), and ``max_steps`` and ``eta_seconds`` (the
    pace since this run started, resumed or not). The line, one per logging step whatever stderr is
    (tqdm's bar is invisible in a redirected log), reads
    ``step 40/300 (13%) · 12.3 samples/s · loss 1.234 · eta 3m20s``.
    A new run starts the file afresh; on resume, lines past the resumed step are dropped first, so the file reads as one run.

    Args:
        path: the JSONL file.
        progress: print the progress lines (main process only).
    """

    def __init__(self, path: str | os.PathLike, *, progress: bool = True) -> None:
        self.path = Path(path)
        self.progress = progress
        self._last: tuple[float, int, int] | None = None
        self._start: tuple[float, int] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if state.global_step == 0:  # a new run starts a new log
            self.path.write_text("")
        elif self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step(line) <= state.global_step]
            self.path.write_text("".join(f"{line}\n" for line in kept))
        now = time.perf_counter()
        self._last = (now, state.global_step, state.num_input_tokens_seen)
        self._start = (now, state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, **logs}
        optimizer = kwargs.get("optimizer")
        if optimizer is not None and "learning_rate" in logs:
            # Trainer logs the first group's rate of the step; every group follows the same schedule
            scale = logs["learning_rate"] / optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
            for group in optimizer.param_groups:
                name = str(group.get("name", "group")).removesuffix(".no_decay")
                record.setdefault(f"lr/{name}", group.get("initial_lr", group["lr"]) * scale)
        now = time.perf_counter()
        if "loss" in logs and self._last is not None:
            then, step, tokens = self._last
            seconds = max(now - then, 1e-9)
            steps = state.global_step - step
            samples = steps * args.train_batch_size * args.gradient_accumulation_steps * args.world_size
            record["samples_per_second"] = samples / seconds
            record["tokens_per_second"] = (state.num_input_tokens_seen - tokens) / seconds
            self._last = (now, state.global_step, state.num_input_tokens_seen)
        if state.max_steps and state.max_steps > 0:
            record["max_steps"] = state.max_steps
            if self._start is not None:
                begun, first = self._start
                eta = eta_seconds(state.global_step - first, state.max_steps - first, now - begun)
                record["eta_seconds"] = None if eta is None else round(eta, 1)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record, default=float) + "\n")
        if self.progress:
            write_line(_progress_line(record, state.max_steps))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            plot_losses(state.log_history, Path(args.output_dir) / "loss.png")


def _progress_line(record: dict[str, Any], max_steps: int) -> str:
    """``step 40/300 (13%) · 12.3 samples/s · loss 1.234 · eta 3m20s``; eval logs show their eval loss, and
    Trainer's summary at the end the mean loss and the run time."""
    total = max_steps if max_steps and max_steps > 0 else None
    step = int(record["step"])
    if "train_loss" in record:  # the summary Trainer logs when training ends
        done = f"done in {format_duration(_number(record.get('train_runtime')))}"
        rate = _number(record.get("train_samples_per_second"))
        return format_progress(step, total, rate=rate, fields=[f"mean loss {record['train_loss']:.4g}"], end=done)
    keys = ("loss", "eval_loss")
    fields = [f"{key.replace('_', ' ')} {record[key]:.4g}" for key in keys if _number(record.get(key)) is not None]
    rate = _number(record.get("samples_per_second"))
    return format_progress(step, total, rate=rate, fields=fields, eta=_number(record.get("eta_seconds")))


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a finite number, else ``None``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


class StopAt(TrainerCallback):
    """Stop training after ``step`` optimizer steps and save a checkpoint there; the schedule (warm-up, decay)
    stays the one of the whole ``max_steps``, so resuming later continues exactly where it stopped."""

    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step >= self.step:
            control.should_training_stop = True
            control.should_save = True
        return control


def _step(line: str) -> float:
    try:
        return float(json.loads(line).get("step", math.inf))
    except ValueError:
        return math.inf


def plot_losses(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """Training (and eval) loss against step as a PNG (matplotlib, Agg); ``None`` when nothing was logged."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evaluation = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if not train and not evaluation:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        axis.plot(*zip(*train), label="train loss")
    if evaluation:
        axis.plot(*zip(*evaluation), "o-", label="eval loss")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return Path(path)
