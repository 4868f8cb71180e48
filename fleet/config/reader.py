"""Reading a scenario file as untrusted input: a bounded, strict YAML reader.

The file must be a regular file of at most MAX_SCENARIO_BYTES; YAML nesting,
alias expansion and integers are bounded while parsing, before anything is
built, and a duplicate key is an error rather than silently the last one.
"""

from __future__ import annotations

import os
import stat
from typing import Any, NoReturn

import yaml

from clients.errors import InputError, excerpt


# Bounds on a scenario file, checked while it is read, before any value is built.
MAX_SCENARIO_BYTES = 1 << 20   # a scenario is about 2 KB
MAX_YAML_DEPTH = 20            # a scenario nests 3 deep (fleet.profiles.rpi4)
MAX_YAML_NODES = 10_000        # values after YAML aliases are expanded (a scenario has about 60)
MAX_INT = 2**63 - 1            # every integer fits in 64 bits


# --------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (plain PyYAML keeps the last one silently) and bounds the document.

    Nesting is bounded while composing (PyYAML composes recursively, so deep
    nesting would end in RecursionError); the size of the document with every
    alias expanded is measured on the composed node graph, before any value is
    built (an anchor bomb of 300 bytes expands to a billion values); integers
    must fit in 64 bits (Python refuses to parse more than 4,300 digits anyway).
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _TooBig(f"nesting deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        _check_expansion(node)
        return node


class _TooBig(yaml.constructor.ConstructorError):
    """A bound of _StrictLoader was exceeded (reported as a YAML error, not a syntax error)."""

    def __init__(self, problem: str, mark) -> None:
        super().__init__(None, None, problem, mark)


def _check_expansion(root: yaml.Node | None) -> None:
    """Fail if `root`, with its aliases expanded, nests too deep, holds too many nodes or contains itself.

    Each node's expanded size and height are computed once (an alias is the
    very node it names), so measuring takes time linear in the file.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes once expanded, height)
    open_nodes: set[int] = set()

    def fail(problem: str, node: yaml.Node) -> NoReturn:
        raise _TooBig(problem, node.start_mark)

    def visit(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in open_nodes:
            fail("an alias refers to a node that contains it", node)
        if key not in measured:
            open_nodes.add(key)
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            else:
                children = []
            size, height = 1, 1
            for child in children:
                child_size, child_height = visit(child, depth + 1)
                size, height = size + child_size, max(height, child_height + 1)
                if size > MAX_YAML_NODES:
                    break
            open_nodes.discard(key)
            measured[key] = (size, height)
        size, height = measured[key]
        if size > MAX_YAML_NODES:
            fail(f"the document expands to more than {MAX_YAML_NODES:,} values (YAML aliases)", node)
        if depth + height - 1 > MAX_YAML_DEPTH:
            fail(f"nesting deeper than {MAX_YAML_DEPTH} levels (YAML aliases)", node)
        return size, height

    if root is not None:
        visit(root, 1)


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)) or key is None:
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {excerpt(key, 40)}",
                                                        key_node.start_mark)
            seen.add(key)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep=True)


def _bounded_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    """A YAML integer that fits in 64 bits; longer text is refused before it is parsed."""
    if len(node.value) > 70:  # 64 binary digits with a sign, a prefix and a few underscores
        raise _TooBig(f"integer of {len(node.value)} characters is too large (integers must fit in 64 bits)",
                      node.start_mark)
    value = loader.construct_yaml_int(node)
    if not -MAX_INT - 1 <= value <= MAX_INT:
        raise _TooBig(f"integer {excerpt(value, 30)} does not fit in 64 bits", node.start_mark)
    return value


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)


def read_scenario_text(path: str | os.PathLike) -> str:
    """The text of the scenario file at `path`: a regular file of at most MAX_SCENARIO_BYTES, UTF-8.

    The file's type is checked before it is opened (a FIFO would block the
    open, /dev/zero would never end), and the read is bounded whatever the
    file turns out to be.
    """
    source = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{source}: scenario file not found") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{source}: cannot be read ({getattr(err, 'strerror', None) or err})") from None
    _check_regular(source, info)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            _check_regular(source, os.fstat(f.fileno()))  # the same file as the one checked
            data = f.read(MAX_SCENARIO_BYTES + 1)
    except OSError as err:
        raise InputError(f"{source}: cannot be read ({err.strerror or err})") from None
    if len(data) > MAX_SCENARIO_BYTES:
        raise InputError(f"{source}: is larger than {MAX_SCENARIO_BYTES:,} bytes, too large for a scenario file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{source}: is not UTF-8 text") from None


def _check_regular(source: str, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{source}: is a directory, not a scenario file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{source}: is not a regular file (a FIFO, device or socket), not a scenario file")
    if info.st_size > MAX_SCENARIO_BYTES:
        raise InputError(f"{source}: is {info.st_size:,} bytes, more than the {MAX_SCENARIO_BYTES:,} a scenario "
                         "file may have")


def parse_yaml(text: str, *, source: str) -> Any:
    """YAML text to plain values, strictly and within the bounds above; errors are one InputError line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(err.problem or err.context or "invalid YAML").split())[:200]
        kind = "YAML error" if isinstance(err, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise InputError(f"{source}: {kind}{where}: {problem}") from None
    except yaml.YAMLError as err:
        raise InputError(f"{source}: YAML syntax error: {' '.join(str(err).split())[:200]}") from None
    except RecursionError:  # a safety net: the depth bound above should make this unreachable
        raise InputError(f"{source}: YAML nesting too deep") from None
