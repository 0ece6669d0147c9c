"""A YAML loader that bounds what aliases may repeat, so that an alias bomb is refused at once.

    loader = BoundedLoader(text)
    root = loader.get_single_node()
    problem = loader.alias_problem()     # (reason, line, key path) or None

An alias (`*name`) repeats the whole node its anchor (`&name`) marks. PyYAML shares that node,
so composing and constructing stay cheap, but everything that walks the data afterwards (the
line-marking pass, pydantic) walks each repetition: nine levels of nine aliases ("billion
laughs") are 387,420,489 nodes from a few hundred bytes. The loader counts, while composing,
the nodes written in the file and the nodes each alias repeats (its anchor's whole expansion,
memoised per node, so counting is linear in the file). A document whose aliases repeat more
than `ALIAS_NODES` nodes, or more than `ALIAS_RATIO` times the nodes written, whichever is more,
is refused; so is an alias inside its own anchor, which repeats forever.
"""

from __future__ import annotations

from typing import Final

import yaml

__all__ = ["ALIAS_NODES", "ALIAS_RATIO", "BoundedLoader"]

# Generous for real suites (a labels list aliased into 20,000 queries is 80,000 nodes), and
# small enough that walking the expansion stays well under a second.
ALIAS_NODES: Final = 100_000
ALIAS_RATIO: Final = 10

KeyPath = tuple[str | int, ...]


class BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that records what each alias repeats; `alias_problem` judges it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.written = 0
        self.aliased = 0
        # (nodes repeated, line, key path) of the alias that repeats the most, first in the file.
        self.largest: tuple[int, int, KeyPath] | None = None
        self.recursive: tuple[str, int, KeyPath] | None = None
        self._paths: list[KeyPath] = []
        self._open: set[str] = set()  # anchors whose node is being composed
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        path = self._child_path(parent, index)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            line = event.start_mark.line + 1
            name = str(getattr(event, "anchor", ""))
            if name in self._open and self.recursive is None:
                self.recursive = (name, line, path)
            elif name in self.anchors and name not in self._open:
                size = self._expanded(self.anchors[name])
                self.aliased += size
                if self.largest is None or size > self.largest[0]:
                    self.largest = (size, line, path)
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        self.written += 1
        anchor = getattr(self.peek_event(), "anchor", None)  # type: ignore[no-untyped-call]
        if anchor is not None:
            self._open.add(anchor)
        self._paths.append(path)
        try:
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._paths.pop()
            if anchor is not None:
                self._open.discard(anchor)

    def alias_problem(self) -> tuple[str, int, KeyPath] | None:
        """(reason, line, key path) if the aliases repeat too much (see the module docstring)."""
        if self.recursive is not None:
            name, line, path = self.recursive
            return f"alias *{name} is inside its own anchor &{name}: it repeats forever", line, path
        limit = max(ALIAS_NODES, ALIAS_RATIO * self.written)
        if self.aliased > limit and self.largest is not None:
            _, line, path = self.largest
            reason = (
                f"the aliases of this file repeat {self.aliased:,} nodes, more than the "
                f"{limit:,} allowed (an alias bomb?); this alias repeats the most: write the "
                "values out, or use fewer aliases"
            )
            return reason, line, path
        return None

    def _child_path(self, parent: yaml.Node | None, index: object) -> KeyPath:
        if parent is None or not self._paths:
            return ()
        if isinstance(index, int):
            return (*self._paths[-1], index)
        if isinstance(index, yaml.ScalarNode):
            return (*self._paths[-1], str(index.value))
        return self._paths[-1]  # a mapping's key: placed at its mapping

    def _expanded(self, node: yaml.Node) -> int:
        """Nodes in `node` with every alias in it expanded (an anchor's node is complete here)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._expanded(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._expanded(k) + self._expanded(v) for k, v in node.value)
        self._sizes[id(node)] = size
        return size
