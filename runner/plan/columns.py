"""A plan held compactly: a few numbers a spec, `RequestSpec` objects made only when read.

A suite of 100,000 requests expanded into frozen dataclasses (two hex keys each, a tuple of specs
a wire request) held ~45 MB of Python objects for the whole run. `PlanColumns` holds, per spec in
plan order, the index of its query and of its setting and its two keys as 64-bit numbers
(numpy), and the grouping into wire requests as index arrays (~40 bytes a spec); `make(query,
setting, keys)`, the plan's one way to build a spec, builds it again when it is read (given the
keys, it does not hash again). `SpecView` and
`RequestView` are the read-only sequences `Plan.specs` and `Plan.requests`; a run reads them one
unit at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, overload

import numpy as np
import numpy.typing as npt

from runner.plan.spec import RequestSpec, WireRequest

__all__ = ["MakeSpec", "PlanColumns", "RequestView", "SpecView"]

# Builds the spec of (query index, setting index, (wire key, key)); expansion's own function.
MakeSpec = Callable[[int, int, tuple[int, int]], RequestSpec]

_T = TypeVar("_T")


def group(wire: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Specs grouped into wire requests: (spec indices by request, each request's start).

    Requests are in the order of their first spec; within a request, specs keep plan order.
    """
    if len(wire) == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    _, first, inverse = np.unique(wire, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    request_of = rank[inverse.reshape(-1)]
    order = np.argsort(request_of, kind="stable").astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(np.bincount(request_of, minlength=len(first)))))
    return order, starts.astype(np.int64)


class PlanColumns:
    """Every spec of a plan as numbers; `spec(i)` and `request(j)` build the objects."""

    __slots__ = ("key", "make", "order", "query", "setting", "starts", "wire")

    def __init__(
        self,
        make: MakeSpec,
        query: npt.NDArray[np.int32],
        setting: npt.NDArray[np.int32],
        wire: npt.NDArray[np.uint64],
        key: npt.NDArray[np.uint64],
    ) -> None:
        self.make = make
        self.query, self.setting, self.wire, self.key = query, setting, wire, key
        self.order, self.starts = group(wire)

    @property
    def n_specs(self) -> int:
        return len(self.wire)

    @property
    def n_requests(self) -> int:
        return len(self.starts) - 1

    def spec(self, i: int) -> RequestSpec:
        keys = (int(self.wire[i]), int(self.key[i]))
        return self.make(int(self.query[i]), int(self.setting[i]), keys)

    def request(self, j: int) -> WireRequest:
        members = self.order[int(self.starts[j]) : int(self.starts[j + 1])]
        specs = tuple(self.spec(int(i)) for i in members)
        return WireRequest(specs[0].wire_key, specs)

    def subset(self, keep: npt.NDArray[np.bool_]) -> PlanColumns:
        """The specs where `keep` is true, in plan order (regrouped)."""
        return PlanColumns(
            self.make, self.query[keep], self.setting[keep], self.wire[keep], self.key[keep]
        )


class _View(Sequence[_T]):
    """A read-only sequence whose items are built on demand by `item(i)`."""

    __slots__ = ("columns",)
    columns: PlanColumns

    def __init__(self, columns: PlanColumns) -> None:
        self.columns = columns

    def _item(self) -> Callable[[int], _T]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[_T, ...]: ...

    def __getitem__(self, index: int | slice) -> _T | tuple[_T, ...]:
        item, n = self._item(), len(self)
        if isinstance(index, slice):
            return tuple(item(i) for i in range(*index.indices(n)))
        if not -n <= index < n:
            raise IndexError(index)
        return item(index % n)

    def __iter__(self) -> Iterator[_T]:
        item = self._item()
        for i in range(len(self)):
            yield item(i)

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # a sequence that compares by content

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items)"


class SpecView(_View[RequestSpec]):
    """`Plan.specs` of an expanded plan: every spec in plan order, built when read."""

    __slots__ = ()

    def _item(self) -> Callable[[int], RequestSpec]:
        return self.columns.spec

    def __len__(self) -> int:
        return self.columns.n_specs


class RequestView(_View[WireRequest]):
    """`Plan.requests` of an expanded plan: every wire request with its specs, built when read."""

    __slots__ = ()

    def _item(self) -> Callable[[int], WireRequest]:
        return self.columns.request

    def __len__(self) -> int:
        return self.columns.n_requests
