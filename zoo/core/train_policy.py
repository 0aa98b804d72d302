"""Training policy per component (frozen / full / LoRA), gradient checkpointing and optimizer groups."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from zoo.core.config import ModelConfig
from zoo.core.contract import check_lora_targets, lora_targets
from zoo.errors import ConfigError
from zoo.sdk.specs import SLOTS

if TYPE_CHECKING:
    from zoo.core.multimodal import MultiModal
    from zoo.sdk.interfaces import LanguageModel

__all__ = ["add_lora", "apply_training_policy", "linear_module_names", "lora_config", "param_groups"]


def lora_config(model_config: ModelConfig, default_targets: tuple[str, ...]):
    """The peft ``LoraConfig`` for the LM slot (targets default to the LM's declared ones)."""
    from peft import LoraConfig

    settings = model_config.lm.lora
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=lora_targets(model_config, default_targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def linear_module_names(module: nn.Module) -> list[str]:
    """The last name parts of ``module``'s ``nn.Linear`` submodules, sorted (what LoRA targets name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in module.named_modules() if isinstance(m, nn.Linear)})


def apply_training_policy(model: MultiModal, config: ModelConfig) -> None:
    """Freeze, unfreeze or LoRA-wrap each component as ``config`` says (in place)."""
    for kind in SLOTS:
        module = getattr(model, kind)
        mode = config.slot(kind).train
        if kind == "lm" and mode == "lora":
            add_lora(model.lm, config)
            continue
        module.requires_grad_(mode == "full")
    if config.gradient_checkpointing:
        model.lm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.lm.model.config.use_cache = False


def add_lora(lm: LanguageModel, config: ModelConfig) -> None:
    """Wrap the LM's transformers model with peft LoRA adapters (base weights frozen)."""
    from peft import get_peft_model

    check_lora_targets(config, lm.lora_targets, linear_module_names(lm.model))
    peft_config = lora_config(config, lm.lora_targets)
    try:
        lm.model = get_peft_model(lm.model, peft_config)
    except ValueError as error:
        raise ConfigError(f"{config.source}: model.lm.lora: peft rejected the settings: {error}") from error


def param_groups(model: MultiModal, default_lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups, one per component that trains, with its ``lr`` from the config.

    Example:
        >>> optimizer = torch.optim.AdamW(param_groups(model, 1e-4))
    """
    groups = []
    for kind in SLOTS:
        params = [p for p in getattr(model, kind).parameters() if p.requires_grad]
        if params:
            lr = model.composition.slot(kind).lr
            groups.append({"name": kind, "params": params, "lr": lr or default_lr, "weight_decay": weight_decay})
    return groups
