"""Bounded YAML reading: ``yaml.SafeLoader`` plus the limits untrusted files need.

PyYAML's safe loader runs no code, but it will happily read a FIFO forever, build a billion-laughs
document (aliases of aliases, which any later walk or ``repr`` expands), recurse until
``RecursionError`` on deep nesting, let the last of two duplicate keys win silently, and hand a
5000-digit integer to ``int()`` (a ``ValueError`` past Python's digit limit). Here every one of those
is a one-line :class:`~zoo.sdk.limits.InputLimitError` / ``ConfigError`` naming the file and line,
raised before the value reaches zoo:

- only regular files are opened (opened non-blocking, so a FIFO cannot hang), up to ``MAX_YAML_BYTES``;
- nesting deeper than ``MAX_YAML_DEPTH`` and documents larger than ``MAX_YAML_NODES`` nodes once
  every alias is expanded are refused while composing, before any Python object is built;
- recursive aliases (``&a [*a]``) are refused;
- a duplicate key in one mapping is an error naming the key and both lines;
- integers must fit in 64 bits.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from zoo.errors import ConfigError
from zoo.sdk.limits import InputLimitError, brief

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "load_yaml_file", "load_yaml_text", "read_text_file"]

MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 200_000
_MAX_INT_CHARS = 32  # 2**63 has 19 digits; underscores, sign and base prefixes fit in 32
_MERGE_TAG = "tag:yaml.org,2002:merge"


def read_text_file(path: str | os.PathLike, *, what: str = "config file", limit: int = MAX_YAML_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes, or a ``ConfigError`` naming it.

    The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor, so a
    FIFO, a device (``/dev/zero``) or a directory is refused without blocking or reading.
    """
    where = f"{what} {str(path)!r}"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError as error:
        raise ConfigError(f"{where} does not exist") from error
    except IsADirectoryError as error:
        raise ConfigError(f"{where} is a directory, not a file") from error
    except OSError as error:
        raise ConfigError(f"cannot read {where}: {error.strerror or error}") from error
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{where} is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise InputLimitError(f"{where} is not a regular file (a FIFO, socket or device is refused)")
        if info.st_size > limit:
            raise InputLimitError(f"{where} is {info.st_size:,} bytes; files over {limit:,} bytes are refused")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise ConfigError(f"cannot read {where}: {error.strerror or error}") from error
    finally:
        os.close(fd)
    if len(data) > limit:  # the file grew after fstat
        raise InputLimitError(f"{where} is over {limit:,} bytes; larger files are refused")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{where} is not UTF-8 text (byte {error.start})") from error


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` with depth, size, duplicate-key and integer checks (see the module docstring)."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}
        self._open_anchors: set[str] = set()

    def _where(self, node_or_mark: Any) -> str:
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        return f"{self.source}: line {mark.line + 1}" if mark is not None else self.source

    def _add_nodes(self, count: int, mark: Any) -> None:
        self._nodes += count
        if self._nodes > MAX_YAML_NODES:
            raise InputLimitError(
                f"{self._where(mark)}: the document expands to more than {MAX_YAML_NODES:,} nodes "
                "(aliases are counted as copies); refused as a possible billion-laughs attack"
            )

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self._open_anchors:
                raise ConfigError(
                    f"{self._where(event.start_mark)}: alias *{event.anchor} refers to a node that contains it; "
                    "recursive aliases are refused"
                )
            anchored = self.anchors.get(event.anchor)
            if anchored is not None:
                self._add_nodes(self._expanded_size(anchored, set(), event.start_mark), event.start_mark)
            return super().compose_node(parent, index)
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise InputLimitError(
                    f"{self._where(event.start_mark)}: nesting deeper than {MAX_YAML_DEPTH} levels is refused"
                )
            if anchor is not None:
                self._open_anchors.add(anchor)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open_anchors.discard(anchor)
        if node is not None:
            self._add_nodes(1, node.start_mark)
        return node

    def _expanded_size(self, node: Node, active: set[int], mark: Any) -> int:
        """Nodes in ``node`` with every alias expanded; a cycle is an error (``&a [*a]``)."""
        key = id(node)
        if key in self._sizes:
            return self._sizes[key]
        if key in active:
            raise ConfigError(f"{self._where(mark)}: a recursive alias (a node that contains itself) is refused")
        active.add(key)
        size = 1
        if isinstance(node, SequenceNode):
            for child in node.value:
                size += self._expanded_size(child, active, mark)
                if size > MAX_YAML_NODES:
                    break
        elif isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                size += self._expanded_size(key_node, active, mark) + self._expanded_size(value_node, active, mark)
                if size > MAX_YAML_NODES:
                    break
        active.discard(key)
        self._sizes[key] = size
        return size

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # '<<' merges are overridden by explicit keys on purpose
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # unhashable key: the base class reports it
                if first is not None:
                    raise ConfigError(
                        f"{self._where(key_node)}: duplicate key {brief(key)} (first set on line {first}); "
                        "a mapping may set each key once"
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_bounded_int(self, node: ScalarNode) -> int:
        text = str(node.value)
        if len(text) > _MAX_INT_CHARS:
            raise InputLimitError(f"{self._where(node)}: an integer of {len(text)} characters is refused")
        value = self.construct_yaml_int(node)
        if not -(2**63) <= value < 2**63:
            raise InputLimitError(f"{self._where(node)}: integer {brief(value)} does not fit in 64 bits")
        return value


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_bounded_int)


def load_yaml_text(text: str, source: str = "<yaml>") -> Any:
    """Parse YAML ``text`` with the bounded safe loader; any problem is a ``ConfigError`` naming ``source``."""
    if len(text) > MAX_YAML_BYTES:
        raise InputLimitError(f"{source}: {len(text):,} characters of YAML; over {MAX_YAML_BYTES:,} is refused")
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, source)  # the reader already refuses some characters here
        return loader.get_single_data()
    except ConfigError:
        raise
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML: {_one_line(error)}") from error
    except RecursionError as error:  # a last resort: the depth limit should always trigger first
        raise InputLimitError(f"{source}: YAML nested too deeply") from error
    except Exception as error:  # PyYAML's constructors raise ValueError, IndexError... on bad scalars
        raise ConfigError(f"{source}: invalid YAML value ({type(error).__name__}: {brief(str(error))})") from error
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(path: str | os.PathLike, *, what: str = "config file") -> Any:
    """Read and parse a YAML file within every limit of this module.

    Example:
        >>> load_yaml_file("model.yaml")["model"]["vision"]
        'tiny-clip'
    """
    return load_yaml_text(read_text_file(path, what=what), source=str(Path(path)))


def _one_line(error: yaml.YAMLError) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."
