"""When ``zoo train`` uses the feature cache (:mod:`zoo.train.feature_cache`), and how it fills it.

``train.feature_cache``: ``auto`` (the default) uses the cache when the tower is frozen and held in eval
mode (``model.vision.train: frozen``, ``frozen_mode: eval``: then its output is a pure function of the
image) and the run is not sharded by FSDP / DeepSpeed (untested there); ``on`` insists (a tower that
trains is a ``ConfigError``); ``off`` never uses it. Before the first step, every distinct image of
``data.train`` and ``data.eval`` is hashed, the images the cache lacks are run through the tower once
(batched, no gradients, under the run's autocast; under DDP each process computes its share) and
stored; the datasets then yield ``vision_features`` in place of ``pixel_values`` and the model skips
its tower. A fill that would pass ``train.feature_cache_max_gb`` or the free disk space is refused
(``auto`` then trains without the cache and says why).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ConfigError, ZooError
from zoo.sdk.limits import format_bytes
from zoo.train.feature_cache import FeatureCache, default_cache_dir, hash_files, tower_fingerprint, used_bytes

if TYPE_CHECKING:
    import torch

    from zoo.core.multimodal import MultiModal
    from zoo.train.config import TrainSettings
    from zoo.train.data import LlavaDataset

__all__ = ["FeatureCacheReport", "decide", "fill", "prepare_feature_cache"]


@dataclass
class FeatureCacheReport:
    """What the feature cache did in a run (``TrainResult.feature_cache``)."""

    mode: str
    enabled: bool
    reason: str
    directory: str | None = None
    fingerprint: str | None = None
    images: int = 0
    cached: int = 0
    computed: int = 0
    failed: int = 0
    seconds: float = 0.0
    bytes_written: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)

    def line(self) -> str:
        """One line for the console."""
        if not self.enabled:
            return f"feature cache: off ({self.reason})"
        failed = f", {self.failed} unreadable" if self.failed else ""
        return (
            f"feature cache: {self.images} images, {self.cached} already cached, {self.computed} computed{failed} "
            f"in {self.seconds:.1f} s, {format_bytes(self.bytes_written)} written ({self.directory}/"
            f"{(self.fingerprint or '')[:12]}...)"
        )


def decide(settings: TrainSettings, model: MultiModal) -> tuple[bool, str]:
    """Whether the run may use the cache, and why (before anything is hashed).

    Raises:
        ConfigError: ``train.feature_cache: on`` with a tower that trains or follows ``model.train()``.
    """
    mode = settings.feature_cache
    if mode == "off":
        return False, "train.feature_cache: off"
    vision = model.composition.vision
    if not vision.held_in_eval:
        why = (
            f"model.vision.train = {vision.train!r}"
            if vision.train != "frozen"
            else "model.vision.frozen_mode = 'train' (BatchNorm statistics change)"
        )
        if mode == "on":
            raise ConfigError(
                f"train.feature_cache = 'on' but {why}: only a tower frozen in eval mode computes the same features "
                "for an image every time; set model.vision.train: frozen (frozen_mode: eval) or train.feature_cache: auto"
            )
        return False, f"{why}: the tower's features change during training"
    if mode == "auto" and (settings.fsdp or settings.deepspeed):
        return False, "not used under FSDP / DeepSpeed by default (untested there); train.feature_cache: on forces it"
    return True, "the tower is frozen in eval mode"


def _store_dtype(settings: TrainSettings) -> torch.dtype | None:
    import torch

    return None if settings.feature_cache_dtype is None else getattr(torch, settings.feature_cache_dtype)


def _autocast(settings: TrainSettings) -> str | None:
    return "bfloat16" if settings.bf16 else "float16" if settings.fp16 else None


def prepare_feature_cache(
    model: MultiModal,
    settings: TrainSettings,
    datasets: Sequence[LlavaDataset | None],
    *,
    device: torch.device,
    process_index: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    progress: bool = True,
) -> FeatureCacheReport:
    """Decide, fill the cache for ``datasets`` and attach it to them; return what happened.

    Raises:
        ConfigError: ``train.feature_cache: on`` and the cache cannot be used (see :func:`decide`, or the
            fill would pass ``train.feature_cache_max_gb`` / the free disk space).
        DataError: an image cannot be read and ``data.on_error`` is ``error``.
    """
    mode = settings.feature_cache
    enabled, reason = decide(settings, model)
    used = [d for d in datasets if d is not None and not d.blank_images]
    if enabled and not used:
        enabled, reason = False, "no dataset to cache"
    if not enabled:
        return FeatureCacheReport(mode, False, reason)
    start = time.perf_counter()
    root = Path(settings.feature_cache_dir) if settings.feature_cache_dir else default_cache_dir()
    cache = open_cache(model, root, device=device, store_dtype=_store_dtype(settings), autocast=_autocast(settings))
    digests = hash_files(str(path) for dataset in used for path in dataset.image_files())
    images: dict[str, str] = {}  # image sha256 -> one path with those bytes
    for path, digest in digests.items():
        images.setdefault(digest, path)
    missing = sorted(d for d in images if not cache.has(d))
    report = FeatureCacheReport(mode, True, reason, str(root), cache.fingerprint, images=len(images),
                                cached=len(images) - len(missing))  # fmt: skip
    problem = _room_problem(cache, model, root, len(missing), settings)
    if problem is not None:
        if mode == "on":
            raise ConfigError(f"train.feature_cache = 'on' but {problem}")
        return FeatureCacheReport(mode, False, problem)
    cache.create()
    mine = {d: images[d] for d in missing[process_index::world_size]}
    computed, failed, written = fill(cache, model, mine, batch_size=settings.eval_batch_size or settings.batch_size,
                                     device=device, autocast=_autocast(settings), on_error=used[0].on_error,
                                     progress=progress and process_index == 0)  # fmt: skip
    if barrier is not None:
        barrier()  # every process's share is on disk before any process reads
    for dataset in used:
        dataset.attach_feature_cache(cache, digests)
    report.computed, report.failed, report.bytes_written = computed, failed, written
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def open_cache(
    model: MultiModal,
    root: Path,
    *,
    device: torch.device,
    store_dtype: torch.dtype | None = None,
    autocast: str | None = None,
) -> FeatureCache:
    """The :class:`FeatureCache` of ``model``'s tower under ``root`` (hashes the tower's weights once)."""
    fingerprint, describe = tower_fingerprint(model, device_type=device.type, autocast=autocast)
    contract = model.contract
    shape = (contract.vision_tokens, contract.vision_hidden_size)
    tiles_for = model.anyres.num_tiles if model.anyres is not None else None
    describe["store_dtype"] = None if store_dtype is None else str(store_dtype).removeprefix("torch.")
    return FeatureCache(root, fingerprint, feature_shape=shape, store_dtype=store_dtype, tiles_for=tiles_for,
                        describe=describe)  # fmt: skip


def _room_problem(
    cache: FeatureCache, model: MultiModal, root: Path, missing: int, settings: TrainSettings
) -> str | None:
    """Why ``missing`` new entries do not fit (the size limit, the free disk space), or ``None``."""
    import shutil

    if not missing:
        return None
    tiles = model.anyres.max_tiles if model.anyres is not None else 1
    needed = missing * cache.entry_bytes(model.vision.dtype, tiles)
    if settings.feature_cache_max_gb is not None:
        limit = settings.feature_cache_max_gb * 1e9
        now = used_bytes(root)
        if now + needed > limit:
            return (
                f"the cache would grow to {format_bytes(now + needed)} ({missing} new images of up to "
                f"{format_bytes(needed / missing)}) past train.feature_cache_max_gb = {settings.feature_cache_max_gb} "
                f"({str(root)!r}); raise the limit, set train.feature_cache_dtype: bfloat16, or 'zoo cache clear'"
            )
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        return (
            f"{missing} new entries need about {format_bytes(needed)} but {str(probe)!r} has {format_bytes(free)} "
            "free; set train.feature_cache_dir elsewhere or train.feature_cache_dtype: bfloat16"
        )
    return None


def fill(
    cache: FeatureCache,
    model: MultiModal,
    images: dict[str, str],
    *,
    batch_size: int,
    device: torch.device,
    autocast: str | None = None,
    on_error: str = "error",
    progress: bool = False,
) -> tuple[int, int, int]:
    """Run the tower over ``images`` (``{sha256: path}``) in batches and store each image's features.

    Returns:
        ``(computed, unreadable, bytes written)``; an unreadable image raises a ``DataError`` with
        ``on_error='error'`` and is counted (its record fails later, in the dataset) with ``skip``.
    """
    import contextlib
    from concurrent.futures import Future, ThreadPoolExecutor

    import torch

    from zoo.sdk.images import open_image
    from zoo.train.data import DataError

    if not images:
        return 0, 0, 0
    cache.create()
    tower, pre, layout = model.vision, model.vision.preprocessor, model.anyres
    tower.to(device).eval()  # held in eval anyway; Trainer moves the whole model later
    amp = torch.autocast(device.type, dtype=getattr(torch, autocast)) if autocast else contextlib.nullcontext()
    items = sorted(images.items())
    computed = failed = written = 0
    bar = _bar(len(items), progress)
    pending: list[Future[int]] = []
    # the writes (each fsynced) of one batch run in threads while the next batch is computed; fsyncs in
    # parallel share the file system's journal commits (several times faster than one after the other)
    with ThreadPoolExecutor(max_workers=8) as writers:
        for first in range(0, len(items), batch_size):
            opened = []
            for digest, path in items[first : first + batch_size]:
                try:
                    opened.append((digest, open_image(path, what="image")))
                except ZooError as error:
                    if on_error == "error":
                        raise DataError(f"feature cache fill: {error}") from error
                    failed += 1
            features: list[torch.Tensor] = []
            if opened:
                pictures = [image for _, image in opened]
                with torch.no_grad(), amp:
                    if layout is None:
                        features = list(tower(pre(pictures).to(device)).to("cpu"))  # each [N, D]
                    else:
                        pixels, sizes = layout.preprocess(pictures, pre)  # [B, T, 3, S, S], [B, 2]
                        tiles = tower(layout.tiles_of(pixels, sizes).to(device)).to("cpu")  # [sum T_i, N, D]
                        features = list(tiles.split([layout.num_tiles(im.height, im.width) for im in pictures]))
            written += sum(f.result() for f in pending)  # at most one batch in flight: bounded memory
            pending = [
                writers.submit(cache.store, digest, feature, height=image.height, width=image.width)
                for (digest, image), feature in zip(opened, features)
            ]
            computed += len(pending)
            bar.update(min(batch_size, len(items) - first))
        written += sum(f.result() for f in pending)
    bar.close()
    return computed, failed, written


def _bar(total: int, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, file=sys.stderr, disable=not progress or total < 64, desc="feature cache", unit="img",
                dynamic_ncols=True, leave=False)  # fmt: skip
