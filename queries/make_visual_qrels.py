"""Write `demo-visual.qrels`: judgments of the demo suite's visual-search (anchor) queries.

    python queries/make_visual_qrels.py     # from the repository root; prints demo.yaml's lines

For each label set of `ANCHOR_LABELS`, the anchor is the demo image with the lowest COCO id
whose labels are exactly that set; its query is `visual-<COCO id>` with `anchor: <media id>`.
Labels are the demo dataset's own (`labels_mentioned` over all of an image's captions, as
`runner.server.demo` builds them). Each other image is graded against the anchor:

    2  the same labels as the anchor
    1  at least half of the labels the two hold together (Jaccard >= 0.5)
    0  the anchor itself: finding the image one started from is no answer

Silver judgments, as the labels are: they say what the images show by what their captions
name, not by their pixels.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

from runner.server.demo import DemoImage, demo_images, labels_mentioned

__all__ = ["ANCHOR_LABELS", "QRELS_FILE", "visual_judgments", "visual_queries"]

ANCHOR_LABELS: Final = (
    ("sink", "toilet"),
    ("giraffe", "zebra"),
    ("dog", "frisbee"),
    ("bicycle", "motorcycle"),
    ("oven", "refrigerator", "sink"),
    ("bed", "cat"),
)
QRELS_FILE: Final = Path(__file__).resolve().parent / "demo-visual.qrels"


def _labelled(images: list[DemoImage]) -> list[tuple[DemoImage, frozenset[str]]]:
    return [(im, frozenset(labels_mentioned(im.captions))) for im in images]


def visual_queries(images: list[DemoImage] | None = None) -> list[tuple[str, str]]:
    """(query id, anchor media id) of each label set of `ANCHOR_LABELS`, in that order."""
    labelled = sorted(_labelled(images or demo_images()), key=lambda pair: pair[0].image_id)
    out = []
    for labels in ANCHOR_LABELS:
        anchor = next(im for im, held in labelled if held == frozenset(labels))
        out.append((f"visual-{anchor.image_id}", anchor.media_id))
    return out


def visual_judgments(images: list[DemoImage] | None = None) -> list[tuple[str, str, int]]:
    """(query id, media id, grade) rows: per query, grade 2 first, then 1, then the anchor."""
    labelled = _labelled(images or demo_images())
    held_by = {im.media_id: held for im, held in labelled}
    rows = []
    for qid, anchor in visual_queries(images):
        mine = held_by[anchor]
        graded = []
        for im, held in labelled:
            if im.media_id == anchor:
                continue
            if held == mine:
                graded.append((im.media_id, 2))
            elif len(held & mine) * 2 >= len(held | mine):
                graded.append((im.media_id, 1))
        graded.sort(key=lambda pair: (-pair[1], pair[0]))
        rows += [(qid, media_id, grade) for media_id, grade in graded]
        rows.append((qid, anchor, 0))
    return rows


def qrels_text(rows: list[tuple[str, str, int]]) -> str:
    """TREC qrels lines `query_id 0 media_id grade`."""
    return "".join(f"{qid} 0 {media_id} {grade}\n" for qid, media_id, grade in rows)


def main() -> None:
    images = demo_images()
    QRELS_FILE.write_text(qrels_text(visual_judgments(images)), encoding="utf-8")
    sys.stdout.write(f"wrote {QRELS_FILE.name}; the queries for demo.yaml:\n")
    for qid, anchor in visual_queries(images):
        sys.stdout.write(f"  - {{id: {qid}, anchor: {anchor}}}\n")


if __name__ == "__main__":
    main()
