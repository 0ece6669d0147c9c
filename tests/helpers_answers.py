"""A fixed set of searches of the demo dataset, and a compact summary of each answer page.

`tests/data/make_server_reference.py` wrote the summaries of the server as it was before the
search path was rewritten for speed (`tests/data/server_reference.json`); `tests/test_answers.py`
checks that today's server gives the same pages: the same clusters, members, captions, labels
and order (a digest of the page without its scores), and the same scores within a tolerance.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

import orjson

__all__ = ["CLUSTER_KEYS", "PREVIEW_KEYS", "QUERIES", "summarise"]

# The response fields the summary covers; fields added later to the response are not compared.
CLUSTER_KEYS: Final = (
    "cluster_id",
    "type",
    "n_images",
    "similarity_threshold",
    "relevance_score_type",
    "captions",
    "labels",
    "user_tags",
)
PREVIEW_KEYS: Final = (
    "type",
    "media_id",
    "media_uri",
    "media_thumb_uri",
    "caption",
    "file_name",
    "relevance_score_type",
    "width",
    "height",
    "labels",
)
_FAVOURITE: Final = "e483acf4-633f-5b4e-b665-aac1f65b7c39"  # DEMO_TAGS["favourite"]


def _vql(*filters: dict[str, Any]) -> str:
    return json.dumps(list(filters))


def _fts(value: str) -> dict[str, Any]:
    return {"text": {"op": "fts", "value": value}}


def _semantic(value: str, threshold: float | None = None) -> dict[str, Any]:
    text: dict[str, Any] = {"op": "semantic", "value": value}
    if threshold is not None:
        text["threshold"] = threshold
    return {"text": text}


# name -> explore query parameters (entity_type IMAGES is added); the demo's tag ids are uuid5
# names (runner.server.demo.DEMO_TAGS), written out here so the set stays fixed.
QUERIES: Final[dict[str, dict[str, str]]] = {
    "fts-stop-words": {"vql": _vql(_fts("a dog on a beach"))},
    "fts-plural": {"vql": _vql(_fts("dogs"))},
    "fts-one-stop-word": {"vql": _vql(_fts("the"))},
    "fts-sentence": {"vql": _vql(_fts("A man riding a wave on top of a surfboard."))},
    "fts-stems": {"vql": _vql(_fts("running runners run"))},
    "fts-repeats": {"vql": _vql(_fts("Dog DOG dog dogs doggy"))},
    "fts-accents": {"vql": _vql(_fts("café crème naïve"))},
    "fts-syntax": {"vql": _vql(_fts('NEAR("dog" cat) OR pizza* -bus ^train col:x'))},
    "fts-no-match": {"vql": _vql(_fts("zzzqqqxx"))},
    "fts-no-term": {"vql": _vql(_fts("!!! ... ???"))},
    "fts-rare": {"vql": _vql(_fts("giraffes zebra elephant"))},
    "fts-granularity-2": {"vql": _vql(_fts("a bus on the street")), "threshold": "2"},
    "fts-granularity-4": {"vql": _vql(_fts("kitchen with a stove")), "threshold": "4"},
    "fts-page-1": {"vql": _vql(_fts("a man with a")), "page_number": "1"},
    "fts-page-3-g1": {"vql": _vql(_fts("people")), "page_number": "3", "threshold": "1"},
    "fts-labels": {
        "vql": _vql(_fts("sitting on a bench"), {"labels": {"op": "one_of", "value": ["person"]}})
    },
    "fts-uniqueness": {
        "vql": _vql(_fts("a plate of food"), {"uniqueness": {"op": "uniqueness", "value": 0.2}})
    },
    "semantic-default": {"vql": _vql(_semantic("a dog playing frisbee in a park"))},
    "semantic-strict": {"vql": _vql(_semantic("a red double decker bus", 0.5))},
    "semantic-g3": {
        "vql": _vql(_semantic("people skiing down a snowy hill", 0.7)),
        "threshold": "3",
    },
    "semantic-page-1": {"vql": _vql(_semantic("a cat sleeping", 0.75)), "page_number": "1"},
    "semantic-labels": {
        "vql": _vql(
            _semantic("food on a table", 0.7),
            {"labels": {"op": "one_of", "value": ["pizza", "cake"]}},
        )
    },
    "caption-default": {"caption": "a train at the station"},
    "caption-cutoff": {"caption": "two giraffes", "textual_similarity_threshold": "0.6"},
    "caption-g4": {
        "caption": "a man on a surfboard",
        "textual_similarity_threshold": "0.7",
        "threshold": "4",
    },
    "caption-tags": {
        "caption": "a laptop on a desk",
        "vql": _vql({"tags": {"op": "is", "value": [_FAVOURITE]}}),
    },
    "none-g0": {},
    "none-g4-page-1": {"threshold": "4", "page_number": "1"},
    "none-labels": {"vql": _vql({"labels": {"op": "one_of", "value": ["giraffe"]}})},
    "none-duplicates": {
        "vql": _vql({"duplicates": {"op": "duplicates", "value": 0.9}}),
        "threshold": "2",
    },
}


def _short(score: float) -> float:
    """10 significant digits: finer than any change the comparison should tolerate."""
    return float(f"{score:.10g}")


def summarise(clusters: list[dict[str, Any]]) -> dict[str, Any]:
    """A page of clusters as {n, digest, scores}: `digest` hashes everything but the scores."""
    shape = [
        {k: c[k] for k in CLUSTER_KEYS}
        | {"previews": [{k: p[k] for k in PREVIEW_KEYS} for p in c["previews"]]}
        for c in clusters
    ]
    scores = [
        [_short(c["relevance_score"]), [_short(p["relevance_score"]) for p in c["previews"]]]
        for c in clusters
    ]
    return {
        "n": len(clusters),
        "digest": hashlib.sha256(orjson.dumps(shape, option=orjson.OPT_SORT_KEYS)).hexdigest(),
        "first": [c["cluster_id"] for c in clusters[:3]],
        "scores": scores,
    }
