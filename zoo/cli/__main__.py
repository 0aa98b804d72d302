"""``python -m zoo.cli``, as zoo 0.1.0 allowed (``python -m zoo`` is the documented form)."""

from zoo.cli.app import console

if __name__ == "__main__":
    console()
