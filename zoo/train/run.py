"""``zoo.train.run``: train a composition from a training file with transformers' ``Trainer``.

One process, ``torchrun --nproc_per_node N -m zoo train CONFIG`` or ``accelerate launch -m zoo train
CONFIG``: the distributed setup (DDP, FSDP, DeepSpeed) is accelerate's, read from the launcher's
environment and the ``train:`` section. What a run leaves in ``output_dir``::

    checkpoint-100/   a zoo checkpoint (zoo.load, zoo generate, zoo eval, zoo convert) + Trainer's resume state
    final/            the model at the end (a zoo checkpoint)
    log.jsonl         one line per log: loss, lr per component, grad_norm, samples/s, tokens/s, ETA, and with
                      data.eval the eval loss at the end (and every train.eval_steps when set)
    loss.png          the loss curve
    .zoo-output.json  the marker that makes the directory zoo train's (zoo.checkpoint.claim)
    .zoo-output.lock  the lock a running run holds, naming it (pid, host, start time, command)

A run claims ``output_dir`` before it builds anything: a directory holding other files is refused unless
``overwrite`` (``--overwrite``) or ``resume`` finds a run there; a directory another run is writing is
refused, naming that run; the lock of a run that died is taken over, with a note naming it.

A frozen tower's features are computed once per image and kept in the feature cache
(``train.feature_cache``, :mod:`zoo.train.feature_fill`); at the end the run prints where a step's time went
(data, tower, projector, LM forward, backward, optimizer: :mod:`zoo.train.step_profile`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from zoo.errors import ConfigError
from zoo.train.checkpoints import checkpoint_dirs, resume_point, written_by_a_run
from zoo.train.config import TrainConfig, load_train_config

if TYPE_CHECKING:
    from transformers import TrainingArguments

    from zoo.core.multimodal import MultiModal

__all__ = ["OUTPUT_KIND", "TrainResult", "train", "training_arguments"]

OUTPUT_KIND = "zoo train output"  # the marker kind of a claimed train.output_dir (zoo.checkpoint.claim)

_EVAL_AT_END_ONLY = 2**31 - 1  # Trainer's eval_steps when train.eval_steps is not set (see training_arguments)


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced (paths are absolute)."""

    output_dir: Path
    final_checkpoint: Path
    global_step: int
    train_loss: float
    log_file: Path
    loss_plot: Path | None
    metrics: dict[str, Any]
    is_main_process: bool = True
    time_shares: dict[str, Any] = dataclasses.field(default_factory=dict)
    feature_cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``zoo train --json``)."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def train(
    config: str | Path | Mapping[str, Any] | TrainConfig,
    *,
    output_dir: str | Path | None = None,
    max_steps: int | None = None,
    resume: bool | str | Path = False,
    overwrite: bool = False,
    stop_at: int | None = None,
) -> TrainResult:
    """Build the composition, read the data and train it with ``ZooTrainer``.

    The run claims ``output_dir`` first (:func:`zoo.checkpoint.claim.claim_directory`): a directory holding files
    zoo train did not write is refused unless ``overwrite`` (or ``resume`` finds a run there), and a
    directory another run is writing is refused, naming that run.

    Args:
        config: a training YAML path, its mapping, or a parsed ``TrainConfig``.
        output_dir: overrides ``train.output_dir``.
        max_steps: overrides ``train.max_steps`` (and ``train.epochs``).
        resume: ``True`` continues from the latest ``checkpoint-N`` of ``output_dir``; a path continues
            from that checkpoint. The loss curve is the one of an uninterrupted run.
        overwrite: write into an ``output_dir`` holding files zoo train did not write (they are kept,
            except a ``log.jsonl`` or ``loss.png``, which the run writes).
        stop_at: stop (and save ``checkpoint-N``) after this many steps, keeping the learning-rate schedule
            of the whole ``max_steps``; a later ``resume=True`` continues as if never stopped (successive
            halving in ``zoo bench`` trains this way).

    The tower's features come from the feature cache when ``train.feature_cache`` allows it
    (:mod:`zoo.train.feature_fill`); where a step's time goes is measured (:mod:`zoo.train.step_profile`) and printed.

    Example:
        >>> result = zoo.train.run.train("examples/shapes/train.yaml", max_steps=20)
        >>> zoo.load(result.final_checkpoint)
    """
    from zoo.checkpoint.claim import claim_directory

    parsed = config if isinstance(config, TrainConfig) else load_train_config(config)
    settings = parsed.train
    key = "train.output_dir"
    if output_dir is not None:
        if not str(output_dir).strip():
            raise ConfigError(f"--output-dir {str(output_dir)!r} is empty; give the directory of the run")
        settings, key = dataclasses.replace(settings, output_dir=str(output_dir)), "--output-dir"
    if max_steps is not None:
        if max_steps <= 0:
            raise ConfigError(f"--max-steps = {max_steps} is not valid; it must be positive")
        settings = dataclasses.replace(settings, max_steps=max_steps, epochs=None)
    if not settings.output_dir:
        raise ConfigError(f"{parsed.source}: train.output_dir is not set (or pass --output-dir)")
    out = Path(settings.output_dir).absolute()
    parsed = dataclasses.replace(parsed, train=settings)
    if not _is_launch_main_process():  # the main process holds the claim for every process of the run
        return _train(parsed, out, resume, stop_at)
    adopt = (lambda path: any(checkpoint_dirs(path))) if resume else None  # a run from before the marker
    hint = "or --resume to continue the run there"
    with claim_directory(out, kind=OUTPUT_KIND, key=key, overwrite=overwrite, adopt=adopt, hint=hint) as claim:
        if not resume and written_by_a_run(out):
            raise ConfigError(
                f"{key} = {str(out)!r} holds checkpoints of an earlier run; pass --resume to continue it "
                "or choose another --output-dir"
            )
        if resume:  # an incomplete checkpoint is refused here, before anything is built
            resume = resume_point(out, None if resume is True or resume == "latest" else resume)
        if claim.stale is not None:  # once the run goes ahead: an error stays one line
            print(f"zoo: {key} = {str(out)!r} was left by a run that did not finish ({claim.stale.describe()}); "
                  "taking it over", file=sys.stderr, flush=True)  # fmt: skip
        return _train(parsed, out, resume, stop_at)


def _train(parsed: TrainConfig, out: Path, resume: bool | str | Path, stop_at: int | None) -> TrainResult:
    import transformers
    from accelerate import PartialState

    from zoo.core.builder import build
    from zoo.train.data import DataCollator, LlavaDataset
    from zoo.train.feature_fill import prepare_feature_cache
    from zoo.train.step_profile import StepProfiler, format_shares
    from zoo.train.trainer import LOG_FILE, JsonlLogger, StopAt, ZooTrainer

    settings = parsed.train
    transformers.set_seed(settings.seed)  # the random init of tiny / new components is part of the run
    model = build(parsed.model)
    data = parsed.data
    model.system_prompt = data.system_prompt  # every sample, and every checkpoint of the run, renders with it
    model.end_token = data.end_token  # ends (and is supervised after) every answer; generation stops at it
    train_set = LlavaDataset(data.train, model, image_folder=data.image_folder_for(data.train),
                             max_length=data.max_length, on_error=data.on_error)  # fmt: skip
    eval_set = None
    if data.eval is not None:
        eval_set = LlavaDataset(data.eval, model, image_folder=data.image_folder_for(data.eval),
                                max_length=data.max_length, on_error=data.on_error)  # fmt: skip
    args = training_arguments(parsed, model, has_eval=eval_set is not None)
    if args.should_log:
        _print_parameters(model, train_set, eval_set)
    cache = prepare_feature_cache(model, settings, [train_set, eval_set], device=args.device,
                                  process_index=args.process_index, world_size=args.world_size,
                                  barrier=PartialState().wait_for_everyone, progress=args.should_log)  # fmt: skip
    if args.should_log:
        print(cache.line(), file=sys.stderr, flush=True)
    profiler = StepProfiler(model, skip=1 if (settings.max_steps or 2) > 1 else 0)
    callbacks: list[Any] = [JsonlLogger(out / LOG_FILE)]
    if stop_at is not None:
        callbacks.append(StopAt(stop_at))
    trainer = ZooTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DataCollator.from_model(model),
        callbacks=callbacks,
        group_by_modality_length=data.group_by_modality_length,
        profiler=profiler,
    )
    if args.disable_tqdm:  # JsonlLogger's progress lines (stderr) and log.jsonl say what Trainer would print
        trainer.remove_callback(transformers.PrinterCallback)
    try:
        output = trainer.train(resume_from_checkpoint=str(resume) if isinstance(resume, str | Path) else resume or None)
    finally:
        profiler.remove()
    shares = profiler.summary()
    if args.should_log:
        print(format_shares(shares), file=sys.stderr, flush=True)
    final = out / "final"
    trainer.save_model(str(final))
    plot = out / "loss.png"
    return TrainResult(
        output_dir=out,
        final_checkpoint=final,
        global_step=output.global_step,
        train_loss=float(output.training_loss),
        log_file=out / LOG_FILE,
        loss_plot=plot if plot.is_file() else None,
        metrics=dict(output.metrics),
        is_main_process=trainer.is_world_process_zero(),
        time_shares=shares,
        feature_cache=cache.to_dict(),
    )


def _is_launch_main_process() -> bool:
    """Whether this is process 0 of a launch (``torchrun`` / ``accelerate launch`` set ``RANK``), or alone."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def training_arguments(config: TrainConfig, model: MultiModal, *, has_eval: bool) -> TrainingArguments:
    """The ``TrainingArguments`` a training file means (one place maps zoo keys to Trainer's)."""
    from transformers import TrainingArguments

    from zoo.core.progress import is_terminal

    s = config.train
    fsdp_config = None
    if s.fsdp:
        fsdp_config = dict(s.fsdp_config or {})
        if fsdp_config.get("auto_wrap_policy", "TRANSFORMER_BASED_WRAP") == "TRANSFORMER_BASED_WRAP":
            # the block classes each component declares (a MultiModal has no _no_split_modules)
            fsdp_config.setdefault("transformer_layer_cls_to_wrap", sorted(c.__name__ for c in model.fsdp_wrap_classes))
    # data.eval without train.eval_steps: one evaluation, at the end. Trainer evaluates the last step whenever
    # it is not a multiple of eval_steps, so an interval no run reaches means "at the end only" (a smoke run
    # with a small save_steps does not spend its time evaluating); train.eval_steps adds evaluations during it.
    eval_steps = s.eval_steps or _EVAL_AT_END_ONLY
    return TrainingArguments(
        output_dir=str(Path(str(s.output_dir)).absolute()),
        max_steps=s.max_steps if s.max_steps is not None else -1,
        num_train_epochs=s.epochs if s.epochs is not None else 1.0,
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.eval_batch_size or s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        learning_rate=s.lr,
        lr_scheduler_type=s.scheduler,
        warmup_steps=s.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        optim=s.optim,
        save_strategy="steps",
        save_steps=s.save_steps,
        save_total_limit=s.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        logging_steps=s.logging_steps,
        seed=s.seed,
        data_seed=s.seed,
        bf16=s.bf16,
        fp16=s.fp16,
        report_to=s.report_to,
        dataloader_num_workers=config.data.num_workers,
        use_cpu=not _has_accelerator(),  # accelerate runs multi-process CPU (gloo) only when told to
        dataloader_pin_memory=_has_accelerator(),
        remove_unused_columns=False,  # the collator's keys are MultiModal.forward's arguments
        include_num_input_tokens_seen="non_padding",
        fsdp=cast(Any, True) if s.fsdp else None,  # True turns FSDP on (a str is the deprecated option list)
        fsdp_config=fsdp_config,
        deepspeed=s.deepspeed,
        # a redirected stderr gets JsonlLogger's progress lines, not a bar drawn with carriage returns
        disable_tqdm=None if is_terminal(sys.stderr) else True,
    )


def _has_accelerator() -> bool:
    import torch

    probe = getattr(torch, "accelerator", None)  # torch >= 2.6
    return bool(probe.is_available()) if probe is not None else torch.cuda.is_available()


def _print_parameters(model: MultiModal, train_set: Any, eval_set: Any) -> None:
    counts = model.parameter_counts()
    names = {kind: model.composition.slot(kind).name for kind in counts}
    lines = [f"{'component':<10} {'name':<24} {'params':>14} {'trainable':>14}"]
    for kind, count in counts.items():
        lines.append(f"{kind:<10} {names[kind]:<24} {count['params']:>14,} {count['trainable']:>14,}")
    total = sum(c["params"] for c in counts.values())
    trainable = sum(c["trainable"] for c in counts.values())
    lines.append(f"{'total':<10} {'':<24} {total:>14,} {trainable:>14,}")
    sizes = f"train records: {len(train_set)}" + (f", eval records: {len(eval_set)}" if eval_set is not None else "")
    skipped = len(train_set.skipped) + (len(eval_set.skipped) if eval_set is not None else 0)
    if skipped:
        sizes += f"; {skipped} bad records skipped (data.on_error: skip)"
    print("\n".join([*lines, sizes]), file=sys.stderr, flush=True)
