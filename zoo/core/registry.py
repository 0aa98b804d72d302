"""The component registry: specs registered by plugins, looked up and listed like ``timm.list_models``.

The registry is filled lazily, once, the first time it is needed (``get_registry()``). Extra plugin
modules (a config's ``plugins:``, ``--plugin``) can be added later; only their hooks run then.

A plugin's registrations are staged and checked (``zoo.sdk.specs.spec_problem``) before any of them
is added, so a plugin is in or out as a whole. A name registered by two plugins disables both
(``zoo plugins`` lists them as failed, with their distributions) and every other command keeps
working; when one of the two is a built-in, only the other one is disabled, since zoo's own names
are reserved. Strict mode (``ZOO_STRICT_PLUGINS=1``) makes any of this fatal.
"""

from __future__ import annotations

import builtins
import fnmatch
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from zoo.core.plugin_manager import BUILTIN_PLUGINS, PLUGIN_ESCAPES, InterruptWatch, PluginHost
from zoo.errors import ConfigError, DuplicateNameError, PluginError, UnknownNameError, suggest
from zoo.sdk.limits import brief
from zoo.sdk.specs import (
    MAX_NAME_LENGTH,
    SLOTS,
    ComponentSpec,
    LanguageModelSpec,
    ProjectorSpec,
    VisionTowerSpec,
    spec_problem,
)
from zoo.sdk.yaml_io import load_yaml_file

__all__ = [
    "KIND_TITLES",
    "NameClashError",
    "Registry",
    "get_registry",
    "list_components",
    "loaded_registry",
    "natural_key",
    "registry_yaml_path",
    "reset_registry",
]

KIND_TITLES = {"vision": "vision tower", "projector": "projector", "lm": "language model"}
_SPEC_TYPES = {"vision": VisionTowerSpec, "projector": ProjectorSpec, "lm": LanguageModelSpec}
_HOOKS = {
    "vision": "zoo_register_vision_towers",
    "projector": "zoo_register_projectors",
    "lm": "zoo_register_language_models",
}


class NameClashError(DuplicateNameError):
    """Two plugins registered one name; ``plugins`` holds both plugin names (first, second)."""

    def __init__(self, message: str, plugins: tuple[str, str]) -> None:
        super().__init__(message)
        self.plugins = plugins


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``qwen2-7b`` before ``qwen2-72b`` and ``mlp2x`` before ``mlp10x``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def registry_yaml_path() -> Path:
    """Path of the shipped ``registry.yaml`` (named compositions and bench grids)."""
    return Path(__file__).resolve().parent.parent / "registry.yaml"


class Registry:
    """Specs by kind and name, plus the named compositions of ``registry.yaml``."""

    def __init__(self, host: PluginHost) -> None:
        self.host = host
        self._specs: dict[str, dict[str, ComponentSpec]] = {kind: {} for kind in SLOTS}
        self._compositions: dict[str, dict[str, Any]] | None = None

    # -- filling --------------------------------------------------------------------------------
    def collect(self, plugin: object) -> None:
        """Run the registration hooks of one plugin and add its specs, all or none."""
        pm = self.host.pm
        others = [p for p in pm.get_plugins() if p is not plugin]
        plugin_name = pm.get_name(plugin) or repr(plugin)
        staged: list[ComponentSpec] = []
        for kind, hook_name in _HOOKS.items():
            caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
            caller(register=self._register_fn(kind, plugin_name, staged))
        names = [(spec.kind, spec.name) for spec in staged]
        for spec in staged:
            if names.count((spec.kind, spec.name)) > 1:
                raise PluginError(f"plugin {plugin_name!r} registers {KIND_TITLES[spec.kind]} {spec.name!r} twice")
            self._check_free(spec, plugin_name)
        for spec in staged:
            self.add(spec, plugin=plugin_name)

    def _register_fn(self, kind: str, plugin_name: str, staged: list[ComponentSpec]):
        def register(spec: ComponentSpec) -> None:
            if not isinstance(spec, ComponentSpec):
                raise PluginError(
                    f"plugin {plugin_name!r} passed {brief(spec)} to {_HOOKS[kind]}; "
                    f"expected a {_SPEC_TYPES[kind].__name__}"
                )
            if spec.kind != kind:
                raise PluginError(
                    f"plugin {plugin_name!r} passed a {type(spec).__name__} "
                    f"({brief(spec.name)}) to {_HOOKS[kind]}; expected a {_SPEC_TYPES[kind].__name__}"
                )
            problem = spec_problem(spec)
            if problem is not None:
                raise PluginError(f"plugin {plugin_name!r} registered a bad {type(spec).__name__}: {problem}")
            staged.append(spec)

        return register

    def _check_free(self, spec: ComponentSpec, plugin: str) -> None:
        table = self._specs[spec.kind]
        if spec.name in table:
            first = table[spec.name].plugin
            raise NameClashError(
                f"{KIND_TITLES[spec.kind]} {spec.name!r} is registered by two plugins: "
                f"{self.host.describe(first)} and {self.host.describe(plugin)}; "
                "uninstall or rename one, or skip one with ZOO_DISABLE_PLUGINS",
                (first, plugin),
            )

    def add(self, spec: ComponentSpec, *, plugin: str = "") -> None:
        """Add one spec; a name that is already registered is an error naming both plugins."""
        if not isinstance(spec, ComponentSpec) or spec.kind not in SLOTS:
            raise PluginError(
                f"plugin {plugin!r} registered {brief(spec)}; expected a VisionTowerSpec, ProjectorSpec or "
                "LanguageModelSpec"
            )
        problem = spec_problem(spec)
        if problem is not None:
            raise PluginError(f"plugin {plugin!r} registered a bad {type(spec).__name__}: {problem}")
        plugin = spec.plugin or plugin
        self._check_free(spec, plugin)
        object.__setattr__(spec, "plugin", plugin)
        self._specs[spec.kind][spec.name] = spec

    def forget_plugin(self, plugin: str) -> None:
        """Drop every spec a plugin registered (it failed half-way through its hooks)."""
        for table in self._specs.values():
            for name in [n for n, spec in table.items() if spec.plugin == plugin]:
                del table[name]

    def remove(self, kind: str, name: str) -> None:
        """Forget one spec (used by tests that register throwaway components)."""
        self._specs[kind].pop(name, None)

    # -- lookup ---------------------------------------------------------------------------------
    def resolve(self, kind: str, name: str, *, key: str = "") -> tuple[ComponentSpec, dict[str, Any]]:
        """Find the spec for ``name`` and the config values its name implies (pattern groups).

        Raises ``UnknownNameError`` naming ``key``, the bad name, close matches and the listing command.
        ``key`` may start with the file it is in (``"model.yaml: model.lm.name"``).
        """
        path = key.rsplit(": ", 1)[-1] or None  # the error's key path, without the file
        if kind not in SLOTS:
            raise ConfigError(f"unknown component kind {kind!r}; {suggest(kind, SLOTS)}")
        table = self._specs[kind]
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"{key or kind}: expected a {KIND_TITLES[kind]} name (a string), got {brief(name)}", key=path
            )
        if len(name) > MAX_NAME_LENGTH:
            raise ConfigError(
                f"{key or kind} = {brief(name)} is not a name (over {MAX_NAME_LENGTH} characters)", key=path
            )
        if name in table and not table[name].pattern:
            return table[name], {}
        for spec in table.values():
            implied = spec.match(name)
            if implied is not None:
                return spec, implied
        where = f"{key} = {name!r}" if key else repr(name)  # at most MAX_NAME_LENGTH characters
        if ":" in name:
            prefix = name.split(":", 1)[0] + ":"
            sources = sorted({s.name.split(":", 1)[0] + ":" for s in table.values() if s.pattern and ":" in s.name})
            if prefix not in sources:
                raise UnknownNameError(
                    f"{where}: unknown source {prefix!r} for a {KIND_TITLES[kind]}; valid sources: "
                    f"{', '.join(sources) or 'none registered'} (see 'zoo list {kind}')",
                    key=path,
                )
        plain = [n for n, s in table.items() if not s.pattern]
        forms = [n for n, s in table.items() if s.pattern]
        also = f"; names of the form {', '.join(forms)} work too" if forms else ""
        raise UnknownNameError(
            f"{where} is not a registered {KIND_TITLES[kind]}; {suggest(name, plain)}{also} "
            f"(see 'zoo list {kind}'){self.missing_plugins_note()}",
            key=path,
        )

    def missing_plugins_note(self) -> str:
        """Why a name may be missing: plugins that failed to load, and plugins ``ZOO_DISABLE_PLUGINS`` skipped."""
        failed = "".join(f"; note: plugin {f.name!r} failed to load ({f.error})" for f in self.host.failures)
        return failed + self.host.disabled_note()

    def get(self, kind: str, name: str) -> ComponentSpec:
        """The spec registered under exactly ``name`` (pattern specs by their display name)."""
        return self.resolve(kind, name)[0]

    def list(
        self,
        kind: str | None = None,
        pattern: str | Iterable[str] = "*",
        exclude: str | Iterable[str] = (),
    ) -> list[ComponentSpec]:
        """Specs of ``kind`` (all kinds if ``None``) whose names match any wildcard of ``pattern``."""
        kinds = SLOTS if kind is None else (kind,)
        includes = [pattern] if isinstance(pattern, str) else list(pattern)
        excludes = [exclude] if isinstance(exclude, str) else list(exclude)
        found = []
        for k in kinds:
            for name, spec in self._specs[k].items():
                if any(fnmatch.fnmatchcase(name, p) for p in includes) and not any(
                    fnmatch.fnmatchcase(name, p) for p in excludes
                ):
                    found.append(spec)
        return sorted(found, key=lambda s: (SLOTS.index(s.kind), natural_key(s.name)))

    # -- compositions ---------------------------------------------------------------------------
    @property
    def compositions(self) -> dict[str, dict[str, Any]]:
        """Named compositions from ``registry.yaml`` (raw mappings, parsed by ``zoo.core.config``)."""
        if self._compositions is None:
            data = _read_registry_yaml()
            self._compositions = dict(data.get("models") or {})
        return self._compositions

    def list_compositions(self, pattern: str = "*") -> builtins.list[str]:
        """Names of compositions matching the wildcard, naturally sorted."""
        return sorted((n for n in self.compositions if fnmatch.fnmatchcase(n, pattern)), key=natural_key)


def _read_registry_yaml() -> dict[str, Any]:
    path = registry_yaml_path()
    data = load_yaml_file(path, what="the shipped registry") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


_STATE: dict[str, Any] = {}


def get_registry(plugins: Sequence[str] = (), *, strict: bool | None = None, origin: str = "config") -> Registry:
    """The process-wide registry, loading plugins on first use and ``plugins`` on demand.

    ``origin`` is how ``zoo plugins`` and warnings say where ``plugins`` came from (``config``: a config's
    ``plugins:`` list or the Python API; the CLI passes ``--plugin``).

    Example:
        >>> reg = get_registry()
        >>> [s.name for s in reg.list("vision", "tiny-*")][:1]
        ['tiny-clip']
    """
    registry: Registry | None = _STATE.get("registry")
    if registry is None:
        host = PluginHost(strict=strict)
        host.load_defaults()
        registry = Registry(host)
        _collect_each(registry, host.pm.get_plugins())
        _STATE["registry"] = registry
    new = [p for p in (registry.host.load(name, origin=origin) for name in plugins) if p is not None]
    if new:
        _collect_each(registry, new)
    return registry


def _collect_each(registry: Registry, plugins: Iterable[object]) -> None:
    host = registry.host
    for plugin in plugins:
        name = host.pm.get_name(plugin) or repr(plugin)
        with InterruptWatch() as watch:
            try:
                registry.collect(plugin)
            except NameClashError as error:
                if host.strict:
                    raise
                first = error.plugins[0]
                if first != name and first not in BUILTIN_PLUGINS:  # zoo's own names stay; a third party's go
                    registry.forget_plugin(first)
                    host.disable(first, error)
                host.disable(name, error)
            except PLUGIN_ESCAPES as error:  # a hook that raises, even SystemExit, is reported, not fatal
                if watch.by_user(error):  # the user's Ctrl-C during a hook that hangs
                    raise
                registry.forget_plugin(name)
                host.disable(name, error)


def loaded_registry() -> Registry | None:
    """The registry if it was loaded in this process, else ``None`` (loads nothing)."""
    return _STATE.get("registry")


def reset_registry() -> None:
    """Forget the loaded registry (tests use it after changing plugins or environment)."""
    _STATE.clear()


def list_components(
    kind: str | None = None, pattern: str | Iterable[str] = "*", exclude: str | Iterable[str] = ()
) -> list[str]:
    """Registered component names, like ``timm.list_models``.

    Example:
        >>> list_components("projector", "mlp*")[:1]
        ['mlp2x-gelu']
    """
    return [spec.name for spec in get_registry().list(kind, pattern, exclude)]
