"""Bench grid files: parse and validate a grid, expand it, and check every combination up front.

A bench file lists several choices per slot; zoo expands the product and checks each composition's
contract on the ``meta`` device before anything is built, so that a combination that cannot work is
listed with its reason instead of crashing the run midway::

    grid:
      vision: [tiny-clip, tiny-siglip]
      projector: [mlp2x-gelu, {name: resampler, num_queries: 16}]   # a name, or a name plus options
      lm: [tiny-qwen2, {name: tiny-qwen2, label: qwen2-wide, arch: {hidden_size: 128}}]
      image_size: [32]          # optional: overrides each tower's input size
      batch_size: [1, 4]
      dtype: [float32]
    min_run_time: 0.1           # seconds of timing per call and side (torch.utils.benchmark blocks)
    rounds: 4                   # interleaved rounds per timing (zoo / transformers order alternates ABBA)
    noise_threshold: 0.1        # a timing whose IQR / median exceeds this is flagged noisy
    threads: 1                  # optional: torch threads while measuring (default: one per core)
    max_new_tokens: 8
    prompt_len: 16              # text tokens besides the image positions
    data: {train: train.json, eval: eval.json}   # optional, with train: quality too (zoo.bench.quality)
    train: {max_steps: 200, batch_size: 16, lr: 2.0e-3, seed: 0}
    quality: {seeds: 3, schedule: halving, eta: 3, min_steps: 25}   # optional: seeds, intervals, halving
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.bench.quality_spec import QualitySpec, parse_quality
from zoo.core.config import DTYPES, ModelConfig, _check_keys, parse_model_config, read_yaml
from zoo.errors import ConfigError, ZooError, suggest
from zoo.sdk.limits import MAX_CONFIG_INT, MAX_IMAGE_SIDE, brief, check_int_range, check_positive_finite
from zoo.sdk.problems import Problems, Reported, attempt, report
from zoo.sdk.specs import SLOTS

__all__ = [
    "BENCH_KEYS",
    "GRID_KEYS",
    "BenchSpec",
    "Case",
    "Combination",
    "Skipped",
    "expand",
    "load_bench",
    "parse_bench",
    "parse_shard",
    "plan_grid",
    "registered_benches",
    "shard_of",
]

GRID_KEYS = ("vision", "projector", "lm", "image_size", "batch_size", "dtype")
_SCALARS = ("min_run_time", "rounds", "noise_threshold", "threads", "max_new_tokens", "prompt_len", "reference")
BENCH_KEYS = ("grid", *_SCALARS, "plugins", "description", "data", "train", "quality")
_REPLACED = {"repeats": "min_run_time and rounds", "warmup": "min_run_time (torch.utils.benchmark warms up itself)"}
POLICY_KEYS = ("train", "lr", "lora")  # a slot's training policy: only with a train: section


@dataclass(frozen=True)
class BenchSpec:
    """A validated bench file.

    Attributes:
        vision / projector / lm: slot entries, each ``{"name": ..., **options}``.
        image_sizes: tower input sizes to try (``None``: each tower's own).
        batch_sizes: batch sizes to measure each composition at.
        dtypes: model dtypes (canonical names).
        min_run_time: seconds of timing per call and side, split over ``rounds``.
        rounds: interleaved rounds per timing (each a ``Timer.blocked_autorange``).
        noise_threshold: IQR / median above which a timing (and its row) is flagged noisy.
        threads: torch intra-op threads while measuring (``None``: torch's default, one per core).
        max_new_tokens: tokens generated per sample (decode latency and throughput).
        prompt_len: text tokens per sample besides the image positions.
        plugins: extra plugin modules to load.
        reference: also time transformers' Llava on the same weights where the layout fits.
        quality: the ``data:`` / ``train:`` sections, validated (``None``: speed only); see ``zoo.bench.quality``.
        sections: those two sections as written (``to_dict`` gives them back).
        base_dir: where their relative paths resolve (the bench file's folder).
        source: where the spec was read from (for messages).
    """

    vision: tuple[dict[str, Any], ...]
    projector: tuple[dict[str, Any], ...]
    lm: tuple[dict[str, Any], ...]
    image_sizes: tuple[int | None, ...] = (None,)
    batch_sizes: tuple[int, ...] = (1,)
    dtypes: tuple[str, ...] = ("float32",)
    min_run_time: float = 0.1
    rounds: int = 4
    noise_threshold: float = 0.1
    threads: int | None = None
    max_new_tokens: int = 8
    prompt_len: int = 16
    plugins: tuple[str, ...] = ()
    reference: bool = True
    description: str = ""
    source: str = "<bench>"
    quality: QualitySpec | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    base_dir: str = "."

    def slot(self, kind: str) -> tuple[dict[str, Any], ...]:
        """The entries of ``vision``, ``projector`` or ``lm``."""
        return getattr(self, kind)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<bench>") -> BenchSpec:
        """Read back :meth:`to_dict` output without the registry (``zoo bench merge`` on any machine).

        The values were validated when the run that wrote them started; use :func:`parse_bench` for
        anything a person wrote.
        """
        grid = data["grid"]
        slots: dict[str, Any] = {
            kind: tuple({"name": e} if isinstance(e, str) else dict(e) for e in grid[kind]) for kind in SLOTS
        }
        scalars: dict[str, Any] = {key: data[key] for key in _SCALARS if key in data}
        return cls(
            **slots,
            image_sizes=tuple(grid.get("image_size", [None])),
            batch_sizes=tuple(grid.get("batch_size", [1])),
            dtypes=tuple(grid.get("dtype", ["float32"])),
            plugins=tuple(data.get("plugins", ())),
            description=str(data.get("description", "")),
            source=source,
            sections={key: data[key] for key in ("data", "train", "quality") if key in data},
            **scalars,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the report shows it; ``parse_bench`` reads it back)."""
        grid: dict[str, Any] = {kind: [_entry_out(e) for e in self.slot(kind)] for kind in SLOTS}
        if self.image_sizes != (None,):
            grid["image_size"] = list(self.image_sizes)
        grid["batch_size"] = list(self.batch_sizes)
        grid["dtype"] = list(self.dtypes)
        data: dict[str, Any] = {"grid": grid}
        for key in _SCALARS:
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.plugins:
            data["plugins"] = list(self.plugins)
        if self.description:
            data["description"] = self.description
        return {**data, **self.sections}


@dataclass(frozen=True)
class Combination:
    """One point of the grid before validation (batch sizes are measured on the same model)."""

    vision: dict[str, Any]
    projector: dict[str, Any]
    lm: dict[str, Any]
    image_size: int | None
    dtype: str

    @property
    def label(self) -> str:
        """``tower+projector+lm`` plus the image size and dtype when they were set."""
        text = "+".join(_entry_label(getattr(self, kind)) for kind in SLOTS)
        size = f"@{self.image_size}" if self.image_size is not None else ""
        return f"{text}{size}/{self.dtype}"

    def model_dict(self, plugins: Sequence[str] = (), *, policy: bool = False) -> dict[str, Any]:
        """The composition as a model YAML mapping (what ``zoo build`` would read).

        ``policy=False`` leaves out the slots' training policy (``train``, ``lr``, ``lora``): the speed
        measurements share components between combinations and run inference only.
        """
        model: dict[str, Any] = {"dtype": self.dtype}
        for kind in SLOTS:
            entry = getattr(self, kind)
            options = {k: v for k, v in _options(entry).items() if policy or k not in POLICY_KEYS}
            model[kind] = {"name": entry["name"], **options}
        if self.image_size is not None:
            model["vision"]["image_size"] = self.image_size
        return {"model": model, "plugins": list(plugins)}


@dataclass
class Case:
    """A combination whose contract checked out: its config and ``zoo.core.builder.BuildPlan``."""

    combination: Combination
    config: ModelConfig
    plan: Any


@dataclass
class Skipped:
    """A combination that cannot be built, with the reason (a contract or config error)."""

    combination: Combination
    reason: str
    error_type: str = "ContractError"
    extra: dict[str, Any] = field(default_factory=dict)


def load_bench(target: str | Path | Mapping[str, Any] | None = None) -> BenchSpec:
    """A ``BenchSpec`` from a YAML path, a bench name of ``registry.yaml`` (``benches:``) or a mapping.

    ``None`` gives ``benches.default``.

    Example:
        >>> load_bench().batch_sizes
        (1,)
    """
    if isinstance(target, Mapping):
        return parse_bench(target)
    if target is None:
        target = "default"
    path = Path(target)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        return parse_bench(read_yaml(path), source=str(path), base_dir=path.parent)
    benches = registered_benches()
    if str(target) in benches:
        return parse_bench(benches[str(target)], source=f"registry.yaml:benches.{target}")
    raise ConfigError(
        f"{str(target)!r} is neither a bench YAML file nor a bench of registry.yaml; {suggest(str(target), benches)}"
    )


def registered_benches() -> dict[str, Any]:
    """The ``benches:`` section of the shipped ``registry.yaml``."""
    from zoo.core.registry import registry_yaml_path

    path = registry_yaml_path()
    data = read_yaml(path) or {}
    benches = data.get("benches") if isinstance(data, Mapping) else None
    if benches is None:
        return {}
    if not isinstance(benches, Mapping):
        raise ConfigError(f"{path}: benches = {brief(benches)}: expected a mapping of bench names to grids")
    return dict(benches)


def parse_bench(
    data: Any, *, source: str = "<bench>", base_dir: str | Path = ".", problems: Problems | None = None
) -> BenchSpec:
    """Validate a bench mapping: keys, types and component names (unknown ones fail here, with choices).

    ``base_dir``: where relative ``data:`` paths resolve (``load_bench`` passes the file's folder).
    ``problems``: record every problem instead of raising the first (``zoo validate``; ``zoo.sdk.problems``).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping with a 'grid' key, got {type(data).__name__}")
    mark = len(problems) if problems is not None else 0
    for old, new in _REPLACED.items():
        if old in data:
            report(problems, ConfigError(f"{source}: {old} = {brief(data[old])}: no longer read; timings are set by "
                                         f"{new}", key=old))  # fmt: skip
    current = {key: value for key, value in data.items() if key not in _REPLACED}  # told above
    _check_keys(current, BENCH_KEYS, "", source, required=("grid",), problems=problems)
    grid = data.get("grid", {})
    if not isinstance(grid, Mapping):
        report(problems, ConfigError(f"{source}: grid = {brief(grid)}: expected a mapping with vision, projector "
                                     "and lm lists", key="grid"))  # fmt: skip
        grid = {}
    elif "grid" in data:
        _check_keys(grid, GRID_KEYS, "grid", source, required=SLOTS, problems=problems)
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        report(problems, ConfigError(f"{source}: plugins = {brief(plugins)}: expected a list of module names or .py "
                                     "paths", key="plugins"))  # fmt: skip
        plugins = []
    quality = attempt(problems, parse_quality, data, source=source, base_dir=Path(base_dir), problems=problems)
    slots: dict[str, Any] = {
        kind: tuple(
            attempt(
                problems,
                _slot_entries,
                grid[kind],
                kind,
                source,
                "data" in data or "train" in data,
                problems,
                default=(),
            )
        )
        for kind in SLOTS
        if kind in grid
    }
    attempt(problems, _check_names, slots, tuple(plugins), source, problems)
    image_sizes = grid.get("image_size")
    sizes: tuple[int | None, ...] = (
        (None,)
        if image_sizes is None
        else tuple(
            attempt(
                problems,
                _ints,
                image_sizes,
                "grid.image_size",
                source,
                minimum=1,
                maximum=MAX_IMAGE_SIDE,
                default=[None],
            )
        )
    )
    batch_sizes = tuple(
        attempt(
            problems,
            _ints,
            grid.get("batch_size", [1]),
            "grid.batch_size",
            source,
            minimum=1,
            maximum=4096,
            default=[1],
        )
    )
    dtypes = tuple(attempt(problems, _dtypes, grid.get("dtype", ["float32"]), source, default=["float32"]))
    description = data.get("description", "")
    if not isinstance(description, str):
        report(problems, ConfigError(f"{source}: description = {brief(description)} has the wrong type; expected "
                                     "a string", key="description"))  # fmt: skip
    reference = data.get("reference", True)
    if not isinstance(reference, bool):
        report(problems, ConfigError(f"{source}: reference = {brief(reference)} has the wrong type; expected "
                                     "true/false", key="reference"))  # fmt: skip
    scalars: dict[str, Any] = {
        "min_run_time": attempt(problems, _positive, data.get("min_run_time", 0.1), "min_run_time", source),
        "rounds": attempt(problems, _int, data.get("rounds", 4), "rounds", source, minimum=1, maximum=1000),
        "noise_threshold": attempt(problems, _positive, data.get("noise_threshold", 0.1), "noise_threshold", source),
        "threads": None
        if data.get("threads") is None
        else attempt(problems, _int, data["threads"], "threads", source, minimum=1, maximum=1024),
        "max_new_tokens": attempt(
            problems, _int, data.get("max_new_tokens", 8), "max_new_tokens", source, minimum=2, maximum=65536
        ),
        "prompt_len": attempt(
            problems, _int, data.get("prompt_len", 16), "prompt_len", source, minimum=1, maximum=1_000_000
        ),
    }
    if problems is not None and len(problems) > mark:
        raise Reported(f"{source}: the bench file has problems")  # recorded, each with its key
    return BenchSpec(
        **slots,
        image_sizes=sizes,
        batch_sizes=batch_sizes,
        dtypes=dtypes,
        **scalars,
        plugins=tuple(plugins),
        reference=reference,
        description=description,
        source=source,
        quality=quality,
        sections=quality.raw if quality else {},
        base_dir=str(base_dir),
    )


def _slot_entries(
    value: Any, kind: str, source: str, allow_policy: bool, problems: Problems | None = None
) -> list[dict[str, Any]]:
    key = f"grid.{kind}"
    if isinstance(value, str | Mapping):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{source}: {key} = {brief(value)}: expected a non-empty list of names or {{name: ...}} mappings", key=key
        )
    entries = []
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
            report(problems, ConfigError(f"{source}: {where} = {brief(item)}: expected a name or a mapping with a "
                                         "'name' key", key=where))  # fmt: skip
            continue
        if "label" in item and not isinstance(item["label"], str):
            report(problems, ConfigError(f"{source}: {where}.label = {brief(item['label'])}: expected a string (the "
                                         "name shown)", key=f"{where}.label"))  # fmt: skip
        for forbidden in () if allow_policy else POLICY_KEYS:
            if forbidden in item:
                report(problems, ConfigError(
                    f"{source}: {where}.{forbidden}: a training policy (train, lr, lora) means something only "
                    "in a grid that trains: add data: and train: sections, or drop it", key=f"{where}.{forbidden}"
                ))  # fmt: skip
        entries.append(dict(item))
    return entries


def _check_names(
    slots: Mapping[str, Sequence[dict[str, Any]]],
    plugins: tuple[str, ...],
    source: str,
    problems: Problems | None = None,
) -> None:
    """Resolve every name and validate every entry's options now: a typo fails before any build."""
    from zoo.core.anyres import parse_anyres
    from zoo.core.config import component_config
    from zoo.core.registry import get_registry

    registry = get_registry(plugins)
    for kind in SLOTS:
        for index, entry in enumerate(slots.get(kind, ())):
            where = f"grid.{kind}[{index}]"
            try:
                spec, implied = registry.resolve(kind, entry["name"], key=f"{source}: {where}.name")
            except ZooError as error:
                report(problems, error)
                continue
            options = {k: v for k, v in _options(entry).items() if k not in (*POLICY_KEYS, "anyres")}
            if "anyres" in entry:  # a slot option like train (zoo.core.config), not the tower's
                if kind != "vision":
                    report(problems, ConfigError(f"{source}: {where}.anyres: any-resolution tiling is an option of "
                                                 "grid.vision", key=f"{where}.anyres"))  # fmt: skip
                else:
                    attempt(problems, parse_anyres, entry["anyres"], key=f"{where}.anyres", source=source)
            attempt(problems, component_config, spec, options, implied=implied, key=where, source=source,
                    problems=problems)  # fmt: skip


def _int(value: Any, key: str, source: str, *, minimum: int, maximum: int = MAX_CONFIG_INT) -> int:
    """``value`` within ``[minimum, maximum]``: past the maximum a value is a typo (or an attack), not a setting."""
    return check_int_range(value, minimum, maximum, f"{source}: {key}", field=key)


def _positive(value: Any, key: str, source: str) -> float:
    return check_positive_finite(value, f"{source}: {key}", field=key)


def _ints(value: Any, key: str, source: str, *, minimum: int, maximum: int) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{source}: {key} = {brief(value)}: expected a non-empty list of integers >= {minimum}", key=key
        )
    return [_int(v, f"{key}[{i}]", source, minimum=minimum, maximum=maximum) for i, v in enumerate(value)]


def _dtypes(value: Any, source: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{source}: grid.dtype = {brief(value)}: expected a non-empty list of dtype names", key="grid.dtype"
        )
    found = []
    for index, name in enumerate(value):
        canonical = DTYPES.get(str(name).lower())
        if canonical is None:
            raise ConfigError(
                f"{source}: grid.dtype[{index}] = {brief(name)} is not a dtype; "
                f"{suggest(str(name)[:100], sorted(set(DTYPES.values())))}",
                key=f"grid.dtype[{index}]",
            )
        found.append(canonical)
    return found


def expand(spec: BenchSpec) -> list[Combination]:
    """Every (vision, projector, lm, image_size, dtype) of the grid, in file order."""
    return [
        Combination(vision=v, projector=p, lm=m, image_size=size, dtype=dtype)
        for dtype, size, v, p, m in itertools.product(
            spec.dtypes, spec.image_sizes, spec.vision, spec.projector, spec.lm
        )
    ]


def parse_shard(text: str, *, key: str = "--shard") -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``1 <= I <= N``.

    Example:
        >>> parse_shard("2/4")
        (2, 4)
    """
    index, sep, count = str(text).partition("/")
    if sep and index.strip().isdigit() and count.strip().isdigit() and 1 <= int(index) <= int(count):
        return int(index), int(count)
    raise ConfigError(f"{key} = {brief(text)}: expected I/N with 1 <= I <= N, e.g. 1/4 (the first of four shards)")


def shard_of(items: Sequence[Any], shard: tuple[int, int] | None) -> list[Any]:
    """The ``I``-th of ``N`` contiguous, near-equal slices of ``items`` (all of them for ``None``).

    Contiguous, so that a shard shares as many components between its combinations as the grid order
    allows; deterministic, so that shards 1..N of the same grid cover every item exactly once.
    """
    if shard is None:
        return list(items)
    index, count = shard
    size, extra = divmod(len(items), count)
    start = (index - 1) * size + min(index - 1, extra)
    return list(items[start : start + size + (1 if index <= extra else 0)])


def plan_grid(spec: BenchSpec, shard: tuple[int, int] | None = None) -> tuple[list[Case], list[Skipped]]:
    """Check every combination's contract on ``meta``; return the valid ones and the skipped ones.

    A contract failure (or a config value that one component rejects, such as an image size a tower
    cannot take) skips that combination with its reason; nothing is allocated. ``shard=(I, N)`` plans
    only the ``I``-th of ``N`` slices of the grid (:func:`shard_of`).
    """
    from zoo.core.builder import plan

    cases: list[Case] = []
    skipped: list[Skipped] = []
    combinations = shard_of(expand(spec), shard)
    if not combinations:
        return cases, skipped
    with contextlib.suppress(ZooError):  # the first plan pays one-time imports; keep them out of plan_s
        plan(parse_model_config(combinations[0].model_dict(spec.plugins)))
    for combination in combinations:
        source = f"{spec.source} [{combination.label}]"
        try:
            config = parse_model_config(combination.model_dict(spec.plugins), source=source)
            cases.append(Case(combination, config, plan(config)))
        except ZooError as error:
            reason = str(error).removeprefix(f"{source}: ")  # the row names the combination already
            skipped.append(Skipped(combination, reason, type(error).__name__))
    return cases, skipped


def _options(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A slot entry's component options (everything but ``name`` and the display ``label``)."""
    return {k: v for k, v in entry.items() if k not in ("name", "label")}


def _entry_label(entry: Mapping[str, Any]) -> str:
    if "label" in entry:
        return str(entry["label"])
    options = _options(entry)
    if not options:
        return str(entry["name"])
    inner = ",".join(f"{k}={v}" for k, v in sorted(options.items()) if not isinstance(v, Mapping))
    return f"{entry['name']}[{inner or '...'}]"


def _entry_out(entry: Mapping[str, Any]) -> Any:
    return entry["name"] if set(entry) == {"name"} else dict(entry)
