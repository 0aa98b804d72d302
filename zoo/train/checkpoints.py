"""The ``checkpoint-N`` directories of a ``zoo train`` run: which are complete, what to resume from, what to rotate.

A training checkpoint is what :class:`zoo.train.trainer.ZooTrainer` leaves at step N: a zoo checkpoint (its
``manifest.json`` and every file that lists, written atomically) plus Trainer's resume state, of which
``trainer_state.json`` is written last. A run killed while saving leaves a ``checkpoint-N`` without its
resume state (killed after the swap), a ``.checkpoint-N.tmp-*`` temporary beside the previous ones
(killed before it), or, on file systems without atomic rename exchange, the previous copy set aside.
:func:`incomplete_reason` says which; :func:`resume_point` names the checkpoint to resume from or says
why there is none; :func:`rotate` removes old checkpoints for ``save_total_limit``, but only complete
zoo training checkpoints: a folder of the user's that happens to be called ``checkpoint-5`` is kept.

No torch here: ``zoo train`` checks its output directory before it builds anything.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from zoo.checkpoint.kinds import is_zoo_checkpoint
from zoo.checkpoint.manifest import MANIFEST, MAX_MANIFEST_BYTES, parse_manifest
from zoo.errors import CheckpointError

__all__ = [
    "TRAINER_STATE",
    "checkpoint_dirs",
    "incomplete_reason",
    "resume_point",
    "rotate",
    "step_of",
    "written_by_a_run",
]

TRAINER_STATE = "trainer_state.json"
_NAME = re.compile(r"checkpoint-([0-9]{1,18})")
_SET_ASIDE = re.compile(r"\.(checkpoint-[0-9]{1,18})\.old-")


def step_of(path: str | os.PathLike) -> int | None:
    """N of a ``checkpoint-N`` name, else None."""
    match = _NAME.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def checkpoint_dirs(out: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-N`` directories of ``out`` (not symbolic links), by step."""
    try:
        entries = list(Path(out).iterdir())
    except OSError:
        return []
    found = [p for p in entries if step_of(p) is not None and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: step_of(p) or 0)


def written_by_a_run(out: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-N`` directories of ``out`` that a run wrote into (a manifest or Trainer's state is
    there, complete or not); a user's folder of that name is not one."""
    return [p for p in checkpoint_dirs(out) if (p / MANIFEST).exists() or (p / TRAINER_STATE).exists()]


def incomplete_reason(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a complete training checkpoint (one phrase), or None when it is one.

    Checks the manifest (valid, every listed file present with its size; hashes are ``zoo verify``'s job)
    and Trainer's ``trainer_state.json``.
    """
    path = Path(path)
    manifest = path / MANIFEST
    if not path.is_dir():
        return "it is not a directory"
    if manifest.is_symlink() or not manifest.is_file():
        interrupted = _temporaries(path)
        if interrupted:
            return f"it has no {MANIFEST}: a save into it was interrupted ({interrupted[0].name} is left beside it)"
        return f"it has no {MANIFEST}: the run stopped while writing it"
    try:
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            return f"its {MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes"
        files = parse_manifest(manifest.read_bytes(), str(manifest))["files"]
    except (OSError, CheckpointError) as error:
        return f"its {MANIFEST} cannot be read ({str(error)[:160]})"
    for name, entry in sorted(files.items()):
        size = entry["size"] if isinstance(entry, dict) else entry
        try:
            info = (path / name).lstat()
        except OSError:
            return f"{name} is missing"
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            return f"{name} is not the {size}-byte file its manifest lists"
    if not (path / TRAINER_STATE).is_file():
        return f"it has no {TRAINER_STATE}: the run stopped before Trainer wrote its resume state"
    return None


def resume_point(out: str | os.PathLike, explicit: str | os.PathLike | None = None) -> Path:
    """The checkpoint ``--resume`` continues from: ``explicit``, or the latest of ``out``; it must be complete.

    Raises:
        CheckpointError: there is none, or it is incomplete (naming why, and the last complete one).
    """
    out = Path(out)
    _recover_set_aside(out)
    if explicit is not None:
        path = Path(explicit)
        if step_of(path) is None:  # not named like a training checkpoint: say what it is instead
            if not is_zoo_checkpoint(path):
                raise CheckpointError(f"--resume {str(path)!r}: not a zoo training checkpoint (no {MANIFEST})")
            if not (path / TRAINER_STATE).is_file():
                raise CheckpointError(
                    f"--resume {str(path)!r}: a zoo checkpoint without {TRAINER_STATE} (not written by zoo "
                    "train); to fine-tune from it, name it in model: ... instead"
                )
    else:
        found = checkpoint_dirs(out)
        if not found:
            raise CheckpointError(f"--resume: no checkpoint-N directory in {str(out)!r} to resume from")
        path = found[-1]
    why = incomplete_reason(path)
    if why is None:
        return path
    complete = next((p for p in checkpoint_dirs(path.parent)[::-1] if incomplete_reason(p) is None), None)
    if complete is None:
        advice = "no checkpoint beside it is complete; start the run again in a new --output-dir"
    else:
        advice = (
            f"the last complete one is {str(complete)!r}: move {path.name} away and run --resume again "
            f"(it then continues from {complete.name})"
        )
    raise CheckpointError(f"--resume: {str(path)!r} is incomplete ({why}); {advice}")


def rotate(out: str | os.PathLike, limit: int | None, keep: tuple[str | os.PathLike | None, ...] = ()) -> list[Path]:
    """Remove the oldest complete training checkpoints of ``out`` beyond ``limit``; return what was removed.

    Only complete zoo training checkpoints count and go (:func:`incomplete_reason` is None); ``keep``
    (the one just saved, the best one) stays whatever its step. Older ones go first, by step.
    """
    if not limit or limit <= 0:
        return []
    kept = {Path(p).absolute() for p in keep if p is not None}
    ours = [p for p in checkpoint_dirs(out) if incomplete_reason(p) is None]
    removed = []
    excess = len(ours) - max(limit, len(kept & {p.absolute() for p in ours}))
    for path in ours:
        if excess <= 0:
            break
        if path.absolute() in kept:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        excess -= 1
    return removed


def _temporaries(path: Path) -> list[Path]:
    prefix = f".{path.name}.tmp-"
    try:
        return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []


def _recover_set_aside(out: Path) -> None:
    """Put back a checkpoint that a save killed between its two renames left aside (``.checkpoint-N.old-*``)."""
    from zoo.checkpoint.atomic import recover_interrupted_swap

    try:
        names = {m.group(1) for p in out.iterdir() if (m := _SET_ASIDE.match(p.name))}
    except OSError:
        return
    for name in sorted(names):
        if not os.path.lexists(out / name):
            recover_interrupted_swap(out / name)
