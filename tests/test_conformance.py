"""The conformance kit (``zoo.testing``) over every registered tiny tower and LM and every projector,
plus throwaway components that break one promise each, which the kit must reject."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from zoo.core.registry import get_registry
from zoo.sdk.interfaces import ImagePreprocessor, LanguageModel, Projector, VisionTower
from zoo.sdk.specs import LanguageModelSpec, ProjectorSpec, VisionTowerSpec
from zoo.sdk.weights import building_on_meta, torch_dtype_of
from zoo.testing import check_component, check_language_model, check_projector, check_vision_tower

# A pattern spec lists under its display name; the kit checks one concrete name it accepts.
PATTERN_EXAMPLES = {"mlp<N>x-gelu": "mlp3x-gelu"}


def _names(kind: str, pattern: str = "*") -> list[Any]:
    params = []
    for spec in get_registry().list(kind, pattern):
        if spec.pattern is None:
            params.append(spec.name)
        elif spec.name in PATTERN_EXAMPLES:
            params.append(PATTERN_EXAMPLES[spec.name])
        else:
            reason = f"pattern spec {spec.name!r} has no example name in PATTERN_EXAMPLES"
            params.append(pytest.param(spec.name, marks=pytest.mark.skip(reason=reason)))
    return params


@pytest.mark.parametrize("name", _names("vision", "tiny-*"))
def test_tiny_vision_tower_conforms(name):
    report = check_component("vision", name)
    assert report["parameters"] > 0 and report["tokens"] == report["output_shape"][1]


@pytest.mark.parametrize("name", _names("projector"))
def test_projector_conforms(name):
    report = check_component("projector", name)
    assert report["output_shape"] == [2, report["tokens"], report["out_dim"]]


@pytest.mark.parametrize("name", _names("lm", "tiny-*"))
def test_tiny_language_model_conforms(name):
    report = check_component("lm", name)
    assert report["vocab_size"] > 0 and report["loss"] > 0


def test_projector_kit_honours_explicit_sizes():
    report = check_projector("pixel-shuffle", in_dim=8, out_dim=16, n_in=576)
    assert report["output_shape"] == [2, 144, 16]
    with pytest.raises(AssertionError, match="refuses n_in=575"):
        check_projector("pixel-shuffle", in_dim=8, out_dim=16, n_in=575)
    with pytest.raises(AssertionError, match=r"'out_dim': 16.*in_dim=8.*out_dim=16"):
        check_projector("identity", in_dim=8, out_dim=16)  # an explicit out_dim is not silently replaced


def test_every_kind_and_a_bad_kind():
    with pytest.raises(ValueError, match="unknown component kind"):
        check_component("tokenizer", "x")


# -- throwaway components that break one promise each -----------------------------------------------
class _Projector(Projector):
    """A linear projector with switches that break one part of the contract."""

    def __init__(self, in_dim: int, out_dim: int, flaw: str) -> None:
        super().__init__(in_dim, out_dim)
        self.flaw = flaw
        width = out_dim + 1 if flaw == "wrong-width" else out_dim
        bias = not (flaw == "meta-count" and building_on_meta())  # the meta build lacks the bias
        self.linear = nn.Linear(in_dim, width, bias=bias)
        self.scale = nn.Parameter(torch.ones(width))
        if flaw == "unsaved-state":
            self.register_buffer("noise", torch.randn(width), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scale = self.scale.detach() if self.flaw == "detached" else self.scale
        out = self.linear(features) * scale  # [B, N, out]
        if self.flaw == "drops-tokens":
            out = out[:, 1:]  # [B, N-1, out]: the reference design's [:, 1:] on a tower without CLS
        if self.flaw == "nan":
            out = out / 0.0 * 0.0
        if self.flaw == "fp32-output":
            out = out.float()
        if self.flaw == "unsaved-state":
            out = out + self.noise.to(out.dtype)
        return out


class _Tower(VisionTower):
    """A patch-embedding tower that declares a CLS token it does not have (so select='patch' drops a patch)."""

    def __init__(self) -> None:
        super().__init__(hidden_size=16, num_prefix_tokens=1, patch_size=8, image_size=32, num_layers=1)
        self.patch = nn.Conv2d(3, 16, 8, 8)
        self.block = nn.Linear(16, 16)

    @property
    def preprocessor(self) -> ImagePreprocessor:
        from torchvision.transforms.functional import pil_to_tensor, resize

        return ImagePreprocessor(
            lambda image: resize(pil_to_tensor(image).float() / 255, [32, 32]),
            image_size=32,
            mean=[0.0] * 3,
            std=[1.0] * 3,
        )

    def hidden_states_upto(self, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
        hidden = self.patch(pixel_values).flatten(2).transpose(1, 2)  # [B, 16, D]
        return self.block(hidden) if layer else hidden


def _tiny_lm(config: Any, *, embed_scale: float) -> LanguageModel:
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    arch = Qwen2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=96, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    model = Qwen2ForCausalLM._from_config(arch, dtype=torch_dtype_of(config.dtype))
    return LanguageModel(
        model, None, lora_targets=["q_proj", "v_proj"], decoder_layer_class=Qwen2DecoderLayer,
        embed_scale=embed_scale, name="conformance-lm",
    )  # fmt: skip


def _register(spec: Any, check: Callable[[], Any]) -> Any:
    registry = get_registry()
    registry.add(spec, plugin="tests.test_conformance")
    try:
        return check()
    finally:
        registry.remove(spec.kind, spec.name)


BROKEN_PROJECTORS = {
    "drops-tokens": r"shape \[2, 15, 48\].*\[2, 16, 48\]",
    "wrong-width": r"shape \[2, 16, 49\]",
    "nan": "NaN",
    "detached": "does not reach scale",
    "meta-count": "meta build has",
    "fp32-output": "returned torch.float32",
    "unsaved-state": "save -> load",
}


@pytest.mark.parametrize(("flaw", "message"), BROKEN_PROJECTORS.items(), ids=list(BROKEN_PROJECTORS))
def test_kit_rejects_a_broken_projector(flaw, message):
    name = f"conformance-broken-{flaw}"
    spec = ProjectorSpec(name=name, factory=lambda config: _Projector(config.in_dim, config.out_dim, flaw))
    with pytest.raises(AssertionError, match=message) as error:
        _register(spec, lambda: check_projector(name))
    assert f"projector {name!r}" in str(error.value)
    assert name not in [s.name for s in get_registry().list("projector")]


def test_kit_accepts_the_same_projector_without_a_flaw():
    spec = ProjectorSpec(name="conformance-sound", factory=lambda config: _Projector(config.in_dim, config.out_dim, ""))
    report = _register(spec, lambda: check_projector("conformance-sound"))
    assert report["parameters"] == 32 * 48 + 48 + 48


def test_kit_rejects_a_tower_that_drops_a_real_patch():
    spec = VisionTowerSpec(name="conformance-broken-tower", factory=lambda config: _Tower())
    with pytest.raises(AssertionError, match=r"features have shape \[2, 15, 16\].*\[2, 16, 16\]"):
        _register(spec, lambda: check_vision_tower("conformance-broken-tower"))


def test_kit_rejects_an_lm_whose_embed_is_not_its_own():
    sound = LanguageModelSpec(name="conformance-lm", factory=lambda config: _tiny_lm(config, embed_scale=1.0))
    report = _register(sound, lambda: check_language_model("conformance-lm"))
    assert report["hidden_size"] == 32 and report["vocab_size"] == 96
    broken = LanguageModelSpec(name="conformance-broken-lm", factory=lambda config: _tiny_lm(config, embed_scale=2.0))
    with pytest.raises(AssertionError, match="differs from the model's own embedding"):
        _register(broken, lambda: check_language_model("conformance-broken-lm"))


def _raising_factory(config: Any) -> Projector:
    raise ValueError("the plugin's own bug")


def test_a_factory_that_raises_fails_the_kit_without_cli_advice():
    spec = ProjectorSpec(name="conformance-raises", factory=_raising_factory)
    with pytest.raises(AssertionError, match=r"'conformance-raises'.*ValueError: the plugin's own bug") as error:
        _register(spec, lambda: check_projector("conformance-raises"))
    assert "--debug" not in str(error.value)  # pytest has no --debug; it shows the chained traceback itself
    assert isinstance(error.value.__cause__.__cause__, ValueError)


def test_the_cli_suggests_debug_for_a_factory_that_raises(capsys):
    from zoo.cli.app import main

    spec = ProjectorSpec(name="conformance-raises", factory=_raising_factory)
    code = _register(spec, lambda: main(["show", "conformance-raises"]))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo: error: 'conformance-raises': model.projector ('conformance-raises', plugin")
    assert err.endswith("ValueError: the plugin's own bug (run with --debug for the traceback)")
