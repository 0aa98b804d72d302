"""Helper of test_checkpoint_trust.py: load hostile checkpoints under an audit hook, report what happened.

Usage: ``python tests/_hostile_load.py OUTSIDE CKPT...``. An audit hook records every ``open`` (and
directory listing) whose path mentions OUTSIDE, the directory no checkpoint may reach. Each CKPT is
loaded with ``zoo.load``; the result (error type and message, or "loaded") is printed as one JSON line
per checkpoint, then a last line ``{"outside": [...]}`` with the offending events.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["main"]


def main(outside: str, directories: list[str]) -> None:
    seen: list[str] = []
    needle = os.path.basename(outside.rstrip("/"))

    def hook(event: str, args: tuple) -> None:
        if event in ("open", "os.listdir", "os.scandir", "shutil.copyfile", "os.chdir") and args:
            path = args[0]
            if isinstance(path, bytes):
                path = os.fsdecode(path)
            if isinstance(path, str) and needle in path:
                seen.append(f"{event} {path}")

    import zoo

    sys.addaudithook(hook)
    for directory in directories:
        try:
            zoo.load(directory)
            result = {"dir": directory, "result": "loaded"}
        except zoo.ZooError as error:
            result = {"dir": directory, "result": type(error).__name__, "message": str(error)}
        except BaseException as error:  # noqa: BLE001 - the test wants to see any escape
            result = {"dir": directory, "result": f"escaped {type(error).__name__}", "message": str(error)}
        print(json.dumps(result), flush=True)
    print(json.dumps({"outside": seen}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
