"""Progress lines (zoo.core.progress) and ``zoo bench`` progress in a redirected stderr."""

from __future__ import annotations

import io
import itertools
import re

import pytest

from zoo.cli.app import main
from zoo.core.progress import LineProgress, eta_seconds, format_duration, format_progress


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "?"),
        (float("nan"), "?"),
        (-1, "?"),
        (0, "0s"),
        (59.4, "59s"),
        (200, "3m20s"),
        (3725, "1h02m"),
        (2 * 86400 + 3 * 3600, "2d03h"),
    ],
)
def test_durations_read_like_a_clock(seconds, text):
    assert format_duration(seconds) == text


def test_eta_is_the_pace_so_far_times_what_is_left():
    assert eta_seconds(40, 300, 40.0) == 260.0
    assert eta_seconds(300, 300, 99.0) == 0.0
    assert eta_seconds(0, 300, 5.0) is None  # no pace yet
    line = format_progress(40, 300, rate=12.34, fields=["loss 1.234"], eta=200)
    assert line == "step 40/300 (13%) · 12.3 samples/s · loss 1.234 · eta 3m20s"
    assert format_progress(3, None, label="batch", rate=None, eta=None) == "batch 3 · eta ?"


def test_line_progress_prints_one_line_per_update_with_count_and_eta(monkeypatch):
    from types import SimpleNamespace

    import zoo.core.progress as progress

    clock = itertools.count(0.0, 10.0)
    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=lambda: next(clock)))  # this module's clock
    out = io.StringIO()
    bar = LineProgress(["a", "b", "c"], desc="zoo bench", unit="combo", file=out)
    for item in bar:
        bar.set_postfix_str(item)
    assert out.getvalue().splitlines() == [
        "zoo bench 1/3 (33%) · 0.1 combos/s · a · eta 20s",
        "zoo bench 2/3 (66%) · 0.1 combos/s · b · eta 10s",
        "zoo bench 3/3 (100%) · 0.1 combos/s · c · eta 0s",
    ]
    silent = io.StringIO()
    list(LineProgress([1, 2], file=silent, disable=True))
    assert silent.getvalue() == ""


def test_bench_progress_in_a_redirected_stderr_is_one_line_per_combination(tmp_path, capsys, write_yaml):
    """capsys's stderr is not a terminal: no tqdm bar, a line per finished combination with i/N and ETA."""
    path = write_yaml(
        "grid:\n  vision: [tiny-clip, tiny-siglip]\n  projector: [linear]\n  lm: [tiny-qwen2]\n", "b.yaml"
    )
    assert main(["bench", str(path), "--meta", "--json", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    pattern = r"zoo bench --meta (\d)/2 \((\d+)%\) · [\d.]+ combos/s · (\S+) · eta \d+s"
    found = [m.groups() for m in map(lambda line: re.fullmatch(pattern, line), err.splitlines()) if m]
    assert found == [("1", "50", "tiny-clip+linear+tiny-qwen2/float32"),
                     ("2", "100", "tiny-siglip+linear+tiny-qwen2/float32")], err  # fmt: skip
    assert "\r" not in err
    assert main(["bench", str(path), "--meta", "--no-progress", "--out", str(tmp_path / "o")]) == 0
    assert "zoo bench --meta" not in capsys.readouterr().err
