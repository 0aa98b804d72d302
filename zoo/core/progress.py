"""Progress as plain lines: ``step 40/300 (13%) · 12.3 samples/s · loss 1.234 · eta 3m20s``.

A tqdm bar is drawn with carriage returns, so where stderr is a file or a pipe (a job log, ``2>
train.log``, CI) it is one unreadable line or nothing at all. ``zoo train``, ``zoo bench`` and ``zoo
generate --batch-file`` also write these lines, one per logging step / finished combination / batch,
whatever stderr is. Only the standard library: ``import zoo`` stays light.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

__all__ = ["LineProgress", "eta_seconds", "format_duration", "format_progress", "is_terminal", "write_line"]


def format_duration(seconds: float | None) -> str:
    """``3m20s``, ``45s``, ``1h02m``, ``2d03h``; ``?`` when unknown.

    Example:
        >>> format_duration(200)
        '3m20s'
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def eta_seconds(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left if the rest goes at the pace so far (``done`` of ``total`` in ``elapsed`` seconds)."""
    if done <= 0 or total <= 0 or elapsed < 0:
        return None
    return max(total - done, 0) * elapsed / done


def format_progress(
    done: int,
    total: int | None,
    *,
    label: str = "step",
    rate: float | None = None,
    rate_unit: str = "samples/s",
    fields: Iterable[str] = (),
    eta: float | None = None,
    end: str | None = None,
) -> str:
    """One progress line: ``{label} done/total (pct%) · rate · fields... · eta`` (``end`` replaces the eta).

    Example:
        >>> format_progress(40, 300, rate=12.3, fields=["loss 1.234"], eta=200)
        'step 40/300 (13%) · 12.3 samples/s · loss 1.234 · eta 3m20s'
    """
    head = f"{label} {done}/{total}" if total else f"{label} {done}"
    if total:
        head += f" ({100 * done // total}%)"
    parts = [head]
    if rate is not None and math.isfinite(rate):
        parts.append(f"{rate:.3g} {rate_unit}" if rate < 100 else f"{rate:.0f} {rate_unit}")
    parts.extend(fields)
    parts.append(end if end is not None else f"eta {format_duration(eta)}")
    return " · ".join(parts)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (a closed, replaced or missing stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def write_line(line: str, file: TextIO | None = None) -> None:
    """Print ``line`` to ``file`` (default stderr) without breaking a tqdm bar drawn there, and flush."""
    stream = file if file is not None else sys.stderr
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with transformers
        print(line, file=stream, flush=True)
        return
    tqdm.write(line, file=stream)
    stream.flush()


class LineProgress:
    """The part of a tqdm bar's interface zoo uses (``update``, ``set_postfix_str``, ``close``, iteration),
    printing one line per ``update``: ``{desc}: 3/8 (37%) · 0.52 combos/s · tiny-clip+linear · eta 9s``.

    Args:
        iterable: iterate over it, counting one per item (as ``tqdm(iterable)``), or ``None``.
        total: how many units there are (default: ``len(iterable)``).
        desc: what is progressing (the line's label).
        unit: the unit's name (``combo`` gives ``combos/s``).
        file: where lines go (default stderr).
        disable: print nothing.
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        file: TextIO | None = None,
        disable: bool = False,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit
        self.file = file
        self.disable = disable
        self.n = 0
        self.postfix = ""
        self.start = time.perf_counter()

    def __iter__(self) -> Any:
        for item in self.iterable or ():
            yield item
            self.update(1)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        """Text shown in the next line (the item in progress, as tqdm's postfix)."""
        self.postfix = text

    def update(self, n: int = 1) -> None:
        """``n`` more units finished: print a line with the count, the rate and the ETA."""
        if n <= 0:
            return
        self.n += n
        if self.disable:
            return
        elapsed = time.perf_counter() - self.start
        rate = self.n / elapsed if elapsed > 0 else None
        eta = eta_seconds(self.n, self.total, elapsed) if self.total else None
        head = format_progress(
            self.n,
            self.total,
            label=self.desc,
            rate=rate,
            rate_unit=f"{self.unit}s/s",
            fields=[self.postfix] if self.postfix else [],
            eta=eta,
        )
        write_line(head, self.file)

    def close(self) -> None:
        """Nothing to clear (lines stay); for the tqdm interface."""
