"""The ``zoo`` command line: a thin shell over the public API. Its commands are the modules of ``COMMANDS``.

User errors (``ZooError``, a bad argument, a file-system error) print one line and exit 2;
``--debug`` shows the traceback. With ``--json`` the error is ``{"error": "..."}`` on stdout instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from zoo.cli.shared import print_error, registry_for, report_plugin_failures
from zoo.errors import WRITE_ERRNOS, ZooError

__all__ = ["FAST_EXIT", "console", "main"]

# every command: its name -> the module that defines it (HELP, add_arguments(parser), run(args) -> exit code)
COMMANDS = {
    "plugins": "zoo.cli.plugins",
    "list": "zoo.cli.list",
    "show": "zoo.cli.show",
    "validate": "zoo.cli.validate",
    "build": "zoo.cli.build",
    "bench": "zoo.bench.command",
    "convert": "zoo.cli.convert",
    "generate": "zoo.cli.generate",
    "chat": "zoo.cli.chat",
    "train": "zoo.cli.train",
    "data": "zoo.cli.data",
    "eval": "zoo.cli.eval",
    "verify": "zoo.cli.verify",
    "demo": "zoo.cli.demo",
    "cache": "zoo.cli.cache",
}


def _common_options(suppress: bool) -> _Parser:
    """Options accepted before and after the command; after it they must not reset earlier values."""
    common = _Parser(add_help=False)
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    common.add_argument(
        "--plugin", action="append", metavar="MODULE_OR_FILE", help="extra plugin to load (repeatable)", **default
    )
    common.add_argument("--strict-plugins", action="store_true", help="a plugin that fails to load is fatal", **default)
    common.add_argument("--debug", action="store_true", help="show tracebacks (and what --verbose shows)", **default)
    common.add_argument(
        "--verbose", action="store_true", help="show the model libraries' warnings, logs and progress bars", **default
    )
    common.add_argument("--json", action="store_true", help="machine-readable output", **default)
    return common


class _Parser(argparse.ArgumentParser):
    """argparse with zoo's error format: one line (or ``{"error": ...}`` with ``--json``), exit 2."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"'([^']{60})[^']{4,}'", r"'\1...'", message)  # argparse quotes the bad value whole
        print_error(f"{message} (see '{self.prog} --help')", as_json=self.json_errors)
        raise SystemExit(2)


def make_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``zoo`` command."""
    parser = _Parser(prog="zoo", description="A plugin-based zoo of vision-language models.",
                                     parents=[_common_options(False)])  # fmt: skip
    common = _common_options(True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:  # never a missing extra: commands import those when they run
            _add_broken_command(sub, common, name, module_name, error)
            continue
        p = sub.add_parser(name, parents=[common], help=module.HELP)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def _add_broken_command(
    sub: Any, common: argparse.ArgumentParser, name: str, module_name: str, error: ImportError
) -> None:
    """``zoo NAME`` for a command whose module fails to import: still listed, and running it is an error
    naming the module and the import error (a broken install or a bug; ``--debug`` shows the traceback).

    A command's optional extra (Gradio for ``zoo demo``, lmms-eval) is imported when the command runs, which
    reports it missing with the ``pip install`` that adds it; so an ImportError here is never that.
    """
    p = sub.add_parser(name, parents=[common], help=f"(unavailable: its module {module_name} failed to import)")
    p.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(args: argparse.Namespace) -> int:
        raise ZooError(
            f"'zoo {name}' is unavailable: its module {module_name} failed to import "
            f"({type(error).__name__}: {error}); the installation of zoo-vlm is broken or incomplete"
        ) from error

    p.set_defaults(func=run)


def _quiet_libraries() -> None:
    """Hide the model libraries' warnings, logs and progress bars; ``--verbose`` and ``--debug`` show them.

    Users and scripts read stderr: it carries zoo's own lines (its warnings, progress it was asked for, one
    line per error), not transformers' "Loading weights" bars or torch's "No CUDA runtime is found".
    """
    import logging
    import warnings

    warnings.filterwarnings("ignore")  # third-party warnings, whatever their category
    warnings.filterwarnings("default", module=r"zoo(\.|$)")  # zoo's own (a save that waits on a lock...)
    # torch resets its own "torch" logger when imported; a child's level set beforehand stays
    libraries = ("transformers", "peft", "timm", "open_clip", "accelerate", "huggingface_hub")
    for name in (*libraries, "torch", "torch.utils.cpp_extension"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is None:  # transformers reads it when imported (later: the CLI imports it lazily)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    else:  # already imported (zoo.cli.app.main called from Python)
        transformers_logging.disable_progress_bar()


PLUGIN_FREE = frozenset({"verify"})
"""Commands that import no plugin at all, ``--plugin`` included (a hash check runs no one's code)."""

FAST_EXIT = frozenset({"plugins", "list", "show", "validate", "build", "verify"})
"""Commands after which the console script skips the interpreter's teardown (see :func:`console`)."""


def console() -> NoReturn:
    """The ``zoo`` console script and ``python -m zoo``: :func:`main`, then exit.

    After the read-only commands of ``FAST_EXIT`` (whose output is written and whose files, if any, are
    closed), the process ends with ``os._exit`` once stdout, stderr and logging are flushed: tearing
    down the thousands of modules torch and transformers load costs about a second of CPU and does
    nothing for these commands. Every other command (training, serving, benchmarks) exits normally.
    """
    argv = sys.argv[1:]
    code = main(argv)
    command = _command_of(argv)
    if command in FAST_EXIT:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be written anyway
                pass
        os._exit(code)
    sys.exit(code)


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is not an option or an option's value)."""
    takes_value = {"--plugin"}
    words = iter(argv)
    for word in words:
        if word in takes_value:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zoo`` console script.

    Exit status: 0 done, 2 a user error (one line on stderr), 130 interrupted (Ctrl-C, wherever it lands:
    one line, ``zoo: interrupted``), or what the command returns (``zoo bench``: 1 when a combination failed).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        if "--json" in argv:
            print(json.dumps({"error": "interrupted"}))
        else:
            print("zoo: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    _Parser.json_errors = "--json" in argv
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a bad argument (already printed on one line)
        return exit_.code if isinstance(exit_.code, int) else 2
    if not (args.debug or args.verbose):
        _quiet_libraries()
    interrupted = False
    try:
        if getattr(args, "plugin", None) and args.command not in PLUGIN_FREE:
            registry_for(args)  # load them first, so that every command reports them as --plugin
        return int(args.func(args) or 0)
    except (ZooError, OSError) as error:
        if args.debug:
            raise
        report_plugin_failures()
        print_error(_describe(error), as_json=args.json)
        return 2
    except KeyboardInterrupt:
        interrupted = True  # main() prints the one line; plugin failures found so far stay unreported
        raise
    except Exception as error:  # a Rust library's I/O error (a full disk while safetensors writes) is an OSError
        failure = _os_error_in(error)
        if failure is None or args.debug:
            raise
        report_plugin_failures()
        print_error(_describe(failure), as_json=args.json)
        return 2
    finally:
        if not interrupted:
            report_plugin_failures()


def _os_error_in(error: BaseException) -> OSError | None:
    """The file-system error behind ``error`` (``... (os error 28)`` in a library's message), if any."""
    if "os error" not in str(error):
        return None
    from zoo.sdk.weights import os_error_of  # imports torch: only on this path

    return os_error_of(error)


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and not isinstance(error, ZooError):
        from zoo.sdk.limits import brief

        where = f" {brief(error.filename)}" if error.filename else ""
        writing = error.errno in WRITE_ERRNOS
        return f"{'cannot write' if writing else 'cannot access'}{where}: {error.strerror or error}"
    message = str(error)
    cause = error.__cause__
    if cause is not None and not isinstance(cause, ZooError | OSError) and "--debug" not in message:
        message += " (run with --debug for the traceback)"  # an error of plugin or library code, wrapped
    return message


if __name__ == "__main__":
    console()
