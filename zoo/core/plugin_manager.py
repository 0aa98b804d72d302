"""Plugin discovery and loading: built-ins, entry points of group ``zoo``, and named modules or files.

Loading is lazy (first use of the registry), happens once per process, and is per plugin: a plugin
that fails to import is recorded with its name, distribution and error, and the others keep working.
``ZOO_STRICT_PLUGINS=1`` (or ``strict=True``) makes such a failure fatal. Other switches:

- ``ZOO_PLUGINS``: comma-separated extra plugin modules or ``.py`` files, loaded like ``--plugin``.
- ``ZOO_DISABLE_PLUGINS``: comma-separated plugin names (built-in module or entry point) to skip.
- ``ZOO_TRACE_PLUGINS=1``: print every hook call (pluggy's hook-call monitoring) to stderr.

A plugin named twice (an entry point that a config or ``--plugin`` names again) is loaded once. An
unknown (misspelled) hook fails the plugin with a did-you-mean; a module without any
``@zoo.hookimpl`` loads with a warning. ``SystemExit`` and ``KeyboardInterrupt`` raised by plugin code
at import are recorded like any other failure, with the plugin's name; a Ctrl-C of the user (a SIGINT
that arrives while plugin code runs, e.g. a hung import) interrupts, as anywhere else. A plugin reference is a file
when it ends in ``.py`` or holds a path separator, and a module name otherwise (a file in the working
directory never shadows a module name).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from zoo.errors import PluginError, close_matches
from zoo.sdk import hookspecs

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "InterruptWatch",
    "PluginFailure",
    "PluginHost",
    "PluginInfo",
    "env_flag",
    "is_plugin_file",
]

# what plugin code may raise that must not end the host process (``GeneratorExit`` is left alone)
PLUGIN_ESCAPES: tuple[type[BaseException], ...] = (Exception, SystemExit, KeyboardInterrupt)


class InterruptWatch:
    """Tells the user's Ctrl-C from a ``KeyboardInterrupt`` that plugin code raises itself.

    While active (a ``with`` block in the main thread), a SIGINT is noted before the usual handler
    raises ``KeyboardInterrupt``; :meth:`by_user` then says whether a caught one came from a signal.
    Where SIGINT is ignored or has no Python handler, nothing changes.
    """

    def __init__(self) -> None:
        self.seen = False
        self._previous: Any = None

    def __enter__(self) -> InterruptWatch:
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGINT)
            if callable(current):
                self._previous = current
                signal.signal(signal.SIGINT, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _note(self, signum: int, frame: Any) -> None:
        self.seen = True
        self._previous(signum, frame)

    def by_user(self, error: BaseException) -> bool:
        """Whether ``error`` is an interrupt a SIGINT caused while the watch was on."""
        return isinstance(error, KeyboardInterrupt) and self.seen


ENTRY_POINT_GROUP = "zoo"
BUILTIN_PLUGINS: tuple[str, ...] = (
    "zoo_plugins.clip",
    "zoo_plugins.siglip",
    "zoo_plugins.dinov2",
    "zoo_plugins.fused",
    "zoo_plugins.timm_towers",
    "zoo_plugins.open_clip_towers",
    "zoo_plugins.projectors",
    "zoo_plugins.qwen",
    "zoo_plugins.qwen1",
    "zoo_plugins.minicpm",
    "zoo_plugins.llama",
    "zoo_plugins.hf_causal_lm",
)


def env_flag(name: str) -> bool:
    """True when the environment variable is set to 1/true/yes/on."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: its name, where it came from and its package.

    ``origin``: ``builtin``, ``entrypoint``, ``env`` (``ZOO_PLUGINS``), ``--plugin`` (the command line) or
    ``config`` (a config's ``plugins:`` list, or ``plugins=`` in the Python API).
    """

    name: str
    origin: str
    distribution: str = ""
    version: str = ""


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, with the error it raised."""

    name: str
    origin: str
    distribution: str
    error: str
    traceback: str


class PluginHost:
    """Owns the pluggy ``PluginManager`` and records which plugins loaded and which failed."""

    def __init__(self, *, strict: bool | None = None) -> None:
        self.strict = env_flag("ZOO_STRICT_PLUGINS") if strict is None else strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.loaded: list[PluginInfo] = []
        self.failures: list[PluginFailure] = []
        self.notes: list[str] = []
        self.blocked = set(_env_list("ZOO_DISABLE_PLUGINS"))
        self.skipped: list[str] = []  # plugins that ZOO_DISABLE_PLUGINS kept from loading, in load order
        self._reported = 0
        if env_flag("ZOO_TRACE_PLUGINS"):
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()

    # -- loading -------------------------------------------------------------------------------
    def load_defaults(self, extra: tuple[str, ...] = ()) -> list[ModuleType]:
        """Load built-ins, entry points, ``ZOO_PLUGINS`` and ``extra``; return the new plugin objects."""
        added = [self.load(name, origin="builtin") for name in BUILTIN_PLUGINS]
        added += self.load_entry_points()
        added += [self.load(name, origin="env") for name in _env_list("ZOO_PLUGINS")]
        added += [self.load(name, origin="--plugin") for name in extra]
        return [plugin for plugin in added if plugin is not None]

    def load_entry_points(self) -> list[ModuleType]:
        """Load every entry point of group ``zoo`` one by one, recording failures."""
        added = []
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = entry_point.dist.name if entry_point.dist else ""
            version = entry_point.dist.version if entry_point.dist else ""
            if self._is_skipped(entry_point.name) or self.pm.get_plugin(entry_point.name) is not None:
                continue
            with InterruptWatch() as watch:
                try:
                    plugin = entry_point.load()
                    if self.pm.is_registered(plugin):
                        continue  # the same module under a second name: loaded once
                    self._register(plugin, entry_point.name)
                except PLUGIN_ESCAPES as error:  # a broken plugin must not take the host down
                    if watch.by_user(error):
                        raise
                    self._fail(entry_point.name, "entrypoint", dist, error)
                    continue
            self.loaded.append(PluginInfo(entry_point.name, "entrypoint", dist, version))
            added.append(plugin)
        return added

    def load(self, name: str, *, origin: str) -> ModuleType | None:
        """Load one plugin by module name or ``.py`` path; ``None`` if blocked, known, failed or failed before."""
        if self._is_skipped(name) or self.pm.get_plugin(name) is not None:
            return None
        if any(failure.name == name for failure in self.failures):
            return None  # failed once in this process: tried and reported once
        with InterruptWatch() as watch:
            try:
                module = _import_module_or_file(name)
                if self.pm.is_registered(module):
                    return None  # named twice (entry point + --plugin, or two spellings of one file): loaded once
                self._register(module, name)
            except PLUGIN_ESCAPES as error:  # recorded, re-raised only in strict mode
                if watch.by_user(error):
                    raise
                self._fail(name, origin, _distribution_of(name), error)
                return None
        self.loaded.append(PluginInfo(name, origin, "" if origin == "builtin" else _distribution_of(name)))
        return module

    def _is_skipped(self, name: str) -> bool:
        """Whether ``ZOO_DISABLE_PLUGINS`` names ``name`` (recorded, for errors about its missing names)."""
        if name not in self.blocked:
            return False
        if name not in self.skipped:
            self.skipped.append(name)
        return True

    def disabled_note(self) -> str:
        """A tail for a "not registered" error when ``ZOO_DISABLE_PLUGINS`` kept plugins out, else ``""``."""
        if not self.skipped:
            return ""
        names = ", ".join(repr(name) for name in self.skipped)
        if len(self.skipped) == 1:
            return f"; note: ZOO_DISABLE_PLUGINS skips plugin {names} (its components are unknown until it is enabled)"
        return (
            f"; note: ZOO_DISABLE_PLUGINS skips plugins {names} (their components are unknown until they are enabled)"
        )

    def _register(self, plugin: object, name: str) -> None:
        self.pm.register(plugin, name=name)
        known = known_hooks()
        unknown = sorted({caller.name for caller in self.pm.get_hookcallers(plugin) or () if caller.name not in known})
        if unknown:
            self.pm.unregister(plugin)
            hints = []
            for hook in unknown:
                close = close_matches(hook, known, limit=1)
                hints.append(f"{hook!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise PluginError(
                f"plugin {name!r} implements unknown hook {', '.join(hints)}; "
                f"zoo's hooks are {', '.join(sorted(known))}"
            )
        if not self.pm.get_hookcallers(plugin):
            unmarked = sorted(n for n in known if callable(getattr(plugin, n, None)))
            why = (
                f"{', '.join(unmarked)} lack the @zoo.hookimpl decorator"
                if unmarked
                else "it has no @zoo.hookimpl functions"
            )
            self.notes.append(f"zoo: warning: plugin {name!r} registers nothing: {why}")

    def _fail(self, name: str, origin: str, dist: str, error: BaseException) -> None:
        failure = PluginFailure(
            name=name,
            origin=origin,
            distribution=dist,
            error=f"{type(error).__name__}: {_short(str(error))}",
            traceback=traceback.format_exc(),
        )
        self.failures.append(failure)
        if self.strict:
            where = f" (distribution {dist})" if dist else ""
            raise PluginError(f"plugin {name!r}{where} failed to load: {failure.error}") from error

    def disable(self, name: str, error: BaseException, *, origin: str = "hook") -> None:
        """Unregister a plugin that loaded but then failed (its hook raised, or its names clash).

        It moves from ``loaded`` to ``failures`` keeping its origin and distribution; strict mode raises.
        """
        info = next((p for p in self.loaded if p.name == name), None)
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        if info is not None:
            self.loaded.remove(info)
        self._fail(name, info.origin if info else origin, info.distribution if info else "", error)

    def describe(self, name: str) -> str:
        """``plugin 'x' (distribution pkg 1.0)``: how messages name a plugin."""
        info = next((p for p in self.loaded if p.name == name), None)
        dist = info.distribution if info else _distribution_of(name)
        version = f" {info.version}" if info and info.version else ""
        return f"plugin {name!r}" + (f" (distribution {dist}{version})" if dist else "")

    def unreported_warnings(self) -> list[str]:
        """The warnings not handed out before (a config's plugins may fail after the first report)."""
        lines = self.warnings()[self._reported :]
        self._reported += len(lines)
        return lines

    def warnings(self) -> list[str]:
        """One line per failed plugin (and per plugin that registers nothing), for stderr."""
        return [
            f"zoo: plugin {f.name!r} ({f.origin}{', ' + f.distribution if f.distribution else ''}) "
            f"failed to load and was skipped: {f.error}"
            for f in self.failures
        ] + self.notes


def known_hooks() -> set[str]:
    """Names of the hooks zoo declares (from ``zoo.sdk.hookspecs``, not from what plugins implement)."""
    return {name for name, value in inspect.getmembers(hookspecs) if name.startswith("zoo_") and callable(value)}


def is_plugin_file(name: str) -> bool:
    """A plugin reference names a file when it ends in ``.py`` or holds a path separator."""
    return name.endswith(".py") or "/" in name or os.sep in name


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.lru_cache(maxsize=1)
def _module_distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def _distribution_of(name: str) -> str:
    """The installed distribution that provides module ``name`` (``""`` for files and unknown modules)."""
    if is_plugin_file(name):
        return ""
    try:
        found = _module_distributions().get(name.split(".", 1)[0], [])
    except Exception:  # noqa: BLE001 - broken metadata of another package must not matter here
        return ""
    return ", ".join(sorted(set(found)))


def _import_module_or_file(name: str) -> ModuleType:
    if is_plugin_file(name):
        path = Path(name).expanduser()
        if path.is_dir():
            raise PluginError(
                f"plugin {name!r} is a directory; name a .py file, or a package importable from PYTHONPATH by its "
                "module name"
            )
        if not path.is_file():
            raise FileNotFoundError(f"plugin file {name!r} does not exist")
        module_name = "zoo_local_plugin_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve()))
        if module_name in sys.modules:  # the same file named twice (two spellings): one module
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import plugin file {name!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        return module
    return importlib.import_module(name)
