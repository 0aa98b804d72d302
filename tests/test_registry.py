"""Registry listing and lookup, like timm.list_models: wildcards, natural sort, close-match errors."""

from __future__ import annotations

import pytest

import zoo
from zoo.core.registry import get_registry, natural_key
from zoo.errors import PluginError, UnknownNameError


def test_natural_sort_orders_numbers_by_value():
    names = ["qwen2-72b", "qwen2-7b", "qwen2-1.5b", "mlp10x-gelu", "mlp2x-gelu"]
    assert sorted(names, key=natural_key) == ["mlp2x-gelu", "mlp10x-gelu", "qwen2-1.5b", "qwen2-7b", "qwen2-72b"]


def test_list_with_wildcards_and_excludes():
    tiny = zoo.list_components("vision", "tiny-*")
    assert "tiny-clip" in tiny and all(n.startswith("tiny-") for n in tiny)
    assert tiny == sorted(tiny, key=natural_key)
    no_tiny = zoo.list_components("vision", "*", exclude="tiny-*")
    assert no_tiny and not set(no_tiny) & set(tiny)
    both = zoo.list_components("vision", ["clip-*", "siglip-*"])
    assert "clip-vit-l-14-336" in both and "siglip-so400m-14-384" in both and "tiny-clip" not in both


def test_every_kind_lists_its_catalogue():
    assert {"tiny-clip", "clip-vit-l-14-336"} <= set(zoo.list_components("vision"))
    assert {"identity", "linear", "mlp2x-gelu"} <= set(zoo.list_components("projector"))
    assert {"tiny-qwen2", "qwen2-7b", "qwen2.5-7b"} <= set(zoo.list_components("lm"))
    assert "tiny-clip-mlp-qwen2" in get_registry().list_compositions("tiny-*")


def test_lookup_miss_suggests_close_names():
    with pytest.raises(UnknownNameError) as info:
        get_registry().resolve("lm", "qwen2-7", key="model.lm.name")
    message = str(info.value)
    assert "model.lm.name = 'qwen2-7' is not a registered language model" in message
    assert "did you mean" in message and "'qwen2-7b'" in message


def test_pattern_names_resolve_with_implied_values():
    spec, implied = get_registry().resolve("projector", "mlp3x-gelu")
    assert spec.pattern and implied == {"depth": "3"}
    spec, implied = get_registry().resolve("vision", "timm:vit_base_patch16_224")
    assert spec.source == "timm" and implied == {"model_name": "vit_base_patch16_224"}


def test_registering_a_non_spec_is_rejected(fresh_registry):
    registry = get_registry()
    with pytest.raises(PluginError, match="expected a VisionTowerSpec, ProjectorSpec or LanguageModelSpec"):
        registry.add(object(), plugin="me")


def test_throwaway_registration_and_removal(fresh_registry):
    registry = get_registry()
    spec = zoo.ProjectorSpec(name="throwaway", factory=lambda c: None)
    registry.add(spec, plugin="test")
    try:
        assert registry.get("projector", "throwaway").plugin == "test"
    finally:
        registry.remove("projector", "throwaway")
    with pytest.raises(UnknownNameError):
        registry.get("projector", "throwaway")


def test_pattern_display_names_do_not_build_and_names_win_over_contradicting_options():
    from zoo.core.builder import build_component
    from zoo.errors import ConfigError

    with pytest.raises(
        UnknownNameError,
        match=r"'mlp<N>x-gelu' is not a registered projector; did you mean 'mlp2x-gelu'.*names of the form mlp<N>x-gelu work too",
    ):
        build_component("projector", "mlp<N>x-gelu", in_dim=8, out_dim=8)
    with pytest.raises(
        ConfigError,
        match=r"model\.projector\.depth = 4 contradicts the name model\.projector\.name, which implies depth = 3",
    ):
        build_component("projector", "mlp3x-gelu", {"depth": 4}, in_dim=8, out_dim=8)
