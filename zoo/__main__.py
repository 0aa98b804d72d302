"""``python -m zoo``: the ``zoo`` command, so that ``torchrun -m zoo train CONFIG`` works."""

from __future__ import annotations

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
