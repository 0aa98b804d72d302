"""``zoo bench`` timings: torch.utils.benchmark blocks, spreads, noisy rows, direct decode steps, busy machines."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch.utils.benchmark import Measurement
from torch.utils.benchmark.utils.common import TaskSpec

from zoo.bench import parse_bench, run_bench
from zoo.bench.calls import decode_step, make_inputs
from zoo.bench.report import memory_unit
from zoo.bench.timing import Timing, time_interleaved

CALLS = ("vision_encode", "forward", "prefill", "decode_per_token", "generate")


def _measurement(seconds: list[float], per_block: int = 1) -> Measurement:
    task = TaskSpec(stmt="pass", setup="pass")
    return Measurement(number_per_run=per_block, raw_times=[s * per_block for s in seconds], task_spec=task)


def test_timing_is_the_median_and_quartiles_of_per_call_block_times():
    timing = Timing.from_measurement(_measurement([0.001, 0.002, 0.003, 0.004, 0.100], per_block=10))
    assert timing.median_ms == pytest.approx(3.0) and timing.iqr_ms == pytest.approx(2.0)
    assert timing.blocks == 5 and timing.calls_per_block == 10
    assert timing.spread == pytest.approx(2.0 / 3.0) and timing.noisy(0.5) and not timing.noisy(0.7)
    assert Timing.from_measurement(_measurement([0.001, 0.001, 0.001])).noisy(0.5)  # 3 blocks cannot show a spread
    row = timing.to_dict("forward")
    assert (
        row["forward_ms_median"] == 3.0
        and row["forward_spread"] == pytest.approx(0.6667)
        and row["forward_blocks"] == 5
    )


def test_sides_alternate_round_by_round_and_every_call_is_timed_on_its_budget():
    order = []

    def call(name):
        return lambda: order.append(name)

    sides = {"zoo": {"a": call("zoo.a"), "b": call("zoo.b")}, "ref": {"a": call("ref.a")}}
    timings = time_interleaved(sides, min_run_time=0.002, rounds=4)
    assert set(timings["zoo"]) == {"a", "b"} and set(timings["ref"]) == {"a"}
    assert all(t.median_ms > 0 and t.blocks >= 4 for side in timings.values() for t in side.values())
    runs = [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]  # each block run, once
    one_round = {0: ["zoo.a", "ref.a", "zoo.b"], 1: ["ref.a", "zoo.a", "zoo.b"]}  # ABBA: the first side alternates
    assert runs == [name for r in range(4) for name in one_round[r % 2]]


def test_timer_measures_with_the_threads_torch_uses():
    threads = torch.get_num_threads()
    seen = []
    time_interleaved({"zoo": {"a": lambda: seen.append(torch.get_num_threads())}}, min_run_time=0.001, rounds=1)
    assert set(seen) == {threads}  # torch.utils.benchmark.Timer would default to one thread


def test_decode_step_is_one_cached_step_measured_directly(tiny_model):
    inputs = make_inputs(tiny_model, batch_size=2, prompt_len=4)
    with torch.inference_mode():
        step = decode_step(tiny_model, inputs)
        tokens = [step() for _ in range(3)]  # the cache is rolled back: every step sees the same context
        generated = tiny_model.generate(
            inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"], max_new_tokens=2,
            min_new_tokens=2, do_sample=False,
        )  # fmt: skip
    assert all(torch.equal(t, tokens[0]) for t in tokens)
    assert torch.equal(tokens[0], generated[:, -1])  # the second generated token, from the cached step


def test_memory_unit_fits_the_largest_value():
    assert memory_unit(3 * 2**30) == ("GiB", 2**30)
    assert memory_unit(900 * 2**20) == ("MiB", 2**20)
    assert memory_unit(5 * 2**10) == ("KiB", 2**10)
    assert memory_unit(12) == ("B", 1) and memory_unit(0) == ("B", 1)


def _agree(a: dict, b: dict, call: str) -> bool:
    """Two rows' timings of ``call`` agree when their medians differ by at most the sum of their IQRs."""
    gap = abs(a[f"{call}_ms_median"] - b[f"{call}_ms_median"])
    return gap <= a[f"{call}_ms_iqr"] + b[f"{call}_ms_iqr"]


def test_identical_combinations_beside_a_cpu_hog_agree_within_their_spread_or_are_flagged_noisy():
    twin = {"name": "tiny-clip", "label": "clip-twin"}  # the same composition under another label
    spec = parse_bench({
        "grid": {"vision": ["tiny-clip", twin], "projector": ["mlp2x-gelu"], "lm": ["tiny-qwen2"]},
        "min_run_time": 0.1, "rounds": 4, "threads": 1, "max_new_tokens": 3, "prompt_len": 4, "reference": False,
    })  # fmt: skip
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        run = run_bench(spec, device="cpu", progress=False)
    finally:
        hog.kill()
        hog.wait()
    first, second = run.results
    assert first["status"] == second["status"] == "ok" and first["components_reused"] == ""
    assert second["components_reused"] == "vision,projector,lm"
    for row in (first, second):
        for call in CALLS:
            assert 0 < row[f"{call}_ms_q1"] <= row[f"{call}_ms_median"] <= row[f"{call}_ms_q3"]  # never negative
            noisy = (
                row[f"{call}_spread"] > spec.noise_threshold
                or row[f"{call}_round_spread"] > spec.noise_threshold
                or row[f"{call}_blocks"] < 4
            )
            assert noisy == (call in row["noisy_timings"].split(","))
        assert row["noisy"] == bool(row["noisy_timings"])
    for call in CALLS:
        flagged = {call} & (set(first["noisy_timings"].split(",")) | set(second["noisy_timings"].split(",")))
        assert _agree(first, second, call) or flagged, (call, first, second)
