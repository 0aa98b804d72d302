"""The ``zoo`` command line: a thin shell over the public API.

User errors (``ZooError``, a bad argument, a file-system error) print one line and exit 2;
``--debug`` shows the traceback. With ``--json`` the error is ``{"error": "..."}`` on stdout instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, cast

from zoo.errors import ZooError

if TYPE_CHECKING:
    from zoo.interfaces import LanguageModel, Projector, VisionTower

__all__ = ["FAST_EXIT", "console", "main"]

KIND_ALIASES = {
    "vision": "vision", "tower": "vision", "towers": "vision",
    "projector": "projector", "projectors": "projector",
    "lm": "lm", "lms": "lm", "language-model": "lm",
    "model": "model", "models": "model",
}  # fmt: skip
EXTRA_COMMANDS = {"bench": "zoo.bench.command", "convert": "zoo.convert_command", "generate": "zoo.generate_command"}
EXTRA_COMMANDS["chat"] = "zoo.chat_command"
EXTRA_COMMANDS["train"] = "zoo.train_command"
EXTRA_COMMANDS["data"] = "zoo.data_command"
EXTRA_COMMANDS["eval"] = "zoo.eval_command"
EXTRA_COMMANDS["verify"] = "zoo.verify_command"
EXTRA_COMMANDS["demo"] = "zoo.demo_command"
EXTRA_COMMANDS["cache"] = "zoo.cache_command"


def _registry(args: argparse.Namespace):
    from zoo.registry import get_registry

    registry = get_registry(tuple(args.plugin or ()), strict=args.strict_plugins or None, origin="--plugin")
    _report_plugin_failures()
    return registry


def _report_plugin_failures() -> None:
    """Print, once each, the plugins that failed to load so far (a config's plugins load late)."""
    if "zoo.registry" not in sys.modules:  # nothing loaded plugins (``zoo verify`` never does)
        return
    from zoo.registry import loaded_registry

    registry = loaded_registry()
    for line in registry.host.unreported_warnings() if registry else ():
        print(line, file=sys.stderr)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def _count(number: int, noun: str) -> str:
    """``1 component``, ``2 components``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as text columns, each as wide as its longest cell (the last column is not padded)."""
    widths = [
        max((len(row[i]) for row in rows if i < len(row) - 1), default=0) for i in range(max(map(len, rows), default=0))
    ]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths)), row[-1]]).rstrip() for row in rows if row
    )


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry(args)
    host = registry.host
    counts: dict[str, int] = {}
    for spec in registry.list():
        counts[spec.plugin] = counts.get(spec.plugin, 0) + 1
    loaded = [
        {"name": p.name, "origin": p.origin, "distribution": p.distribution, "version": p.version,
         "components": counts.get(p.name, 0)}
        for p in host.loaded
    ]  # fmt: skip
    failed = [
        {"name": f.name, "origin": f.origin, "distribution": f.distribution, "error": f.error} for f in host.failures
    ]
    rows = [[p["name"], p["origin"], _count(p["components"], "component"), p["distribution"]] for p in loaded]
    rows += [
        [f["name"], "FAILED", f["error"] + (f"  (distribution {f['distribution']})" if f["distribution"] else "")]
        for f in failed
    ]
    _emit(args, {"loaded": loaded, "failed": failed}, _table(rows))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    kind = KIND_ALIASES.get(args.kind or "", None) if args.kind else None
    if args.kind and kind is None:
        # `zoo list tiny-*` : a pattern in the kind position
        args.pattern, kind = args.kind, None
    pattern = args.pattern or "*"
    rows = []
    if kind in (None, "vision", "projector", "lm"):
        for spec in registry.list(kind, pattern):
            rows.append({"kind": spec.kind, "name": spec.name, "source": spec.source, "plugin": spec.plugin,
                         "description": spec.description})  # fmt: skip
    if kind in (None, "model"):
        for name in registry.list_compositions(pattern):
            rows.append({"kind": "model", "name": name, "source": "registry.yaml", "plugin": "", "description": ""})
    if not rows and args.kind and kind is None and not set("*?[") & set(args.kind):
        from zoo.errors import UnknownNameError, suggest

        choices = ["vision", "projector", "lm", "model", *(s.name for s in registry.list()), *registry.compositions]
        raise UnknownNameError(f"{args.kind!r} is neither a kind (vision, projector, lm, model) nor a registered "
                               f"name; {suggest(args.kind, choices)}{registry.missing_plugins_note()}")  # fmt: skip
    _emit(args, rows, _table([[r["kind"], r["name"], r["source"], r["description"]] for r in rows]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from zoo.plan_cache import cached, is_builtin

    registry = _registry(args)
    kinds = [KIND_ALIASES[args.kind]] if args.kind else ["vision", "projector", "lm"]
    found = []
    for kind in kinds:
        try:
            found.append((kind, *registry.resolve(kind, args.name)))
        except ZooError:
            continue
    if not found:
        if args.name in registry.compositions:
            from zoo.config import load_model_config
            from zoo.validation import plan_summary

            config = load_model_config(args.name)
            summary = plan_summary(config)
            data = {"kind": "model", "name": args.name, "config": config.to_dict(), "contract": summary["contract"]}
            _emit(args, data, json.dumps(data, indent=2))
            return 0
        from zoo.errors import UnknownNameError, suggest

        names = [s.name for kind in kinds for s in registry.list(kind)] + list(registry.compositions)
        raise UnknownNameError(
            f"{args.name!r} is not a registered component or composition; {suggest(args.name, names)}"
            f"{registry.missing_plugins_note()}"
        )
    kind, spec, _ = found[0]
    dims = {"in_dim": args.in_dim, "out_dim": args.out_dim} if kind == "projector" else {}

    def meta_facts() -> dict[str, Any]:
        from zoo.builder import build_component

        module = cast("VisionTower | Projector | LanguageModel", build_component(kind, args.name, meta=True, **dims))
        contract = dict(module.contract())
        if kind == "projector":
            contract["tokens_out_for_576"] = cast("Projector", module).num_output_tokens(576)
        return {"params": sum(p.numel() for p in module.parameters()), "contract": contract}

    payload = {"kind": kind, "name": args.name, **dims}
    facts = cached("component", payload, meta_facts, store=is_builtin(spec.plugin))  # no torch on a hit
    contract = facts["contract"]
    data = {"kind": kind, "name": args.name, "source": spec.source, "plugin": spec.plugin,
            "description": spec.description, "params": facts["params"], "contract": contract}  # fmt: skip
    text = "\n".join(
        [f"{args.name} ({kind}, {spec.source}, plugin {spec.plugin})", f"  {spec.description}",
         f"  params: {data['params']:,}"] + [f"  {k}: {v}" for k, v in contract.items()]
    )  # fmt: skip
    _emit(args, data, text)
    return 0


def _target(args: argparse.Namespace) -> Any:
    inline = [args.vision, args.projector, args.lm]
    if any(inline):
        if not all(inline):
            raise ZooError("the inline form needs all three of --vision, --projector and --lm")
        if args.target:
            raise ZooError(f"give either CONFIG_OR_NAME ({args.target!r}) or --vision/--projector/--lm, not both")
        from zoo.config import parse_model_config

        data = {"model": {"vision": args.vision, "projector": args.projector, "lm": args.lm,
                          "dtype": args.dtype or "float32"}}  # fmt: skip
        return parse_model_config(data, source="command line")
    if not args.target:
        raise ZooError("give a config file or a composition name (see 'zoo list model'), or --vision/--projector/--lm")
    if args.dtype:
        import dataclasses

        from zoo.config import load_model_config, torch_dtype

        config = load_model_config(args.target)
        return dataclasses.replace(config, dtype=str(torch_dtype(args.dtype, key="--dtype")).removeprefix("torch."))
    return args.target


def cmd_validate(args: argparse.Namespace) -> int:
    """Every problem of the file in one run (one line each, then a count), or a summary; exit 2 or 0."""
    from zoo.validation import check

    _registry(args)
    result = check(_target(args), plugins=tuple(args.plugin or ()))
    if not result.ok:
        _report_plugin_failures()
        count = f"{len(result.problems)} problem{'s' if len(result.problems) > 1 else ''} in {result.source}"
        if args.json:  # one document, with the CLI's {"error": ...} shape
            print(json.dumps({"error": count, **result.to_dict()}, default=str))
        elif len(result.problems) == 1 and not result.notes:
            _print_error(result.problems[0].message, as_json=False)
        else:
            for problem in result.problems:
                print(problem.message, file=sys.stderr)
            for note in result.notes:
                print(f"note: {note}", file=sys.stderr)
            _print_error(count, as_json=False)
        return 2
    _emit(args, result.to_dict(), _validation_summary(result))
    return 0


def _validation_summary(result: Any) -> str:
    """The ``ok:`` line(s) of ``zoo validate``."""
    summary = result.summary
    model = ""
    if "contract" in summary:
        c, names = summary["contract"], summary["names"]
        model = (f"{names['vision']} ({c['vision_hidden_size']}, {c['vision_tokens']} tokens) -> {names['projector']} "
                 f"-> {names['lm']} ({c['lm_hidden_size']}); {summary['image_tokens_text']} image tokens per image")  # fmt: skip
    if result.kind == "model":
        return f"ok: {model}"
    if result.kind == "train":
        data, train = summary["data"], summary.get("train", {})
        files = data["train"] + (f" (eval {data['eval']})" if data["eval"] else "")
        steps = f"max_steps {train['max_steps']}" if "max_steps" in train else f"epochs {train.get('epochs')}"
        return (f"ok: training file {result.source}: {model}\n  data: {files}, max_length {data['max_length']}\n"
                f"  train: {steps}, batch_size {train.get('batch_size')}, lr {train.get('lr')}")  # fmt: skip
    lines = [f"ok: bench grid {result.source}: {summary['combinations']} combinations, {len(summary['valid'])} "
             f"valid, {len(summary['skipped'])} skipped (as zoo bench would skip them)"]  # fmt: skip
    lines += [f"  skipped {row['combination']}: {row['reason']}" for row in summary["skipped"]]
    return "\n".join(lines)


def cmd_build(args: argparse.Namespace) -> int:
    from zoo.anyres import describe_image_tokens
    from zoo.builder import build
    from zoo.checkpoint import save

    if args.save is not None and not args.save.strip():
        raise ZooError(f"--save {args.save!r} is empty; give the directory to save the checkpoint to")
    _registry(args)
    if args.save and args.meta:
        raise ZooError("--save needs real weights; drop --meta to save the model")
    if args.save:
        _check_save_target(args.save, overwrite=bool(getattr(args, "overwrite", False)))
    target = _target(args)
    start = time.perf_counter()
    model = build(target, meta=args.meta, plugins=tuple(args.plugin or ()))
    summary = model.summary()
    summary["build_seconds"] = round(time.perf_counter() - start, 3)
    summary["meta"] = args.meta
    lines = [f"{'component':<10} {'name':<28} {'params':>16} {'trainable':>16}"]
    for kind, comp in summary["components"].items():
        lines.append(f"{kind:<10} {comp['name']:<28} {comp['params']:>16,} {comp['trainable']:>16,}")
    lines.append(f"{'total':<10} {'':<28} {summary['params_total']:>16,} {summary['params_trainable']:>16,}")
    tokens = describe_image_tokens(summary["image_tokens"])
    lines.append(f"image tokens per image: {tokens}   built in {summary['build_seconds']} s"
                 + ("  (meta: nothing allocated)" if args.meta else ""))  # fmt: skip
    if args.save and not args.meta:
        try:
            save(model, args.save, overwrite=args.overwrite)
        except OSError as error:
            raise ZooError(f"--save {args.save!r}: cannot write the checkpoint: {error.strerror or error}") from error
        lines.append(f"saved to {args.save}")
    _emit(args, summary, "\n".join(lines))
    return 0


def _check_save_target(path: str, *, overwrite: bool = False) -> None:
    """Refuse, before building, a ``--save`` destination that cannot or must not become a checkpoint."""
    from pathlib import Path

    target = Path(path)
    where = f"--save {path!r}"
    if target.is_symlink() and not target.exists():
        raise ZooError(f"{where} is a dangling symbolic link")
    if target.exists():
        if not target.is_dir():
            raise ZooError(f"{where} exists and is not a directory")
        if os.path.ismount(target):
            raise ZooError(f"{where} is a mount point; choose a new directory")
        if not overwrite and any(target.iterdir()) and not (target / "manifest.json").is_file():
            raise ZooError(f"{where} is a non-empty directory that is not a zoo checkpoint; choose a new directory")
    elif not target.parent.is_dir():
        raise ZooError(f"{where}: the parent directory {str(target.parent)!r} does not exist")


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", help="a YAML file or a registered composition name")
    parser.add_argument("--vision", help="vision tower name (inline form)")
    parser.add_argument("--projector", help="projector name (inline form)")
    parser.add_argument("--lm", help="language model name (inline form)")
    parser.add_argument("--dtype", help="model dtype (overrides the config's; default float32 for the inline form)")


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
        _print_error(f"{message} (see '{self.prog} --help')", as_json=self.json_errors)
        raise SystemExit(2)


_MAX_ERROR_CHARS = 2000  # a message quoting a huge value is cut: one short line, whatever the input


def _print_error(message: str, *, as_json: bool) -> None:
    line = " ".join(message.split())
    if len(line) > _MAX_ERROR_CHARS:
        line = line[: _MAX_ERROR_CHARS - 30] + f"... ({len(line):,} characters)"
    if as_json:
        print(json.dumps({"error": line}))
    else:
        print(f"zoo: error: {line}", file=sys.stderr)


def make_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``zoo`` command."""
    parser = _Parser(prog="zoo", description="A plugin-based zoo of vision-language models.",
                                     parents=[_common_options(False)])  # fmt: skip
    common = _common_options(True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("plugins", parents=[common], help="list loaded and failed plugins")
    p.set_defaults(func=cmd_plugins)
    p = sub.add_parser("list", parents=[common], help="list components or compositions (wildcards)")
    p.add_argument("kind", nargs="?", help="vision | projector | lm | model (or a pattern)")
    p.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. 'tiny-*'")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", parents=[common], help="show a component's contract")
    p.add_argument("name")
    p.add_argument("--kind", choices=sorted(set(KIND_ALIASES) - {"model", "models"}))
    p.add_argument("--in-dim", type=int, default=1024, help="projector input width for 'show' (default 1024)")
    p.add_argument("--out-dim", type=int, default=4096, help="projector output width for 'show' (default 4096)")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser(
        "validate", parents=[common], help="check a model, training or bench file: every problem in one run"
    )
    _add_target_arguments(p)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("build", parents=[common], help="build a composition and print its summary")
    _add_target_arguments(p)
    p.add_argument("--meta", action="store_true", help="build on the meta device (nothing allocated)")
    p.add_argument("--save", metavar="DIR", help="save the built model to DIR")
    p.add_argument(
        "--overwrite", action="store_true", help="--save into a directory zoo did not write (keeps its files)"
    )
    p.set_defaults(func=cmd_build)
    for name, module_name in EXTRA_COMMANDS.items():
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
    else:  # already imported (zoo.cli.main called from Python)
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
            _registry(args)  # load them first, so that every command reports them as --plugin
        return int(args.func(args) or 0)
    except (ZooError, OSError) as error:
        if args.debug:
            raise
        _report_plugin_failures()
        _print_error(_describe(error), as_json=args.json)
        return 2
    except KeyboardInterrupt:
        interrupted = True  # main() prints the one line; plugin failures found so far stay unreported
        raise
    except Exception as error:  # a Rust library's I/O error (a full disk while safetensors writes) is an OSError
        failure = _os_error_in(error)
        if failure is None or args.debug:
            raise
        _report_plugin_failures()
        _print_error(_describe(failure), as_json=args.json)
        return 2
    finally:
        if not interrupted:
            _report_plugin_failures()


def _os_error_in(error: BaseException) -> OSError | None:
    """The file-system error behind ``error`` (``... (os error 28)`` in a library's message), if any."""
    if "os error" not in str(error):
        return None
    from zoo.weights import os_error_of  # imports torch: only on this path

    return os_error_of(error)


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and not isinstance(error, ZooError):
        from zoo.limits import brief

        where = f" {brief(error.filename)}" if error.filename else ""
        writing = error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)
        return f"{'cannot write' if writing else 'cannot access'}{where}: {error.strerror or error}"
    message = str(error)
    cause = error.__cause__
    if cause is not None and not isinstance(cause, ZooError | OSError) and "--debug" not in message:
        message += " (run with --debug for the traceback)"  # an error of plugin or library code, wrapped
    return message


if __name__ == "__main__":
    console()
