"""Rows handed to the writer, turned into one record batch of the schema and checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from runner.errors import RunError
from runner.schema import HITS_SCHEMA, REQUESTS_SCHEMA

__all__ = ["Rows", "check_rank_order", "checked_unit", "to_batch"]

Rows: TypeAlias = Sequence[Mapping[str, Any]] | pa.Table | pa.RecordBatch


@dataclass(frozen=True, slots=True)
class _Layout:
    """What `to_batch` needs of a schema, worked out once per schema."""

    names: frozenset[str]
    struct: pa.DataType
    required: tuple[int, ...]  # indices of the columns that must not hold a null


_LAYOUTS: dict[int, _Layout] = {}
# Up to this many hits, checking the rank order row by row beats the vectorised check's overhead.
_SMALL = 1_000


def _layout(schema: pa.Schema) -> _Layout:
    layout = _LAYOUTS.get(id(schema))
    if layout is None:
        layout = _Layout(
            names=frozenset(schema.names),
            struct=pa.struct(list(schema)),
            required=tuple(i for i, f in enumerate(schema) if not f.nullable),
        )
        _LAYOUTS[id(schema)] = layout
    return layout


def to_batch(rows: Rows, schema: pa.Schema, what: str) -> pa.RecordBatch:
    """`rows` (dicts, a table or a batch) as one record batch of exactly `schema`.

    Refuses, with `RunError` naming `what` and the column, a column the schema does not have, a
    value of the wrong type, and a null in a column that must not hold one. A missing nullable
    column becomes nulls.
    """
    layout = _layout(schema)
    try:
        if isinstance(rows, pa.RecordBatch) and rows.schema.equals(schema):
            batch = rows  # the usual case (the scheduler builds batches of the schema): no copy
        elif isinstance(rows, pa.RecordBatch | pa.Table):
            batch = _from_arrow(rows, schema, what)
        else:
            unknown = set().union(*rows) - layout.names  # one C-level pass over every key
            if unknown:
                raise RunError(
                    f"{what}: unknown column(s) {sorted(unknown)} (see runner/schema.py)"
                )
            # Through a struct array: about 1.5x faster than `RecordBatch.from_pylist`.
            struct = pa.array(list(rows), type=layout.struct)
            batch = pa.RecordBatch.from_struct_array(struct)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise RunError(f"{what}: rows do not fit runner/schema.py: {exc}") from None
    for i in layout.required:
        if batch.column(i).null_count:
            raise RunError(f"{what}: column {schema.field(i).name!r} must not be null")
    return batch


def _from_arrow(rows: pa.Table | pa.RecordBatch, schema: pa.Schema, what: str) -> pa.RecordBatch:
    unknown = set(rows.schema.names) - set(schema.names)
    if unknown:
        raise RunError(f"{what}: unknown column(s) {sorted(unknown)} (see runner/schema.py)")
    if isinstance(rows, pa.Table):
        batches = rows.combine_chunks().to_batches()
        rows = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=rows.schema)
    present = set(rows.schema.names)
    columns = [
        _cast(rows.column(f.name), f.type) if f.name in present else pa.nulls(rows.num_rows, f.type)
        for f in schema
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _cast(column: pa.Array, type_: pa.DataType) -> pa.Array:
    return column if column.type.equals(type_) else column.cast(type_)


def check_rank_order(hits: pa.RecordBatch, what: str) -> None:
    """Refuse hits that are not in rank order within each (request key, query id).

    Row by row for a small unit; vectorised for a large batch whose (key, query) groups are each
    one contiguous run of rows (the usual layout), and row by row again for any other layout.
    """
    if hits.num_rows <= _SMALL:
        _check_rank_order_rows(hits, what)
        return
    keys = hits.column("request_key")
    queries = hits.column("query_id")
    ranks = hits.column("rank").to_numpy()
    head, tail = slice(0, hits.num_rows - 1), slice(1, hits.num_rows)
    same = pc.and_(
        pc.equal(keys[tail], keys[head]), pc.equal(queries[tail], queries[head])
    ).to_numpy(zero_copy_only=False)
    runs = 1 + int((~same).sum())
    groups = pc.count_distinct(pc.binary_join_element_wise(keys, queries, "\x00")).as_py()
    if runs == groups and bool((np.diff(ranks)[same] > 0).all()):
        return
    _check_rank_order_rows(hits, what)


def _check_rank_order_rows(hits: pa.RecordBatch, what: str) -> None:
    last: dict[tuple[str, str], int] = {}
    keys = hits.column("request_key").to_pylist()
    queries = hits.column("query_id").to_pylist()
    for key, query, rank in zip(keys, queries, hits.column("rank").to_pylist(), strict=True):
        previous = last.get((key, query))
        if previous is not None and rank <= previous:
            raise RunError(
                f"{what}: hits of request {key!r}, query {query!r} are not in rank order "
                f"(rank {rank} after {previous})"
            )
        last[(key, query)] = rank


def checked_unit(
    request_rows: Rows, hit_rows: Rows
) -> tuple[pa.RecordBatch, pa.RecordBatch, set[str]]:
    """One unit's rows as (requests, hits, request keys), refused unless they make a unit.

    Raises `RunError` for rows that do not fit the schema, a unit with no request row, hits of a
    key that has no request row in the unit, or hits out of rank order (see `RunWriter.record`).
    """
    requests = to_batch(request_rows, REQUESTS_SCHEMA, "request rows")
    hits = to_batch(hit_rows, HITS_SCHEMA, "hit rows")
    if requests.num_rows == 0:
        raise RunError("record(): a unit needs at least one request row")
    keys = set(requests.column("request_key").to_pylist())
    stray = set(pc.unique(hits.column("request_key")).to_pylist()) - keys
    if stray:
        raise RunError(f"record(): hits of request key(s) {sorted(stray)} with no request row")
    check_rank_order(hits, "record()")
    return requests, hits, keys
