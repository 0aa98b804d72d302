"""Property tests (hypothesis): over YAML text, composition data, generation options and the CLI's
argument space, the only exceptions that escape zoo are its own error types (and the CLI exits 0 or 2)."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoo.cli.app import main
from zoo.core.config import parse_model_config
from zoo.errors import ConfigError, ZooError
from zoo.sdk.limits import check_generation_options
from zoo.sdk.yaml_io import load_yaml_text

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = ["tiny-clip", "tiny-siglip", "mlp2x-gelu", "linear", "identity", "resampler", "pixel-shuffle",
         "tiny-qwen2", "tiny-llama", "timm:vit_tiny_patch16_224", "nope", ""]  # fmt: skip
KEYS = ["model", "plugins", "vision", "projector", "lm", "name", "dtype", "image_token", "train", "lr", "lora",
        "r", "alpha", "dropout", "select", "select_layer", "image_size", "arch", "checkpoint", "num_queries"]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NAMES),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=25,
)
slot = st.one_of(
    st.sampled_from(NAMES),
    st.fixed_dictionaries({"name": st.sampled_from(NAMES)}, optional={k: values for k in KEYS if k != "name"}),
)
compositions = st.one_of(
    values,
    st.fixed_dictionaries(
        {
            "model": st.fixed_dictionaries(
                {"vision": slot, "projector": slot, "lm": slot},
                optional={k: values for k in ("dtype", "image_token", "gradient_checkpointing")},
            )
        },
        optional={"plugins": st.lists(st.text(max_size=10), max_size=2)},
    ),
)


@FAST
@given(st.text(max_size=400))
def test_yaml_text_gives_data_or_a_config_error(text):
    try:
        load_yaml_text(text, "fuzz.yaml")
    except ConfigError as error:
        assert "\n" not in str(error) and len(str(error)) < 1000


yaml_tokens = st.sampled_from(
    ["a:", " b:", "&x", "*x", "&y", "*y", "[", "]", "{", "}", ",", "- ", "\n", "  ", "<<:", "!!int", "!!str",
     "!!python/object:os.system", "9" * 30, "1e999", ".nan", "'q'", '"\\x00"', "? ", "|", ">", "---", "..."]
)  # fmt: skip


@FAST
@given(st.lists(yaml_tokens, max_size=60))
def test_yaml_made_of_syntax_gives_data_or_a_config_error(tokens):
    try:
        load_yaml_text("".join(tokens), "fuzz.yaml")
    except ConfigError as error:
        assert "\n" not in str(error)


@FAST
@given(compositions)
def test_composition_data_gives_a_config_or_a_config_error(data):
    try:
        config = parse_model_config(data, source="fuzz")
    except ConfigError as error:
        assert len(str(error)) < 2000
    else:
        assert parse_model_config(config.to_dict(), source="fuzz") == config


@FAST
@given(compositions)
def test_dumped_compositions_round_trip_through_the_bounded_loader(data):
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    try:
        parse_model_config(load_yaml_text(text, "fuzz.yaml"), source="fuzz.yaml")
    except ConfigError:
        pass


@FAST
@given(
    st.one_of(st.integers(min_value=-(2**64), max_value=2**64), st.booleans()),
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    st.one_of(st.none(), st.integers(min_value=-10, max_value=10**6)),
    st.integers(min_value=0, max_value=10**6),
)
def test_generation_options_are_valid_or_refused(max_new_tokens, temperature, top_p, context, prompt_tokens):
    try:
        check_generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                 context=context, prompt_tokens=prompt_tokens)  # fmt: skip
    except ConfigError as error:
        assert len(str(error)) < 400
    else:
        assert not isinstance(max_new_tokens, bool) and max_new_tokens >= 1
        assert temperature is None or (math.isfinite(temperature) and temperature > 0)
        assert top_p is None or 0 < top_p <= 1
        assert context is None or prompt_tokens + max_new_tokens <= context


COMMANDS = [["list"], ["show"], ["validate"], ["build", "--meta"], ["plugins"]]
ARGS = st.one_of(
    st.sampled_from([*NAMES, "tiny-clip-mlp-qwen2", "vision", "lm", "model", "*", "tiny-*", "[", "/dev/zero", "/proc",
                     ".", "--json", "--debug-not", "--kind", "--in-dim", "--out-dim", "--dtype", "bf16", "float64",
                     "--vision", "--projector", "--lm", "-1", "0", "9" * 40, "nan", "--help-me"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
)  # fmt: skip


@SLOW
@given(st.sampled_from(COMMANDS), st.lists(ARGS, max_size=5))
def test_the_cli_exits_0_or_2_whatever_the_arguments(command, extra):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*command, *extra])
        except ZooError as error:  # pragma: no cover - main() must catch these
            pytest.fail(f"main let a ZooError escape: {error}")
    assert code in (0, 2), err.getvalue()
    if code == 2:  # one error: a "zoo: error:" line, or with --json the {"error": ...} document on stdout
        lines = [line for line in err.getvalue().splitlines() if line.startswith("zoo: error:")]
        documents = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith('{"error"')]
        assert len(lines) + len(documents) == 1, (out.getvalue(), err.getvalue())
        assert not documents or "--json" in extra
