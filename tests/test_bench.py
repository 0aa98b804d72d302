"""``zoo bench``: grid parsing and validation, one real build per component, outputs of a tiny run.

Timing (torch.utils.benchmark, spreads, noisy rows, decode steps) is in test_bench_timing.py; shards
and merging in test_bench_shards.py.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re

import pytest
import torch

from zoo.bench import ComponentCache, build_models, expand, load_bench, parse_bench, plan_grid, run_bench
from zoo.bench.report import format_table, write_outputs
from zoo.cli.app import main
from zoo.core.registry import get_registry
from zoo.errors import CheckpointError, ConfigError, UnknownNameError
from zoo.sdk.weights import building_on_meta


def _grid(**grid):
    return {"grid": grid, "min_run_time": 0.01, "rounds": 2, "max_new_tokens": 2, "prompt_len": 4}


def test_grid_expands_and_lists_contract_failures_with_their_reason():
    spec = parse_bench(
        _grid(
            vision=["tiny-clip", {"name": "tiny-clip", "select": "all"}],  # 16 patches; 1 + 16 = 17 tokens
            projector=["mlp2x-gelu", "pixel-shuffle", "identity"],
            lm=["tiny-qwen2"],
            batch_size=[1, 2],
        )
    )
    combos = expand(spec)
    assert len(combos) == 6
    assert {c.label for c in combos} >= {"tiny-clip+mlp2x-gelu+tiny-qwen2/float32",
                                         "tiny-clip[select=all]+pixel-shuffle+tiny-qwen2/float32"}  # fmt: skip
    cases, skipped = plan_grid(spec)
    reasons = {s.combination.label: s.reason for s in skipped}
    assert sorted(reasons) == [
        "tiny-clip+identity+tiny-qwen2/float32",
        "tiny-clip[select=all]+identity+tiny-qwen2/float32",
        "tiny-clip[select=all]+pixel-shuffle+tiny-qwen2/float32",
    ]
    assert "17 is not a square" in reasons["tiny-clip[select=all]+pixel-shuffle+tiny-qwen2/float32"]
    identity = reasons["tiny-clip+identity+tiny-qwen2/float32"]
    assert "in_dim=32" in identity and "out_dim=64" in identity
    assert [c.plan.contract.image_tokens for c in cases] == [16, 4, 17]


def test_entry_label_names_the_combination_and_is_not_a_component_option():
    entry = {"name": "tiny-clip", "label": "clip-all", "select": "all"}
    spec = parse_bench(_grid(vision=[entry], projector=["linear"], lm=["tiny-qwen2"]))
    (combo,) = expand(spec)
    assert combo.label == "clip-all+linear+tiny-qwen2/float32"
    assert combo.model_dict()["model"]["vision"] == {"name": "tiny-clip", "select": "all"}
    (case,), _ = plan_grid(spec)
    assert case.plan.contract.image_tokens == 17


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_grid(visoin=["tiny-clip"], projector=["linear"], lm=["tiny-qwen2"]), "unknown key 'grid.visoin'"),
        ({**_grid(vision=["tiny-clip"], projector=["linear"], lm=["tiny-qwen2"]), "round": 3}, "'rounds'"),
        ({**_grid(vision=["tiny-clip"], projector=["linear"], lm=["tiny-qwen2"]), "repeats": 3},
         "repeats = 3: no longer read; timings are set by min_run_time and rounds"),
        ({**_grid(vision=["tiny-clip"], projector=["linear"], lm=["tiny-qwen2"]), "min_run_time": 0},
         "min_run_time = 0 is not valid; expected a finite number > 0"),
        ({**_grid(vision=["tiny-clip"], projector=["linear"], lm=["tiny-qwen2"]), "noise_threshold": "low"},
         "noise_threshold = 'low'"),
        (_grid(vision=[{"name": "tiny-clip", "selct": "all"}], projector=["linear"], lm=["tiny-qwen2"]),
         "grid.vision[0].selct"),
        (_grid(vision=["tiny-clip"], projector=["linear"], lm=["tiny-qwen2"], batch_size=[0]),
         "grid.batch_size[0] = 0"),
        (_grid(vision=["tiny-clip"], projector=["linear"], lm=["tiny-qwen2"], batch_size=[10**40]),
         r"grid.batch_size[0] = <integer of 133 bits> is out of range; expected an integer in [1, 4096]"),
        ({**_grid(vision=["tiny-clip"], projector=["linear"], lm=["tiny-qwen2"]), "rounds": 10**9},
         "rounds = 1000000000 is out of range; expected an integer in [1, 1000]"),
        (_grid(vision=["tiny-clip"], projector=["linear"], lm=["tiny-qwen2"], dtype=["fp33"]), "'float32'"),
        (_grid(vision=["tiny-clip"], projector=["linear"], lm=[]), "grid.lm = []"),
        (_grid(vision=["tiny-clip"], projector=["linear"]), "missing required key 'grid.lm'"),
    ],
)  # fmt: skip
def test_bad_grid_keys_and_values_name_the_key_and_the_choices(data, expected):
    with pytest.raises(ConfigError) as info:
        parse_bench(data, source="bench.yaml")
    assert expected in str(info.value) and str(info.value).startswith("bench.yaml: ")


def test_unknown_component_name_fails_before_anything_runs():
    data = _grid(vision=["tiny-clip"], projector=["mlp2x-gelu", "mlp2_gelu"], lm=["tiny-qwen2"])
    with pytest.raises(UnknownNameError) as info:
        parse_bench(data, source="bench.yaml")
    message = str(info.value)
    assert "grid.projector[1].name = 'mlp2_gelu'" in message and "did you mean 'mlp2x-gelu'" in message


def test_default_grid_of_the_registry_is_valid():
    spec = load_bench()
    assert spec.source == "registry.yaml:benches.default"
    cases, skipped = plan_grid(spec)
    assert len(cases) + len(skipped) == len(spec.vision) * len(spec.projector) * len(spec.lm)
    # only any-res with the learned-query resampler is refused, with its reason: its tokens have no place to stitch
    assert {(s.combination.label.split("+")[0], s.combination.label.split("+")[1]) for s in skipped} == {
        ("tiny-clip-anyres", "resampler")
    }
    assert len(skipped) == len(spec.lm) and all("learned queries" in s.reason for s in skipped)
    with pytest.raises(ConfigError, match="did you mean 'default'"):
        load_bench("defualt")


@pytest.fixture
def counting_specs():
    """Copies of real tiny specs whose factories count the real (non-meta) builds."""
    registry = get_registry()
    calls = {"vision": 0, "projector": 0, "lm": 0}
    # Towers of one width and LMs of one width: each projector is built for one (in_dim, out_dim) pair.
    picks = {
        "vision": ["tiny-clip", "tiny-siglip", "tiny-dinov2"],
        "projector": ["linear", "mlp2x-gelu", "resampler"],
        "lm": ["tiny-qwen2", "tiny-qwen3", "tiny-llama"],
    }
    added = []

    def counted(kind, factory):
        def build(config):
            if not building_on_meta():
                calls[kind] += 1
            return factory(config)

        return build

    for kind, names in picks.items():
        for name in names:
            spec = registry.get(kind, name)
            copy = dataclasses.replace(spec, name=f"counted-{name}", factory=counted(kind, spec.factory), plugin="")
            registry.add(copy, plugin="test_bench")
            added.append((kind, copy.name))
    try:
        yield {kind: [f"counted-{n}" for n in names] for kind, names in picks.items()}, calls
    finally:
        for kind, name in added:
            registry.remove(kind, name)


def test_a_3x3x3_grid_builds_9_components_not_27(counting_specs):
    names, calls = counting_specs
    spec = parse_bench(_grid(**names))
    cases, skipped = plan_grid(spec)
    assert len(cases) == 27 and not skipped
    cache = ComponentCache("cpu")
    seen = {"vision": set(), "projector": set(), "lm": set()}
    built = 0
    for case, model, info in build_models(cases, cache):
        assert model is not None, info
        assert model.tokens_per_image == case.plan.contract.image_tokens
        for kind in seen:
            seen[kind].add(id(getattr(model, kind)))
        built += 1
    assert built == 27
    assert calls == {"vision": 3, "projector": 3, "lm": 3}
    assert dict(cache.builds) == calls
    assert {kind: len(ids) for kind, ids in seen.items()} == {"vision": 3, "projector": 3, "lm": 3}
    assert not cache.modules  # each component was released after its last combination


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (CheckpointError("model.lm.checkpoint = '/gone': no such directory"), "'/gone': no such directory"),
        (RuntimeError("CUDA out of memory"), "RuntimeError: CUDA out of memory"),  # not a ZooError
    ],
)
def test_a_combination_that_fails_to_build_is_reported_and_the_grid_goes_on(error, reason):
    registry = get_registry()
    real = registry.get("lm", "tiny-qwen2")

    def broken(config):
        if not building_on_meta():
            raise error
        return real.factory(config)

    registry.add(dataclasses.replace(real, name="broken-lm", factory=broken, plugin=""), plugin="test_bench")
    try:
        spec = parse_bench({**_grid(vision=["tiny-clip"], projector=["linear"], lm=["broken-lm", "tiny-qwen2"]),
                            "reference": False})  # fmt: skip
        run = run_bench(spec, device="cpu", progress=False)
    finally:
        registry.remove("lm", "broken-lm")
    failed, ok = run.results
    assert failed["status"] == "failed" and reason in failed["reason"]
    assert ok["status"] == "ok" and ok["lm"] == "tiny-qwen2" and ok["reference_skipped"] == "reference disabled"


def test_tiny_bench_run_writes_every_output(tmp_path):
    # a threshold no real timing meets: every row is flagged noisy, everywhere the results go
    spec = parse_bench({**_grid(vision=["tiny-clip"], projector=["mlp2x-gelu", "pixel-shuffle", "identity"],
                                lm=["tiny-qwen2"], batch_size=[1, 2]), "noise_threshold": 1e-9})  # fmt: skip
    run = run_bench(spec, device="cpu", progress=False)
    paths = write_outputs(run, tmp_path / "out")

    results = json.loads(paths["json"].read_text())
    assert [r["status"] for r in results] == ["ok", "ok", "ok", "ok", "skipped"]
    by_id = {r["id"]: r for r in results}
    llava = by_id["tiny-clip+mlp2x-gelu+tiny-qwen2/float32/bs2"]
    for key in ("forward_latency_ratio", "generate_throughput_ratio", "prefill_latency_ratio", "decode_latency_ratio"):
        assert llava[key] > 0 and llava[f"{key}_spread"] >= 0
    assert llava["reference"] == "transformers.LlavaForConditionalGeneration"
    assert llava["image_tokens"] == 16 and llava["batch_size"] == 2
    assert llava["params_total"] == llava["params_vision"] + llava["params_projector"] + llava["params_lm"]
    assert llava["trainable_total"] == llava["params_projector"]  # default policy: only the projector trains
    assert llava["flops_per_sample"] == llava["flops_vision"] + llava["flops_projector"] + llava["flops_lm"] > 0
    for call in ("vision_encode", "forward", "prefill", "decode_per_token", "generate"):
        assert llava[f"{call}_ms_median"] > 0 and llava[f"{call}_ms_iqr"] >= 0 and llava[f"{call}_blocks"] >= 2
        assert llava[f"{call}_spread"] == pytest.approx(llava[f"{call}_ms_iqr"] / llava[f"{call}_ms_median"], abs=1e-3)
    assert llava["noisy"] is True and "forward" in llava["noisy_timings"].split(",")
    assert llava["spread_max"] >= llava["forward_spread"] and llava["loadavg_1m"] >= 0
    assert llava["tokens_per_s"] == pytest.approx(2 * 2 / (llava["generate_ms_median"] / 1e3), rel=1e-3)
    assert llava["peak_mem_mb"] >= 0 and llava["mem_method"] == "rss_delta"
    assert 0 < llava["peak_fraction"] and llava["matmul_peak_flops_per_s"] > 0
    shuffle = by_id["tiny-clip+pixel-shuffle+tiny-qwen2/float32/bs1"]
    assert shuffle["image_tokens"] == 4 and shuffle["reference"] is None and shuffle["reference_skipped"]
    assert not any(key.endswith("_ratio") for key in shuffle)
    assert "identity" in results[-1]["reason"] and results[-1]["batch_size"] is None
    assert run.component_builds == {"vision": 1, "projector": 2, "lm": 1}

    with paths["csv"].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 and rows[0]["id"] == results[0]["id"]
    assert {"forward_latency_ratio", "generate_throughput_ratio", "reason", "peak_mem_mb"} <= set(rows[0])
    assert [row["noisy"] for row in rows] == ["True"] * 4 + [""]

    record = json.loads(paths["run"].read_text())
    assert record["spec"]["noise_threshold"] == 1e-9 and record["shard"] is None
    for when in ("start", "end"):
        assert len(record["machine"][when]["loadavg"]) == 3 and record["machine"][when]["time"]
    assert record["machine"]["cpu"] and record["machine"]["gpu"] is None
    table = format_table(run)
    assert table.count("NOISY") == 4 + 1 and "load average (1/5/15 min) at start" in table

    report = paths["report"].read_text()
    assert "## Results" in report and "| tiny-clip+mlp2x-gelu+tiny-qwen2/float32/bs1 |" in report
    assert "**skipped** `tiny-clip+identity+tiny-qwen2/float32`" in report and "![latency](latency.png)" in report
    assert "## Noisy rows" in report and "- `tiny-clip+mlp2x-gelu+tiny-qwen2/float32/bs1`: " in report
    for name in ("latency", "memory", "reference"):
        data = paths[name].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_meta_bench_reports_full_size_sizes_and_flops_without_allocating():
    spec = parse_bench(_grid(vision=["siglip-base-16-224"], projector=["mlp2x-gelu"], lm=["qwen2-0.5b"]))
    before = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    (row,) = run_bench(spec, meta=True, progress=False).results
    assert row["status"] == "ok" and row["image_tokens"] == 196 and row["seq_len"] == 200
    # Qwen2-0.5B: 494M parameters (model card, huggingface.co/Qwen/Qwen2-0.5B), tied embeddings
    assert 490e6 < row["params_lm"] < 500e6
    # a decoder forward costs about 2 FLOPs per non-embedding parameter and token
    non_embedding = row["params_lm"] - 151_936 * 896
    assert 2 * non_embedding * 200 < row["flops_lm"] < 4 * non_embedding * 200
    assert row["trainable_total"] == row["params_projector"]
    assert (torch.cuda.memory_allocated() if torch.cuda.is_available() else 0) == before


def test_cli_bench_json_and_errors(tmp_path, capsys, write_yaml):
    path = write_yaml("grid:\n  vision: [tiny-clip]\n  projector: [linear]\n  lm: [tiny-qwen2]\n", "bench.yaml")
    assert main(["bench", str(path), "--meta", "--json", "--no-progress", "--out", str(tmp_path / "o")]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == "tiny-clip+linear+tiny-qwen2/float32" and row["image_tokens"] == 16
    assert (tmp_path / "o" / "params_flops.png").stat().st_size > 0
    path.write_text("grid:\n  vision: [tiny-clip]\n  projector: [linear]\n  lm: [tiny-qwen2]\nroudns: 1\n")
    assert main(["bench", str(path), "--no-progress", "--out", str(tmp_path / "o")]) == 2
    assert "unknown key 'roudns'; did you mean 'rounds'?" in capsys.readouterr().err
    assert main(["bench", str(path), str(path), "--out", str(tmp_path / "o")]) == 2
    assert "zoo bench takes one grid, got 2" in capsys.readouterr().err


def _timed(prefix: str, median: float) -> dict[str, float]:
    return {f"{prefix}_ms_median": median, f"{prefix}_ms_q1": 0.9 * median, f"{prefix}_ms_q3": 1.1 * median,
            f"{prefix}_ms_iqr": 0.2 * median, f"{prefix}_spread": 0.2}  # fmt: skip


def test_report_columns_tolerate_rows_without_timings(tmp_path):
    from zoo.bench.runner import BenchRun

    base = {"status": "ok", "vision": "tiny-clip", "projector": "linear", "lm": "tiny-qwen2", "params_total": 1000,
            "image_tokens": 16, "flops_per_sample": 1e6, "build_s": 0.1, "weights_mb": 1.0}  # fmt: skip
    calls = ("vision_encode", "forward", "prefill", "decode_per_token", "generate")
    full = {**base, "id": "full/bs1", "combination": "full", "tokens_per_s": 50.0, "peak_mem_mb": 3.0,
            "mem_method": "rss_delta", "peak_fraction": 0.01, "spread_max": 0.2, "noisy": False,
            **{k: v for c in calls for k, v in _timed(c, 2.0).items()}, "ref_tokens_per_s": 40.0,
            **{k: v for c in calls for k, v in _timed(f"ref_{c}", 2.5).items()}, "forward_latency_ratio": 0.8,
            "forward_latency_ratio_spread": 0.4, "generate_throughput_ratio": 1.25}  # fmt: skip
    reason = "decode_per_token: cannot time cached decode steps: the KV cache cannot be rolled back (x)"
    no_decode = {**full, "id": "no-decode/bs1", "combination": "no-decode", "timings_left_out": reason}
    for key in [k for k in no_decode if "decode_per_token" in k]:
        del no_decode[key]
    bare = {**base, "id": "bare/bs1", "combination": "bare", "noisy": True}  # e.g. a shard of another version
    skipped = {**base, "id": "skipped", "combination": "skipped", "status": "skipped", "reason": "does not fit"}
    spec = parse_bench(_grid(vision=["tiny-clip"], projector=["linear"], lm=["tiny-qwen2"]))
    machine = {"cpu": "cpu", "cpu_count": 2, "torch_threads": 1, "gpu": None, "torch": "t", "device": "cpu",
               "platform": "p", "python": "3", "transformers": "5"}  # fmt: skip
    run = BenchRun(spec, [full, no_decode, bare, skipped], machine)

    table = [re.split(r"\s{2,}", line.strip()) for line in format_table(run).splitlines()]  # columns: 2+ spaces
    decode = table[0].index("decode ms/tok")
    rows = {cells[0]: cells for cells in table[2:5]}
    assert rows["full/bs1"][decode] == "2.00" and rows["no-decode/bs1"][decode] == "-"
    assert rows["bare/bs1"] == ["bare/bs1", "1.00k", "16", "1.00M", "0.100", *["-"] * 10, "NOISY"]

    paths = write_outputs(run, tmp_path / "out")
    results = {r["id"]: r for r in json.loads(paths["json"].read_text())}
    assert results["no-decode/bs1"]["timings_left_out"] == reason  # the runner's reason, not repeated
    assert "timings_left_out" not in results["full/bs1"]
    assert results["bare/bs1"]["timings_left_out"] == "; ".join(
        f"{call}: not measured (no reason recorded)" for call in calls
    )
    report = paths["report"].read_text()
    assert "| no-decode/bs1 |" in report and "- `bare/bs1`: - (largest spread -%)" in report
    assert {p.name for p in paths.values()} >= {"latency.png", "memory.png", "reference.png"}
