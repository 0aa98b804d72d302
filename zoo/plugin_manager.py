"""Plugin discovery and loading: built-ins, entry points of group ``zoo``, and named modules or files.

Loading is lazy (first use of the registry), happens once per process, and is per plugin: a plugin
that fails to import is recorded with its name, distribution and error, and the others keep working.
``ZOO_STRICT_PLUGINS=1`` (or ``strict=True``) makes such a failure fatal. Other switches:

- ``ZOO_PLUGINS``: comma-separated extra plugin modules or ``.py`` files, loaded like ``--plugin``.
- ``ZOO_DISABLE_PLUGINS``: comma-separated plugin names (built-in module or entry point) to skip.
- ``ZOO_TRACE_PLUGINS=1``: print every hook call (pluggy's hook-call monitoring) to stderr.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pluggy

from zoo import hookspecs
from zoo.errors import PluginError

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "PluginFailure",
    "PluginHost",
    "PluginInfo",
    "env_flag",
]

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
    """A loaded plugin: its name, where it came from (builtin/entrypoint/config/cli/env) and its package."""

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
        self.blocked = set(_env_list("ZOO_DISABLE_PLUGINS"))
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
        added += [self.load(name, origin="cli") for name in extra]
        return [plugin for plugin in added if plugin is not None]

    def load_entry_points(self) -> list[ModuleType]:
        """Load every entry point of group ``zoo`` one by one, recording failures."""
        added = []
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = entry_point.dist.name if entry_point.dist else ""
            version = entry_point.dist.version if entry_point.dist else ""
            if entry_point.name in self.blocked or self.pm.get_plugin(entry_point.name) is not None:
                continue
            try:
                plugin = entry_point.load()
                self._register(plugin, entry_point.name)
            except Exception as error:  # noqa: BLE001 - a broken plugin must not take the host down
                self._fail(entry_point.name, "entrypoint", dist, error)
                continue
            self.loaded.append(PluginInfo(entry_point.name, "entrypoint", dist, version))
            added.append(plugin)
        return added

    def load(self, name: str, *, origin: str) -> ModuleType | None:
        """Load one plugin by module name or ``.py`` path; ``None`` if blocked, known or failed."""
        if name in self.blocked or self.pm.get_plugin(name) is not None:
            return None
        try:
            module = _import_module_or_file(name)
            self._register(module, name)
        except Exception as error:  # noqa: BLE001 - recorded, re-raised only in strict mode
            self._fail(name, origin, "", error)
            return None
        self.loaded.append(PluginInfo(name, origin))
        return module

    def _register(self, plugin: object, name: str) -> None:
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as error:
            self.pm.unregister(plugin)
            raise PluginError(
                f"plugin {name!r} defines unknown hooks: {error}; "
                f"known hooks: {', '.join(sorted(h for h in dir(self.pm.hook) if h.startswith('zoo_')))}"
            ) from error

    def _fail(self, name: str, origin: str, dist: str, error: BaseException) -> None:
        failure = PluginFailure(
            name=name,
            origin=origin,
            distribution=dist,
            error=f"{type(error).__name__}: {error}",
            traceback=traceback.format_exc(),
        )
        self.failures.append(failure)
        if self.strict:
            where = f" (distribution {dist})" if dist else ""
            raise PluginError(f"plugin {name!r}{where} failed to load: {failure.error}") from error

    def unreported_warnings(self) -> list[str]:
        """The warnings not handed out before (a config's plugins may fail after the first report)."""
        lines = self.warnings()[self._reported :]
        self._reported += len(lines)
        return lines

    def warnings(self) -> list[str]:
        """One line per failed plugin, for the CLI to print to stderr."""
        return [
            f"zoo: plugin {f.name!r} ({f.origin}{', ' + f.distribution if f.distribution else ''}) "
            f"failed to load and was skipped: {f.error}"
            for f in self.failures
        ]


def _import_module_or_file(name: str) -> ModuleType:
    path = Path(name)
    if name.endswith(".py") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"plugin file {name!r} does not exist")
        module_name = "zoo_local_plugin_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve()))
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
