"""YAML validation: unknown keys, wrong types, unknown names, bad choices — each message checked."""

from __future__ import annotations

import pytest

from zoo.core.builder import plan
from zoo.core.config import load_model_config, parse_model_config
from zoo.errors import ConfigError, UnknownNameError

GOOD = """
model:
  vision: {name: tiny-clip, select_layer: -2, select: patch}
  projector: {name: mlp2x-gelu}
  lm: {name: tiny-qwen2}
  dtype: bfloat16
"""


def test_good_file_parses_and_round_trips(write_yaml):
    config = load_model_config(write_yaml(GOOD))
    assert (config.vision.name, config.projector.name, config.lm.name) == ("tiny-clip", "mlp2x-gelu", "tiny-qwen2")
    assert config.dtype == "bfloat16"
    assert config.vision.options == {"select_layer": -2, "select": "patch"}
    assert config.vision.train == "frozen" and config.projector.train == "full" and config.lm.train == "frozen"
    again = parse_model_config(config.to_dict(), source=config.source)
    assert again == config


def test_unknown_top_level_key(write_yaml):
    path = write_yaml(GOOD + "modle: {}\n")
    with pytest.raises(ConfigError, match=r"model\.yaml: unknown key 'modle'; did you mean 'model'\?"):
        load_model_config(path)


def test_unknown_model_key(write_yaml):
    path = write_yaml(GOOD.replace("dtype: bfloat16", "dtyp: bfloat16"))
    with pytest.raises(ConfigError, match=r"unknown key 'model\.dtyp'; did you mean 'dtype'"):
        load_model_config(path)


def test_unknown_component_name_suggests(write_yaml):
    path = write_yaml(GOOD.replace("mlp2x-gelu", "mlp2_gelu"))
    with pytest.raises(UnknownNameError) as info:
        plan(path)
    message = str(info.value)
    assert "model.projector.name = 'mlp2_gelu' is not a registered projector" in message
    assert "did you mean 'mlp2x-gelu'" in message
    assert "zoo list projector" in message


def test_unknown_component_option_is_caught_before_construction(write_yaml):
    path = write_yaml(GOOD.replace("select: patch}", "select: patch, selct_layer: 3}"))
    with pytest.raises(ConfigError, match=r"unknown key 'model\.vision\.selct_layer'; did you mean 'select_layer'"):
        plan(path)


def test_wrong_type_names_key_value_and_expected(write_yaml):
    path = write_yaml(GOOD.replace("select_layer: -2", "select_layer: penultimate"))
    with pytest.raises(
        ConfigError, match=r"model\.vision\.select_layer = 'penultimate' has the wrong type; expected an integer"
    ):
        plan(path)


def test_bad_choice_lists_valid_ones(write_yaml):
    path = write_yaml(GOOD.replace("select: patch", "select: patches"))
    with pytest.raises(ConfigError, match=r"model\.vision\.select = 'patches' is not valid; did you mean 'patch'"):
        plan(path)


def test_bad_dtype(write_yaml):
    path = write_yaml(GOOD.replace("dtype: bfloat16", "dtype: bfloat61"))
    with pytest.raises(ConfigError, match=r"model\.dtype = 'bfloat61' is not a dtype; did you mean 'bfloat16'"):
        load_model_config(path)


def test_bad_train_mode(write_yaml):
    path = write_yaml(GOOD.replace("{name: tiny-qwen2}", "{name: tiny-qwen2, train: lorra}"))
    with pytest.raises(ConfigError, match=r"model\.lm\.train = 'lorra' is not a training mode; did you mean 'lora'"):
        load_model_config(path)


def test_missing_slot_and_missing_name(write_yaml):
    with pytest.raises(ConfigError, match=r"missing required key 'model\.lm'"):
        load_model_config(write_yaml("model:\n  vision: tiny-clip\n  projector: linear\n"))
    with pytest.raises(ConfigError, match=r"model\.vision has no 'name'"):
        load_model_config(write_yaml("model:\n  vision: {select: all}\n  projector: linear\n  lm: tiny-qwen2\n"))


def test_invalid_yaml_and_missing_file(write_yaml, tmp_path):
    with pytest.raises(ConfigError, match=r"invalid YAML"):
        load_model_config(write_yaml("model: [unclosed\n"))
    with pytest.raises(ConfigError, match=r"config file .*nope\.yaml' does not exist"):
        load_model_config(tmp_path / "nope.yaml")


def test_yaml_tags_are_not_executed(write_yaml):
    path = write_yaml("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_model_config(path)


def test_unknown_composition_name_suggests():
    with pytest.raises(
        ConfigError,
        match=r"'tiny-clip-mlp-qwen' is neither a YAML file nor a registered composition; did you mean 'tiny-clip-mlp-qwen2'",
    ):
        load_model_config("tiny-clip-mlp-qwen")


def test_unknown_pass_through_source_lists_valid_sources():
    with pytest.raises(UnknownNameError) as info:
        plan({"model": {"vision": "timmm:vit_base_patch16_224", "projector": "linear", "lm": "tiny-qwen2"}})
    message = str(info.value)
    assert "unknown source 'timmm:'" in message and "timm:" in message and "open_clip:" in message


def test_lora_only_on_lm(write_yaml):
    path = write_yaml(GOOD.replace("{name: mlp2x-gelu}", "{name: mlp2x-gelu, train: lora}"))
    with pytest.raises(ConfigError, match=r"model\.projector\.train = 'lora': LoRA applies to the language model"):
        load_model_config(path)


def test_image_token_must_be_a_placeholder_not_a_word():
    import zoo

    base = {"vision": "tiny-clip", "projector": "linear", "lm": "tiny-qwen2"}
    with pytest.raises(ConfigError, match=r"model\.image_token = 'the' is an ordinary token of 'tiny-qwen2'"):
        zoo.build({"model": {**base, "image_token": "the"}})
    with pytest.raises(ConfigError, match=r"model\.image_token = '': expected a non-empty token"):
        load_model_config({"model": {**base, "image_token": ""}})
