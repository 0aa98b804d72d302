"""``python -m zoo``: the ``zoo`` command, so that ``torchrun -m zoo train CONFIG`` works."""

from __future__ import annotations

from zoo.cli.app import console

if __name__ == "__main__":
    console()
