"""``zoo bench merge``: combine the outputs of the shards of one grid into one run (and one report).

Each ``zoo bench GRID --shard I/N --out DIR`` writes ``results.json`` and ``run.json`` into its DIR.
Merging checks that every directory ran the same grid, that the shards are ``1..N`` of the same ``N``
with none missing or repeated, and that no row appears twice; the rows come back in grid order.

Example:
    >>> run = merge_runs([load_run("out/shard-1"), load_run("out/shard-2")])
    >>> write_outputs(run, "out/merged")
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.bench.grid import BenchSpec
from zoo.bench.runner import BenchRun
from zoo.errors import ZooError

__all__ = ["load_run", "merge_runs"]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZooError(f"{path.parent}: no {path.name}; is it the --out directory of a 'zoo bench' run?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ZooError(f"{path}: cannot read it ({error})") from error


def load_run(directory: str | Path) -> BenchRun:
    """A ``BenchRun`` read back from the ``--out`` directory of ``zoo bench`` (its rows and ``run.json``)."""
    directory = Path(directory)
    record = _read_json(directory / "run.json")
    results = _read_json(directory / "results.json")
    if not isinstance(record, dict) or "spec" not in record or not isinstance(results, list):
        raise ZooError(f"{directory}: run.json / results.json are not the outputs of 'zoo bench'")
    shard = record.get("shard")
    return BenchRun(
        spec=BenchSpec.from_dict(record["spec"], source=record.get("source", str(directory))),
        results=results,
        machine=record["machine"],
        matmul_peak_flops=record.get("matmul_peak_flops", {}),
        meta=bool(record.get("meta")),
        seconds=float(record.get("seconds", 0.0)),
        component_builds=record.get("component_builds", {}),
        shard=(int(shard[0]), int(shard[1])) if shard else None,
        parts=record.get("parts") or [],
        loss_curves=record.get("loss_curves") or {},
        quality_summary=record.get("quality_summary") or {},
    )


def _parts(run: BenchRun) -> list[dict[str, Any]]:
    """The shard records of ``run`` (itself, unless it was merged already)."""
    if run.parts:
        return run.parts
    record = run.record()
    drop = ("spec", "parts", "component_builds", "loss_curves", "quality_summary")
    return [{key: value for key, value in record.items() if key not in drop}]


def merge_runs(runs: Sequence[BenchRun], *, names: Sequence[str] = ()) -> BenchRun:
    """One run holding every row of ``runs``, the shards of one grid.

    Args:
        runs: the shards' runs (:func:`load_run`), in any order.
        names: what to call each run in error messages (its directory); defaults to its position.

    Raises:
        ZooError: the runs come from different grids, a shard is missing or repeated, or a row appears twice.
    """
    if not runs:
        raise ZooError("zoo bench merge: give the --out directories of the shards to merge")
    names = list(names) or [f"run {i + 1}" for i in range(len(runs))]
    first = runs[0]
    for name, run in zip(names[1:], runs[1:]):
        if run.spec.to_dict() != first.spec.to_dict() or run.meta != first.meta:
            raise ZooError(
                f"{name} ran a different grid than {names[0]} ({run.spec.source} vs {first.spec.source}); "
                "merge only the shards of one grid"
            )
    parts = [part for run in runs for part in _parts(run)]
    _check_shards(parts, names)
    results = [row for run in runs for row in run.results]
    repeated = [key for key, count in Counter(row["id"] for row in results).items() if count > 1]
    if repeated:
        raise ZooError(f"zoo bench merge: row {repeated[0]!r} appears in more than one directory")
    # each run lists its measured rows in grid order, then its skipped ones: so does the merged run
    results.sort(key=lambda row: (row["status"] == "skipped", _row_shard(row)))
    builds: Counter = Counter()
    for run in runs:
        builds.update(run.component_builds)
    peaks: dict[str, float] = {}
    for run in runs:  # one number per dtype for the header; each row keeps its own machine's peak
        for dtype, value in run.matmul_peak_flops.items():
            peaks[dtype] = max(peaks.get(dtype, 0.0), value)
    return BenchRun(
        spec=first.spec,
        results=results,
        machine=first.machine,
        matmul_peak_flops=peaks,
        meta=first.meta,
        seconds=max(part["seconds"] for part in parts),
        component_builds=dict(builds),
        parts=sorted(parts, key=_shard_key),
        loss_curves={label: curve for run in runs for label, curve in run.loss_curves.items()},
        quality_summary=_merged_summary(runs),
    )


def _merged_summary(runs: Sequence[BenchRun]) -> dict[str, Any]:
    """The shards' quality summaries: steps added up, each shard's own (halving rounds run per shard)."""
    summaries = [run.quality_summary for run in runs if run.quality_summary]
    if not summaries:
        return {}
    if len(summaries) == 1:
        return summaries[0]
    merged: dict[str, Any] = {"schedule": summaries[0].get("schedule"), "shards": summaries,
                              "steps_total": sum(s.get("steps_total", 0) for s in summaries)}  # fmt: skip
    if all("steps_full_grid" in s for s in summaries):
        merged["steps_full_grid"] = sum(s["steps_full_grid"] for s in summaries)
        merged["steps_fraction"] = round(merged["steps_total"] / max(merged["steps_full_grid"], 1), 4)
    return merged


def _shard_key(part: dict[str, Any]) -> int:
    return part["shard"][0] if part.get("shard") else 0


def _row_shard(row: dict[str, Any]) -> int:
    return int(str(row.get("shard", "1/1")).split("/")[0])


def _check_shards(parts: list[dict[str, Any]], names: Sequence[str]) -> None:
    if any(not part.get("shard") for part in parts):
        if len(parts) > 1:
            raise ZooError(
                "zoo bench merge: an unsharded run holds every row already; merge only runs made with --shard I/N"
            )
        return
    shards = [(int(part["shard"][0]), int(part["shard"][1])) for part in parts]
    counts = {count for _, count in shards}
    if len(counts) > 1:
        raise ZooError(f"zoo bench merge: the shards split the grid differently ({sorted(counts)} parts)")
    (count,) = counts
    seen = Counter(index for index, _ in shards)
    repeated = sorted(i for i, n in seen.items() if n > 1)
    if repeated:
        raise ZooError(f"zoo bench merge: shard {repeated[0]}/{count} is given twice")
    missing = sorted(set(range(1, count + 1)) - set(seen))
    if missing:
        listed = ", ".join(f"{i}/{count}" for i in missing)
        raise ZooError(f"zoo bench merge: shard {listed} missing (got {len(seen)} of {count}: {', '.join(names)})")
