"""Conformance kit: check that a registered component keeps the contract it declares.

Plugin authors call these from their own tests; zoo runs them over every registered ``tiny-*`` tower and
LM and every projector. Each check builds the component by registry name (exactly as the builder does),
runs it on random inputs and compares its declared contract with what it really does:

- shapes and token counts (``num_tokens``, ``num_output_tokens``, ``hidden_size``, ``vocab_size``);
- finite outputs (no NaN / inf);
- dtype: a ``bfloat16`` build has bf16 parameters and returns bf16; fp32 -> bf16 -> fp32 keeps every weight;
- gradient flow: a backward pass reaches the inputs and the trainable parameters;
- save -> load: the state dict written with ``safetensors.torch.save_file`` and loaded into a fresh build
  gives identical outputs;
- meta: a build on the ``meta`` device declares the same contract and parameter count as a real one.

A failure raises ``AssertionError`` naming the component and the broken promise. Each check returns a
small report (parameter count, shapes) for display.

Example:
    >>> from zoo.testing import check_component
    >>> check_component("projector", "mlp2x-gelu")["output_shape"]
    [2, 16, 48]
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import torch
from torch import nn

from zoo.errors import ContractError, ZooError, few

if TYPE_CHECKING:
    from zoo.sdk.interfaces import LanguageModel, Projector, VisionTower

    Component: TypeAlias = VisionTower | Projector | LanguageModel

__all__ = ["check_component", "check_language_model", "check_projector", "check_vision_tower"]

Run = Callable[[Any, torch.dtype], torch.Tensor]  # (module under test, dtype it was built in) -> output
PROJECTOR_IN_DIM, PROJECTOR_OUT_DIM = 32, 48
GRID_TOKENS = (16, 36, 64, 144, 256, 576)  # square grids tried when no ``n_in`` is given


# -- entry points -----------------------------------------------------------------------------------
def check_component(kind: str, name: str, **overrides: Any) -> dict[str, Any]:
    """Run the check of ``kind`` (``vision``, ``projector`` or ``lm``) on the component ``name``.

    Example:
        >>> check_component("vision", "tiny-clip")["tokens"]
        16
    """
    checks = {"vision": check_vision_tower, "projector": check_projector, "lm": check_language_model}
    if kind not in checks:
        raise ValueError(f"unknown component kind {kind!r}; valid: {', '.join(checks)}")
    return checks[kind](name, **overrides)


def check_vision_tower(name: str, *, batch: int = 2, **overrides: Any) -> dict[str, Any]:
    """Check a vision tower: ``forward(pixels) -> [B, num_tokens, hidden_size]`` and the common checks.

    With the default ``select: patch`` it also builds ``select: all`` and checks that it returns the
    declared ``num_prefix_tokens`` followed by the same patch features.

    Example:
        >>> check_vision_tower("tiny-siglip")["prefix_tokens"]
        0
    """
    label = f"vision tower {name!r}"
    with _seeded():
        tower = cast("VisionTower", _build(label, "vision", name, overrides))
        pixels = torch.randn(batch, *tower.pixel_shape)  # [B, C, H, W]
        _check_contract_types(label, tower, ("hidden_size", "num_prefix_tokens", "num_tokens", "patch_size"))
        rows, cols = tower.grid_size()
        prefix = tower.num_prefix_tokens if tower.select == "all" else 0
        _expect(
            tower.num_tokens == rows * cols + prefix,
            label,
            f"declares num_tokens={tower.num_tokens}, but its grid {rows}x{cols} with select={tower.select!r} "
            f"and num_prefix_tokens={tower.num_prefix_tokens} gives {rows * cols + prefix}",
        )

        def run(module: nn.Module, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return module(pixels)  # always fp32 pixels: the tower casts them to its own dtype

        out = _check_forward(label, tower, run, (batch, tower.num_tokens, tower.hidden_size), "features")
        if "select" not in overrides and tower.select == "patch" and _accepts_option("vision", name, "select"):
            everything = _build(label, "vision", name, {**overrides, "select": "all"})
            with torch.no_grad():
                full = _run(label, "select='all' with the same weights", _forward_with, everything, tower, pixels)
            n_all = tower.num_patches + tower.num_prefix_tokens
            _expect(
                tuple(full.shape) == (batch, n_all, tower.hidden_size),
                label,
                f"with select='all' returned {list(full.shape)}, but it declares {tower.num_prefix_tokens} prefix "
                f"tokens + {tower.num_patches} patches = {n_all} tokens of size {tower.hidden_size}",
            )
            _expect(
                torch.allclose(full[:, tower.num_prefix_tokens :], out, atol=1e-5, rtol=1e-5),
                label,
                f"select='patch' is not select='all' without its first {tower.num_prefix_tokens} (prefix) tokens "
                f"(they differ by {_max_diff(full[:, tower.num_prefix_tokens :], out)})",
            )
        _run(label, "its preprocessor", _check_preprocessor, tower, label)
        _check_gradients(label, tower, lambda m, x: m(x), pixels)
        report = _common_checks(label, "vision", name, overrides, tower, run, {})
    return {
        **report,
        "tokens": tower.num_tokens,
        "prefix_tokens": tower.num_prefix_tokens,
        "output_shape": list(out.shape),
    }


def check_projector(
    name: str,
    *,
    in_dim: int = PROJECTOR_IN_DIM,
    out_dim: int | None = None,
    n_in: int | None = None,
    batch: int = 2,
    **overrides: Any,
) -> dict[str, Any]:
    """Check a projector: ``[B, n_in, in_dim] -> [B, num_output_tokens(n_in), out_dim]``, every parameter trained.

    ``out_dim`` defaults to 48, or to ``in_dim`` for a projector that refuses to change the width
    (``identity``); ``n_in`` defaults to the first square grid of 16, 36, 64... that it accepts.

    Example:
        >>> check_projector("pixel-shuffle", in_dim=8, out_dim=16, n_in=576)["output_shape"]
        [2, 144, 16]
    """
    label = f"projector {name!r}"
    dims = {"in_dim": in_dim, "out_dim": PROJECTOR_OUT_DIM if out_dim is None else out_dim}
    with _seeded():
        try:
            projector = cast("Projector", _build(label, "projector", name, overrides, raw=True, dims=dims))
        except ContractError as error:
            if out_dim is not None:
                raise AssertionError(f"{label} could not be built with {dims}: {error}") from error
            dims["out_dim"] = in_dim  # a width-preserving projector (identity)
            projector = cast("Projector", _build(label, "projector", name, overrides, dims=dims))
        except ZooError as error:
            raise AssertionError(f"{label} could not be built with {dims}: {error}") from error
        _check_contract_types(label, projector, ("in_dim", "out_dim"))
        _expect(
            (projector.in_dim, projector.out_dim) == (dims["in_dim"], dims["out_dim"]),
            label,
            f"was built for in_dim={dims['in_dim']}, out_dim={dims['out_dim']} but declares "
            f"in_dim={projector.in_dim}, out_dim={projector.out_dim}",
        )
        n_in = n_in if n_in is not None else _accepted_tokens(label, projector)
        problem = projector.check_input_tokens(n_in)
        _expect(problem is None, label, f"refuses n_in={n_in} ({problem}); pass an n_in it accepts")
        n_out = projector.num_output_tokens(n_in)
        features = torch.randn(batch, n_in, dims["in_dim"])

        def run(module: nn.Module, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return module(features.to(dtype))

        out = _check_forward(label, projector, run, (batch, n_out, dims["out_dim"]), f"output for n_in={n_in}")
        _check_gradients(label, projector, lambda m, x: m(x), features, every_parameter=True)
        report = _common_checks(label, "projector", name, overrides, projector, run, dims)
    return {**report, **dims, "n_in": n_in, "tokens": n_out, "output_shape": list(out.shape)}


def check_language_model(name: str, *, batch: int = 2, seq_len: int = 8, **overrides: Any) -> dict[str, Any]:
    """Check a language model: ``embed``, ``forward(inputs_embeds, attention_mask, labels)``, contract data.

    Besides the common checks: ``embed(ids)`` is what the model computes itself (logits from
    ``inputs_embeds=embed(ids)`` equal logits from ``input_ids=ids``), logits are ``[B, T, vocab_size]``,
    the loss is a finite scalar, and every LoRA target and the decoder-layer class exist in the model.

    Example:
        >>> check_language_model("tiny-qwen2")["vocab_size"] > 0
        True
    """
    label = f"language model {name!r}"
    with _seeded():
        lm = cast("LanguageModel", _build(label, "lm", name, overrides))
        _check_contract_types(label, lm, ("hidden_size", "vocab_size"))
        ids = torch.randint(0, lm.vocab_size, (batch, seq_len))
        mask = torch.ones(batch, seq_len, dtype=torch.long)
        mask[0, :2] = 0  # one left-padded row
        embeds = _run(label, "embed(ids)", lambda m: m.embed(ids), lm)
        _expect(
            tuple(embeds.shape) == (batch, seq_len, lm.hidden_size),
            label,
            f"embed(ids [{batch}, {seq_len}]) returned {list(embeds.shape)}, expected [{batch}, {seq_len}, "
            f"{lm.hidden_size}] (hidden_size)",
        )

        def run(module: LanguageModel, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return module(module.embed(ids), attention_mask=mask).logits

        logits = _check_forward(label, lm, run, (batch, seq_len, lm.vocab_size), "logits", finite_rows=mask.bool())
        with torch.no_grad():
            own = _run(label, "forward on input_ids", lambda m: m.model(input_ids=ids, attention_mask=mask).logits, lm)
        _expect(
            torch.allclose(own, logits, atol=1e-4, rtol=1e-4),
            label,
            "embed(ids) differs from the model's own embedding: logits from inputs_embeds=embed(ids) and from "
            f"input_ids=ids differ by {(own - logits).abs().max().item():.3g} (a missing embedding scale?)",
        )
        labels = ids.masked_fill(mask == 0, -100)
        with torch.no_grad():
            loss = _run(
                label, "forward with labels", lambda m: m(m.embed(ids), attention_mask=mask, labels=labels), lm
            ).loss
        _expect(
            loss is not None and loss.dim() == 0 and bool(torch.isfinite(loss)),
            label,
            f"forward(..., labels=...) must return a finite scalar .loss, got {loss!r}",
        )
        _check_lm_structure(label, lm)
        _check_gradients(
            label,
            lm,
            lambda m, _: m(m.embed(ids), attention_mask=mask, labels=labels).loss,
            None,
            must_reach=[("input embedding weight", lambda m: m.model.get_input_embeddings().weight)],
        )
        report = _common_checks(label, "lm", name, overrides, lm, run, {})
    return {**report, "hidden_size": lm.hidden_size, "vocab_size": lm.vocab_size, "loss": loss.item()}


# -- shared checks ----------------------------------------------------------------------------------
def _common_checks(
    label: str, kind: str, name: str, overrides: dict[str, Any], module: Component, run: Run, dims: dict[str, int]
) -> dict[str, Any]:
    """Frozen, bf16 build, fp32 -> bf16 -> fp32 round trip, safetensors save/load, meta build; returns counts."""
    _check_frozen(label, module, run)
    module.eval()
    with torch.no_grad():
        reference = _run(label, "forward", run, module)
    bf16 = _build(label, kind, name, overrides, dtype="bfloat16", dims=dims).eval()
    wrong = sorted({str(p.dtype) for p in bf16.parameters() if p.is_floating_point() and p.dtype != torch.bfloat16})
    _expect(not wrong, label, f"a dtype=bfloat16 build still has parameters in {', '.join(wrong)}")
    with torch.no_grad():
        out = _run(label, "a dtype=bfloat16 build", run, bf16, torch.bfloat16)
    _expect(out.dtype == torch.bfloat16, label, f"a dtype=bfloat16 build returned {out.dtype}, expected torch.bfloat16")
    _expect(bool(torch.isfinite(out.float()).all()), label, "a dtype=bfloat16 build returned NaN or inf")
    _check_cast_round_trip(label, module, run, reference)
    _check_save_load(label, kind, name, overrides, module, run, reference, dims)
    meta = cast("Component", _build(label, kind, name, overrides, meta=True, dims=dims))
    on_device = [n for n, p in meta.named_parameters() if not p.is_meta]
    _expect(not on_device, label, f"a meta build allocated real parameters: {few(on_device, 5)}")
    real_count, meta_count = _count(module), _count(meta)
    _expect(
        meta_count == real_count,
        label,
        f"a meta build has {meta_count:,} parameters but a real build has {real_count:,}",
    )
    if hasattr(module, "contract"):
        real_contract, meta_contract = module.contract(), meta.contract()
        _expect(
            real_contract == meta_contract,
            label,
            f"declares a different contract on meta ({meta_contract}) than when built for real ({real_contract})",
        )
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"name": name, "kind": kind, "parameters": real_count, "trainable": trainable}


def _check_forward(
    label: str,
    module: nn.Module,
    run: Run,
    expected: tuple[int, ...],
    what: str,
    finite_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        out = _run(label, "forward", run, module)
    _expect(
        tuple(out.shape) == expected,
        label,
        f"{what} have shape {list(out.shape)}, but its declared contract gives {list(expected)}",
    )
    values = out if finite_rows is None else out[finite_rows]
    _expect(bool(torch.isfinite(values).all()), label, f"{what} contain NaN or inf on random inputs")
    return out


def _check_gradients(
    label: str,
    module: nn.Module,
    forward: Callable[[Any, torch.Tensor | None], torch.Tensor],
    inputs: torch.Tensor | None,
    *,
    every_parameter: bool = False,
    must_reach: Sequence[tuple[str, Callable[[Any], torch.Tensor]]] = (),
) -> None:
    """Backward through ``forward(module, inputs)``: gradients reach the inputs and the parameters.

    With ``every_parameter`` each trainable parameter must be in the graph (projectors are trained whole).
    """
    module.train()
    module.zero_grad(set_to_none=True)
    leaf = None if inputs is None else inputs.clone().requires_grad_(True)
    out = _run(label, "forward with gradients", forward, module, leaf)
    _expect(out.requires_grad, label, "its output does not require grad: the backward pass reaches nothing")
    loss = out if out.dim() == 0 else out.float().square().mean()
    loss.backward()
    if leaf is not None:
        _expect(
            leaf.grad is not None and bool(leaf.grad.abs().sum() > 0),
            label,
            "the backward pass does not reach its input",
        )
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    reached = [n for n, p in trainable if p.grad is not None and bool(p.grad.abs().sum() > 0)]
    broken = [n for n, p in trainable if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    _expect(not broken, label, f"the backward pass gave NaN/inf gradients to {few(broken, 5)}")
    if every_parameter:
        missing = [n for n, p in trainable if p.grad is None]
        _expect(not missing, label, f"the backward pass does not reach {few(missing, 5)} (detached or unused)")
    if trainable:
        _expect(bool(reached), label, f"no gradient reached any of its {len(trainable)} trainable parameters")
    for what, getter in must_reach:
        grad = getter(module).grad
        _expect(grad is not None and bool(grad.abs().sum() > 0), label, f"the backward pass does not reach the {what}")
    module.zero_grad(set_to_none=True)
    module.eval()


def _check_frozen(label: str, module: nn.Module, run: Run) -> None:
    """Training steps with the component frozen, held as ``MultiModal`` holds a ``train: frozen`` slot (no
    gradients, eval mode whatever the model's mode), leave its whole state dict, buffers included, bit-identical."""
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    wanted = [p.requires_grad for p in module.parameters()]
    head = nn.Parameter(torch.ones(()))  # something downstream that does train
    optimizer = torch.optim.SGD([head], lr=0.1)
    module.requires_grad_(False)
    module.eval()
    try:
        for _ in range(2):
            out = _run(label, "a training step while frozen", run, module)
            (out.float() * head).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        for param, requires_grad in zip(module.parameters(), wanted):
            param.requires_grad_(requires_grad)
    after = module.state_dict()
    changed = sorted(
        k for k in {*before, *after} if k not in before or k not in after or not torch.equal(before[k], after[k])
    )
    _expect(
        not changed,
        label,
        f"changed while frozen (no gradients, eval mode): {few(changed, 5)}; a train: frozen component must keep "
        "every parameter and buffer bit-identical (do not update state in forward)",
    )


def _check_cast_round_trip(label: str, module: nn.Module, run: Run, reference: torch.Tensor) -> None:
    """fp32 -> bf16 -> fp32: every tensor keeps its name, shape and (bf16-rounded) value; outputs stay close."""
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    module.to(torch.bfloat16).to(torch.float32)
    after = module.state_dict()
    _expect(
        set(after) == set(before),
        label,
        f"fp32 -> bf16 -> fp32 changed its state-dict keys: {few(set(after) ^ set(before), 5)}",
    )
    for key, old in before.items():
        new = after[key]
        expected = old.to(torch.bfloat16).to(torch.float32) if old.is_floating_point() else old
        same = new.dtype == expected.dtype and new.shape == expected.shape and torch.equal(new, expected)
        _expect(same, label, f"fp32 -> bf16 -> fp32 did not preserve {key!r} ({old.dtype} -> {new.dtype})")
    with torch.no_grad():
        out = _run(label, "after fp32 -> bf16 -> fp32, forward", run, module).float()
    scale = reference.float().norm().clamp_min(1e-6)
    error = ((out - reference.float()).norm() / scale).item()
    _expect(error < 0.1, label, f"after fp32 -> bf16 -> fp32 its output moved by {error:.2%} (relative)")
    module.load_state_dict(before)


def _check_save_load(
    label: str,
    kind: str,
    name: str,
    overrides: dict[str, Any],
    module: nn.Module,
    run: Run,
    reference: torch.Tensor,
    dims: dict[str, int],
) -> None:
    """State dict -> ``safetensors.torch.save_file`` -> fresh build -> identical outputs."""
    from safetensors.torch import load_file, save_file

    state, aliases = _unique_tensors(module.state_dict())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.safetensors"
        save_file(state, str(path))
        loaded = load_file(str(path))
    torch.manual_seed(12345)  # a fresh build with other random weights
    fresh = _build(label, kind, name, overrides, dims=dims)
    try:
        missing, unexpected = fresh.load_state_dict(loaded, strict=False)
    except RuntimeError as error:
        raise AssertionError(f"{label}: its saved weights do not load into a fresh build: {error}") from error
    missing = [k for k in missing if k not in aliases]
    _expect(not missing and not unexpected, label,
            f"saved weights do not fit a fresh build: missing {few(missing, 5)}, unexpected {few(unexpected, 5)}")  # fmt: skip
    with torch.no_grad():
        out = _run(label, "a fresh build loaded from safetensors", run, fresh.eval())
    _expect(
        torch.equal(out, reference),
        label,
        f"after save -> load (safetensors) its outputs differ by {(out - reference).abs().max().item():.3g}",
    )


def _check_preprocessor(tower: VisionTower, label: str) -> None:
    from PIL import Image

    preprocessor = tower.preprocessor
    side = tower.image_size
    _expect(
        preprocessor.image_size == side, label, f"preprocessor is for {preprocessor.image_size} px, tower for {side}"
    )
    image = Image.fromarray(torch.randint(0, 256, (side + 7, side + 3, 3), dtype=torch.uint8).numpy())
    pixels = preprocessor([image])
    expected = (1, *tower.pixel_shape)
    _expect(
        tuple(pixels.shape) == expected,
        label,
        f"preprocessor turned one {side + 3}x{side + 7} image into {list(pixels.shape)}, expected {list(expected)}",
    )


def _accepts_option(kind: str, name: str, option: str) -> bool:
    """Whether the component registered as ``name`` takes ``option`` in its config."""
    import dataclasses

    from zoo.core.registry import get_registry

    spec, _ = get_registry().resolve(kind, name)
    return option in {f.name for f in dataclasses.fields(spec.config_cls)}


def _check_lm_structure(label: str, lm: LanguageModel) -> None:
    names = [n for n, _ in lm.model.named_modules()]
    targets = list(getattr(lm, "lora_targets", ()))
    _expect(bool(targets), label, "declares no default LoRA target modules")
    absent = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    _expect(not absent, label, f"declares LoRA targets that match no module: {few(absent, 5)}")
    layer_cls = getattr(lm, "decoder_layer_class", None)
    if layer_cls is not None:
        found = any(isinstance(m, layer_cls) for m in lm.modules())
        _expect(found, label, f"declares decoder_layer_class {layer_cls.__name__}, which it does not contain")


def _check_contract_types(label: str, module: nn.Module, attributes: tuple[str, ...]) -> None:
    for attribute in attributes:
        value = getattr(module, attribute, None)
        _expect(
            isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            label,
            f"contract attribute {attribute} = {value!r} is not a non-negative int",
        )


# -- helpers ----------------------------------------------------------------------------------------
def _build(
    label: str,
    kind: str,
    name: str,
    overrides: dict[str, Any],
    *,
    dtype: str = "float32",
    meta: bool = False,
    raw: bool = False,
    dims: Mapping[str, int] | None = None,
) -> nn.Module:
    from zoo.core.builder import build_component

    dims = dict(dims or {})  # in_dim / out_dim of a projector
    try:
        return build_component(
            kind, name, dict(overrides), dtype=dtype, meta=meta, in_dim=dims.get("in_dim"), out_dim=dims.get("out_dim")
        )
    except ZooError as error:
        if raw:
            raise
        how = f"dtype={dtype}{', on meta' if meta else ''}{', ' + str(dims) if dims else ''}"
        raise AssertionError(f"{label} could not be built ({how}): {error}") from error


def _accepted_tokens(label: str, projector: Projector) -> int:
    for tokens in GRID_TOKENS:
        if projector.check_input_tokens(tokens) is None:
            return tokens
    raise AssertionError(f"{label} accepts none of the token counts {GRID_TOKENS}; pass n_in explicitly")


def _unique_tensors(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Drop aliases of shared tensors (tied embeddings): safetensors refuses shared storage."""
    seen: dict[tuple[int, int | torch.SymInt, tuple[int, ...]], str] = {}
    unique, aliases = {}, set()
    for key, tensor in state.items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and ident in seen:
            aliases.add(key)
            continue
        seen[ident] = key
        unique[key] = tensor.detach().contiguous().clone()
    return unique, aliases


def _forward_with(module: nn.Module, weights_of: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    module.load_state_dict(weights_of.state_dict())
    return module.eval()(inputs)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{(a.float() - b.float()).abs().max().item():.3g}" if a.shape == b.shape else f"shape {list(a.shape)}"


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _run(label: str, what: str, run: Callable[..., Any], module: nn.Module, *args: Any) -> Any:
    """Call ``run(module, *args)``; an exception becomes an AssertionError saying which step failed."""
    try:
        return run(module, *args)
    except AssertionError:
        raise
    except Exception as error:  # any crash of the component is a conformance failure
        raise AssertionError(f"{label}: {what} failed: {type(error).__name__}: {error}") from error


def _expect(condition: bool, label: str, message: str) -> None:
    if not condition:
        raise AssertionError(f"{label}: {message}")


@contextlib.contextmanager
def _seeded(seed: int = 0) -> Iterator[None]:
    """Seed torch for the check without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
