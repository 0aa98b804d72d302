"""The hidden-size / token-count contract between tower, projector and LM, checked before weights.

Declarations are checked against each other (``check_contract``) and then verified
(``verify_contract``): the tower and the projector run once on the ``meta`` device (shapes only,
nothing allocated) and their real output shapes must be the ones they declared. A component whose
``hidden_size`` or ``num_output_tokens`` lies is stopped here, naming it and the plugin that
registered it, instead of failing later inside torch or blaming the user's prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zoo.errors import ConfigError, ContractError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from zoo.core.anyres import AnyResLayout
    from zoo.core.config import ModelConfig

__all__ = [
    "Contract",
    "check_contract",
    "check_declared_dims",
    "check_lora_targets",
    "lora_targets",
    "verify_anyres",
    "verify_contract",
]


@dataclass(frozen=True)
class Contract:
    """The numbers a composition agrees on; stored in the checkpoint manifest."""

    vision_hidden_size: int
    vision_tokens: int
    lm_hidden_size: int
    image_tokens: int
    anyres: dict[str, Any] | None = None  # any-resolution tiling: ``image_tokens`` is per tile then

    def to_dict(self) -> dict[str, Any]:
        """Plain data for manifests and ``--json`` (``anyres`` only when tiling is on)."""
        data = dict(self.__dict__)
        if data["anyres"] is None:
            del data["anyres"]
        return data


def check_declared_dims(
    declared: dict[str, int | None], vision_name: str, vision_hidden: int, lm_name: str, lm_hidden: int, source: str
) -> None:
    """Check a user's explicit ``in_dim`` / ``out_dim`` against the neighbours before building."""
    in_dim, out_dim = declared.get("in_dim"), declared.get("out_dim")
    if in_dim is not None and in_dim != vision_hidden:
        raise ContractError(
            f"{source}: model.projector.in_dim = {in_dim} but vision tower {vision_name!r} "
            f"(model.vision.name) has hidden_size {vision_hidden}; remove model.projector.in_dim "
            "(it is inferred) or pick a tower with that width"
        )
    if out_dim is not None and out_dim != lm_hidden:
        raise ContractError(
            f"{source}: model.projector.out_dim = {out_dim} but language model {lm_name!r} "
            f"(model.lm.name) has hidden_size {lm_hidden}; remove model.projector.out_dim "
            "(it is inferred) or pick an LM with that width"
        )


def check_contract(vision: Any, projector: Any, lm: Any, names: dict[str, str], source: str) -> Contract:
    """Check the three modules' declared contract (they may live on ``meta``) and return it."""
    v, p, m = names["vision"], names["projector"], names["lm"]
    if projector.in_dim != vision.hidden_size:
        raise ContractError(
            f"{source}: vision tower {v!r} (model.vision.name) gives features of size {vision.hidden_size} "
            f"but projector {p!r} (model.projector.name) takes in_dim {projector.in_dim}; "
            "let zoo infer model.projector.in_dim or choose matching components"
        )
    if projector.out_dim != lm.hidden_size:
        raise ContractError(
            f"{source}: projector {p!r} (model.projector.name) outputs {projector.out_dim} but language "
            f"model {m!r} (model.lm.name) has hidden_size {lm.hidden_size}; let zoo infer "
            "model.projector.out_dim or choose matching components"
        )
    tokens_in = vision.num_tokens
    problem = projector.check_input_tokens(tokens_in)
    if problem is not None:
        rows, cols = vision.grid_size()
        prefix = f" + {vision.num_prefix_tokens} prefix" if vision.select == "all" else ""
        raise ContractError(
            f"{source}: projector {p!r} (model.projector.name) cannot take the {tokens_in} tokens of vision "
            f"tower {v!r} ({rows}x{cols} patches{prefix}, model.vision.select = {vision.select!r}): {problem}; "
            + (
                "set model.vision.select: patch, "
                if vision.select == "all"
                else "set another model.vision.image_size, "
            )
            + "or choose a projector without grid requirements"
        )
    image_tokens = projector.num_output_tokens(tokens_in)
    if image_tokens <= 0:
        raise ContractError(f"{source}: projector {p!r} would give {image_tokens} tokens per image from {tokens_in}")
    return Contract(
        vision_hidden_size=vision.hidden_size,
        vision_tokens=tokens_in,
        lm_hidden_size=lm.hidden_size,
        image_tokens=image_tokens,
    )


def verify_contract(
    vision: Any, projector: Any, contract: Contract, names: dict[str, str], plugins: dict[str, str], source: str
) -> None:
    """Run ``vision`` and ``projector`` (built on ``meta``) once on a ``meta`` batch of one image and
    check their real output shapes against ``contract``; a difference is a ``ContractError``."""
    import torch

    def who(kind: str, title: str) -> str:
        plugin = plugins.get(kind) or "?"
        return f"{title} {names[kind]!r} (model.{kind}.name, from plugin {plugin!r})"

    def run(kind: str, title: str, module: Any, inputs: torch.Tensor, declared: tuple[int, ...], what: str) -> Any:
        try:
            with torch.no_grad():
                output = module(inputs)
        except Exception as error:
            raise ContractError(
                f"{source}: {who(kind, title)} could not run on the meta device to verify its contract "
                f"({type(error).__name__}: {str(error)[:200]}); a component must run on meta (shapes only)"
            ) from error
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
        if shape != declared:
            got = f"a {type(output).__name__}" if shape is None else f"shape {list(shape)}"
            raise ContractError(
                f"{source}: {who(kind, title)} declares {what} = {list(declared)} but its forward returned "
                f"{got} on a meta batch of one image; the plugin's declared contract is wrong "
                "(fix the component or report it to the plugin's author)"
            )
        return output

    shape = tuple(getattr(vision, "pixel_shape", (3, vision.image_size, vision.image_size)))
    pixels = torch.empty(1, *shape, device="meta")  # [1, C, H, W]
    tokens, width = contract.vision_tokens, contract.vision_hidden_size
    run("vision", "vision tower", vision, pixels, (1, tokens, width), "[images, num_tokens, hidden_size]")
    dtype = next((p.dtype for p in projector.parameters()), torch.float32)
    features = torch.empty(1, tokens, width, device="meta", dtype=dtype)  # [1, N, D]
    declared = (1, contract.image_tokens, contract.lm_hidden_size)
    run("projector", "projector", projector, features, declared, "[images, num_output_tokens, out_dim]")


def verify_anyres(layout: AnyResLayout, width: int, source: str) -> None:
    """Stitch meta features of an image the size of each pinpoint (``zoo.core.anyres``): the positions it
    yields must be the count the processor expands placeholders to (``layout.image_tokens``)."""
    import torch

    newline = torch.empty(width, device="meta")  # [D]
    for height, side in layout.pinpoints:
        tiles = layout.num_tiles(height, side)
        features = torch.empty(tiles, layout.tile_tokens, width, device="meta")  # [T, M, D]
        packed = layout.pack(features, height, side, newline)  # [tokens, D]
        expected = layout.image_tokens(height, side)
        if tuple(packed.shape) != (expected, width):
            raise ContractError(
                f"{source}: model.vision.anyres: an image of {height}x{side} px stitches to {list(packed.shape)} "
                f"features but its placeholder count is {expected}; this is a bug in zoo.core.anyres"
            )


def lora_targets(config: ModelConfig, default_targets: Sequence[str]) -> list[str]:
    """The module names LoRA adapts: ``model.lm.lora.targets``, else the LM's declared defaults."""
    return list(config.lm.lora.targets or default_targets)


def check_lora_targets(config: ModelConfig, default_targets: Sequence[str], linear: Sequence[str]) -> None:
    """Every LoRA target must name a linear module of the LM (``linear``: their last name parts).

    Run by the builder on the meta-built LM before anything is built for real (so ``zoo validate`` and
    ``zoo build --meta`` catch a typo) and again where LoRA is applied.
    """
    if config.lm.train != "lora":
        return
    targets = lora_targets(config, default_targets)
    key = "model.lm.lora.targets" if config.lm.lora.targets else "model.lm.lora_targets"
    missing = sorted(set(targets) - set(linear))
    if missing:
        raise ConfigError(
            f"{config.source}: {key} = {sorted(set(targets))}: {missing} are not linear modules of "
            f"{config.lm.name!r}; its linear modules are {sorted(set(linear))}",
            key=key,
        )
