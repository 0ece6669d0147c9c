"""Query strings parsed into `SearchRequest`s (runner.server.vql), without HTTP."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from runner.server.errors import HttpError, ValidationFailed
from runner.server.query import DatasetInfo, SearchRequest, TextQuery
from runner.server.vql import parse_explore, parse_export

INFO = DatasetInfo(
    id="d",
    display_name="d",
    n_images=1,
    enrichments=frozenset({"CAPTION_IMAGES", "IMAGE_TAGGING"}),
    created_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
)
TAG = "0B7C9A56-3C1E-4A55-9B1F-5F8B0C1D2E3F"


def _vql(*filters: object) -> str:
    return json.dumps(list(filters))


@pytest.mark.parametrize(
    "query, expected, page",
    [
        pytest.param({}, SearchRequest(), 0, id="nothing"),
        pytest.param(
            {"caption": "a cat", "textual_similarity_threshold": "0.5", "threshold": "3"},
            SearchRequest(granularity=3, text=TextQuery("caption", "a cat", 0.5)),
            0,
            id="caption",
        ),
        pytest.param(
            {"image_caption": "a cat", "page_number": "7"},
            SearchRequest(text=TextQuery("caption", "a cat", None)),
            7,
            id="image-caption",
        ),
        pytest.param(
            {"caption": "new", "image_caption": "old"},
            SearchRequest(text=TextQuery("caption", "new", None)),
            0,
            id="caption-wins",
        ),
        pytest.param(
            {"vql": _vql({"text": {"op": "semantic", "value": "dog", "threshold": 0.7}})},
            SearchRequest(text=TextQuery("semantic", "dog", 0.7)),
            0,
            id="semantic",
        ),
        pytest.param(
            {"vql": _vql({"text": {"op": "fts", "value": "dog", "threshold": 0.7}})},
            SearchRequest(text=TextQuery("fts", "dog", None)),
            0,
            id="fts-ignores-threshold",
        ),
        pytest.param(
            {
                "vql": _vql(
                    {"labels": {"op": "one_of", "value": ["cat", "dog", "cat"]}},
                    {"tags": {"op": "is", "value": [TAG]}},
                    {"duplicates": {"op": "duplicates", "value": 0.95}},
                    {"uniqueness": {"op": "uniqueness", "value": 1}},
                )
            },
            SearchRequest(
                labels_one_of=("cat", "dog"),
                tags_is=(TAG.lower(),),
                duplicates=0.95,
                uniqueness=1.0,
            ),
            0,
            id="filters",
        ),
        pytest.param(
            {"labels": '["cat"]', "tags": json.dumps([TAG])},
            SearchRequest(labels_one_of=("cat",), tags_is=(TAG.lower(),)),
            0,
            id="plain-lists",
        ),
        pytest.param({"labels": "[]", "tags": "[]"}, SearchRequest(), 0, id="empty-lists"),
    ],
)
def test_parse_explore(query: dict[str, str], expected: SearchRequest, page: int) -> None:
    parsed = parse_explore({"entity_type": "IMAGES", **query}, INFO)
    assert parsed.request == expected
    assert parsed.page_number == page


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_explore({"threshold": "x", "page_number": "-2", "vql": "[1]"}, INFO)
    locs = [issue.loc for issue in info.value.issues]
    assert locs == [
        ("query", "entity_type"),
        ("query", "threshold"),
        ("query", "page_number"),
        ("query", "vql", 0),
    ]


def test_labels_need_tagging() -> None:
    bare = DatasetInfo("b", "b", 1, frozenset({"CAPTION_IMAGES"}), INFO.created_at)
    with pytest.raises(HttpError) as info:
        parse_explore({"entity_type": "IMAGES", "labels": '["cat"]'}, bare)
    assert info.value.status == 409 and "IMAGE_TAGGING" in info.value.detail


def test_parse_export_needs_file_name_and_format() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_export({}, INFO)
    assert [issue.loc for issue in info.value.issues] == [
        ("query", "export_format"),
        ("query", "file_name"),
    ]
    parsed = parse_export({"export_format": "parquet", "file_name": "x"}, INFO)
    assert parsed.request == SearchRequest()
    assert (parsed.export_format, parsed.file_name, parsed.include_images) == (
        "parquet",
        "x",
        False,
    )
    parsed = parse_export(
        {"export_format": "json", "include_images": "True", "file_name": "x"}, INFO
    )
    assert (parsed.export_format, parsed.file_name, parsed.include_images) == ("json", "x", True)
