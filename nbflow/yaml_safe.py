"""YAML and JSON input with bounded size: specs, ``-f`` parameter files, grid files, ``-p`` values.

Files are read with YAML's safe loader (no Python objects are built, JSON is
YAML), plus two limits that the safe loader lacks:

- **Aliases.** An alias (``*name``) repeats the value its anchor (``&name``)
  names, without copying it, so a few lines of nested aliases ("billion
  laughs") stand for billions of values. Every later step (line indexing,
  schema checks, error messages) walks the expanded value. A document whose
  aliases repeat more than :data:`MAX_ALIASED_VALUES` values in all, or an
  alias that contains itself, is refused at the alias that crosses the limit.
- **Nesting** deeper than Python's recursion allows is refused too.

Both raise :class:`YamlLimitError`, a ``yaml.MarkedYAMLError`` with the line,
so callers report it like any other YAML error. :func:`short` keeps values in
error messages to a bounded length.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode

#: how many values (scalars, lists, mappings, keys) the aliases of one document may repeat
MAX_ALIASED_VALUES = 100_000
#: the longest value text an error message shows
MAX_SHOWN = 200


class YamlLimitError(yaml.MarkedYAMLError):  # type: ignore[misc]
    """A YAML document is refused: its aliases expand too far, or it nests too deep."""


class BoundedSafeLoader(yaml.SafeLoader):  # type: ignore[misc]
    """``yaml.SafeLoader`` that counts what aliases repeat, and refuses past the limit."""

    def __init__(self, stream: str, limit: int = MAX_ALIASED_VALUES) -> None:
        super().__init__(stream)
        self.limit = limit
        #: values repeated by the aliases seen so far
        self.repeated = 0
        #: id -> expanded size of every finished node (a node is finished before it is aliased,
        #: unless the alias sits inside it)
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None:
                size = self._sizes.get(id(node))
                if size is None:
                    raise YamlLimitError(None, None, f"alias *{event.anchor} is inside the value "
                                         f"it names (a value that contains itself)",
                                         event.start_mark)
                self.repeated += size
                if self.repeated > self.limit:
                    raise YamlLimitError(
                        None, None, f"alias *{event.anchor} makes the aliases of this document "
                        f"repeat more than {self.limit:,} values (an alias bomb?); write the "
                        "values out, or use fewer nested aliases", event.start_mark)
            return super().compose_node(parent, index)
        node = super().compose_node(parent, index)
        self._sizes[id(node)] = self._size(node)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping, refusing a key given twice (YAML and JSON keep the last one silently,
        so a misspelt copy would win without a word)."""
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeConstructor words that error
                continue
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"duplicate key {short(key)!r} (first given on line "
                    f"{first.start_mark.line + 1})", key_node.start_mark)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping

    def _size(self, node: Node) -> int:
        """The expanded size of a finished node (its children are finished)."""
        if isinstance(node, SequenceNode):
            return 1 + sum(self._sizes.get(id(child), 1) for child in node.value)
        if isinstance(node, MappingNode):
            return 1 + sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1)
                           for k, v in node.value)
        return 1


def compose(text: str, limit: int = MAX_ALIASED_VALUES) -> tuple[Node | None, BoundedSafeLoader]:
    """The node tree of one YAML document, and the loader that can construct its data."""
    loader = BoundedSafeLoader(text, limit)
    try:
        node = loader.get_single_node()
    except RecursionError:
        loader.dispose()
        raise YamlLimitError(None, None, "the document nests too deep", None) from None
    return node, loader


def load_with_nodes(text: str, limit: int = MAX_ALIASED_VALUES) -> tuple[Any, Node | None]:
    """The data of one YAML/JSON document and its node tree (for line numbers)."""
    node, loader = compose(text, limit)
    try:
        data = loader.construct_document(node) if node is not None else None
    except RecursionError:
        raise YamlLimitError(None, None, "the document nests too deep",
                             node.start_mark if node is not None else None) from None
    finally:
        loader.dispose()
    return data, node


def load(text: str, limit: int = MAX_ALIASED_VALUES) -> Any:
    """The data of one YAML/JSON document (safe loader, bounded aliases)."""
    return load_with_nodes(text, limit)[0]


def describe(exc: yaml.YAMLError) -> tuple[str, int | None]:
    """A YAML error as (one-line problem, 1-based line or None)."""
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if context and problem != context:
        problem = f"{context}: {problem}"
    return short(" ".join(str(problem).split())), line


def short(value: Any, limit: int = MAX_SHOWN) -> str:
    """``value`` as text (``repr`` unless it is a string) cut to ``limit`` characters.

    A longer text ends with ``... (N characters)``, so a message never carries a
    value of unbounded size.
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"
