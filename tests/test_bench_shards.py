"""``zoo bench GRID --shard I/N`` and ``zoo bench merge``: shards cover the grid once; merge restores the run."""

from __future__ import annotations

import json
import shutil

import pytest

from zoo.bench import parse_shard, shard_of
from zoo.cli.app import main
from zoo.errors import ConfigError

GRID = """\
grid:
  vision: [tiny-clip]
  projector: [mlp2x-gelu, linear, identity]   # identity: skipped (32 -> 64 wide)
  lm: [tiny-qwen2]
min_run_time: 0.005
rounds: 2
threads: 1
max_new_tokens: 2
prompt_len: 4
reference: false
"""
# what a row says about its combination (timings, memory and build times differ from run to run)
STABLE = ("id", "status", "vision", "projector", "lm", "image_size", "dtype", "batch_size", "reason", "image_tokens",
          "params_total", "params_projector", "trainable_total", "flops_per_sample", "seq_len")  # fmt: skip


def _rows(directory):
    rows = json.loads((directory / "results.json").read_text())
    return [{key: row.get(key) for key in STABLE} for row in rows]


def test_shards_partition_any_list_deterministically():
    items = list(range(7))
    parts = [shard_of(items, (i, 3)) for i in (1, 2, 3)]
    assert parts == [[0, 1, 2], [3, 4], [5, 6]] and shard_of(items, None) == items
    assert [shard_of([1], (i, 2)) for i in (1, 2)] == [[1], []]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(ConfigError, match=rf"--shard = '{bad}': expected I/N"):
            parse_shard(bad)


def test_two_shards_merged_equal_the_unsharded_run(tmp_path, write_yaml, capsys):
    grid = str(write_yaml(GRID, "bench.yaml"))
    common = ["--no-progress", "--json"]
    assert main(["bench", grid, "--out", str(tmp_path / "all"), *common]) == 0
    for index in (1, 2):
        assert main(["bench", grid, "--shard", f"{index}/2", "--out", str(tmp_path / f"s{index}"), *common]) == 0
    capsys.readouterr()
    shard_rows = [_rows(tmp_path / f"s{i}") for i in (1, 2)]
    assert [len(rows) for rows in shard_rows] == [2, 1]  # contiguous slices: [mlp2x-gelu, linear], [identity]
    shard_one = json.loads((tmp_path / "s1" / "run.json").read_text())
    assert shard_one["shard"] == [1, 2] and shard_one["component_builds"] == {"vision": 1, "projector": 2, "lm": 1}

    assert main(["bench", "merge", str(tmp_path / "s2"), str(tmp_path / "s1"), "--out", str(tmp_path / "m")]) == 0
    merged, unsharded = _rows(tmp_path / "m"), _rows(tmp_path / "all")
    assert merged == unsharded  # the same rows, in the same (grid) order
    assert [r["status"] for r in merged] == ["ok", "ok", "skipped"]
    report = (tmp_path / "m" / "report.md").read_text()
    assert "Merged from 2 shards" in report and "## Shards" in report and "| 2/2 |" in report
    assert (tmp_path / "m" / "latency.png").stat().st_size > 0
    capsys.readouterr()


def test_merge_refuses_missing_repeated_or_foreign_shards(tmp_path, write_yaml, capsys):
    grid = str(write_yaml(GRID, "bench.yaml"))
    other = str(write_yaml(GRID.replace("prompt_len: 4", "prompt_len: 5"), "other.yaml"))
    for name, path, shard in (("s1", grid, "1/2"), ("s2", grid, "2/2"), ("x2", other, "2/2")):
        assert main(["bench", path, "--meta", "--shard", shard, "--out", str(tmp_path / name), "--no-progress"]) == 0
    shutil.copytree(tmp_path / "s1", tmp_path / "s1-again")
    cases = {
        ("s1",): "shard 2/2 missing (got 1 of 2",
        ("s1", "s1-again", "s2"): "shard 1/2 is given twice",
        ("s1", "x2"): "ran a different grid than",
        ("nowhere",): "no run.json; is it the --out directory of a 'zoo bench' run?",
        (): "give the --out directories of the shards",
    }
    capsys.readouterr()
    for directories, message in cases.items():
        paths = [str(tmp_path / d) for d in directories]
        assert main(["bench", "merge", *paths, "--out", str(tmp_path / "m")]) == 2
        assert message in capsys.readouterr().err
