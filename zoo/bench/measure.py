"""Measurement primitives: peak memory, FLOP counts, the matmul peak, the machine and its load.

Timings themselves live in :mod:`zoo.bench.timing` (``torch.utils.benchmark``). The only absolute speed
zoo reports is next to a matmul peak measured on the same machine in the same run, so a reader
compares ratios, never a single number from another machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from zoo.core.multimodal import MultiModal

__all__ = [
    "PeakMemory",
    "forward_flops",
    "machine_info",
    "machine_state",
    "matmul_peak",
    "quiet_transformers",
    "synchronize",
    "timed",
    "torch_threads",
]


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels on a CUDA device (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | str) -> float:
    """Seconds one call of ``fn`` takes, synchronised on CUDA."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads (``None``: leave the setting alone)."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc), so that an RSS delta measures new use."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory used inside a ``with`` block, in bytes above what was held on entry.

    On CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation on entry. On CPU: the highest
    resident set size sampled every ``interval`` seconds by a thread (psutil), minus the RSS on entry.
    """

    def __init__(self, device: torch.device | str, interval: float = 0.001) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_bytes = 0
        self.method = "cuda_max_memory_allocated" if self.device.type == "cuda" else "rss_delta"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base = 0
        self._max = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, _rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        _trim_heap()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._max = _rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._max = max(self._max, _rss())
            self.peak_bytes = max(0, self._max - self._base)


def forward_flops(model: MultiModal, seq_len: int, batch_size: int = 1, *, tiles: int = 1) -> dict[str, int]:
    """FLOPs of one forward per component (``torch.utils.flop_counter``), on the model's device.

    Works on ``meta`` (nothing is allocated or computed). Counts what the counter knows: matmuls,
    convolutions and attention; element-wise ops are not counted. ``seq_len`` is the LM sequence
    (image positions plus text) of one sample; ``tiles`` is the number of tower inputs per image (any-res).
    """
    from torch.utils.flop_counter import FlopCounterMode

    vision, projector, lm = model.vision, model.projector, model.lm
    device = lm.model.get_input_embeddings().weight.device
    counts = {}
    # The counter's module tracker hooks autograd on inputs that require grad (a resampler's learned
    # queries); freeze every parameter meanwhile so that no hook is needed.
    trainable = [p for p in model.parameters() if p.requires_grad]
    with _frozen(trainable), torch.inference_mode():
        pixels = torch.zeros(
            batch_size * tiles, *vision.pixel_shape, device=device, dtype=vision.dtype
        )  # [B*T, C, H, W]
        with FlopCounterMode(display=False) as counter:
            features = vision(pixels)  # [B, N, D]
        counts["vision"] = counter.get_total_flops()
        proj_dtype = next(iter(projector.parameters()), features).dtype
        with FlopCounterMode(display=False) as counter:
            projector(features.to(proj_dtype))  # [B, M, H]
        counts["projector"] = counter.get_total_flops()
        embeds = torch.zeros(batch_size, seq_len, lm.hidden_size, device=device, dtype=lm.dtype)  # [B, T, H]
        with FlopCounterMode(display=False) as counter:
            # no mask and a (fresh) cache: transformers then reads no tensor value, so this runs on meta
            lm(inputs_embeds=embeds, use_cache=True)
        counts["lm"] = counter.get_total_flops()
    counts["total"] = counts["vision"] + counts["projector"] + counts["lm"]
    return counts


@contextlib.contextmanager
def _frozen(params: list[nn.Parameter]) -> Iterator[None]:
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in params:
            param.requires_grad_(True)


def matmul_peak(device: torch.device | str, dtype: torch.dtype, *, budget_s: float = 0.4) -> float:
    """Best FLOP/s of a square matmul on this machine, now (the yardstick for achieved FLOP/s).

    The fastest block of a ``torch.utils.benchmark.Timer.blocked_autorange`` over ``budget_s`` seconds.
    """
    from torch.utils.benchmark import Timer

    device = torch.device(device)
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    timer = Timer("a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
    with torch.inference_mode():
        best = min(timer.blocked_autorange(min_run_time=budget_s).times)
    return 2.0 * n**3 / best


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-call generation notices while timing; restore the level after."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str) -> dict[str, Any]:
    """What ran the benchmark: CPU, cores, threads, GPU, library versions."""
    import transformers

    device = torch.device(device)
    info: dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    with contextlib.suppress(ImportError):
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    return info


def machine_state() -> dict[str, Any]:
    """How busy the machine is now: UTC time and the 1/5/15-minute load averages (runnable processes).

    A load average above ``cpu_count`` means that processes were waiting for a core: timings taken
    then measure the queue as much as the model. Recorded at the start and end of every bench run.
    """
    state: dict[str, Any] = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with contextlib.suppress(OSError, AttributeError):  # os.getloadavg does not exist on Windows
        state["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    return state
