"""What each kind of search needs from a dataset and an account (explore-api.md, "Prerequisites").

    needs = mode_needs("vql", "semantic")
    needs.enrichments   # ("CAPTION_IMAGES", "MULTIMODEL_IMAGE_ENCODING"): any one serves it
    needs.features      # ("semantic_search",): the `/user_config` names that may turn it off

The one table behind the run's preflight (`runner.execute._preflight`) and `vlbench doctor`.
caption search needs CAPTION_IMAGES; semantic needs CAPTION_IMAGES or MULTIMODEL_IMAGE_ENCODING;
visual search (`via: anchor`) needs MULTIMODEL_IMAGE_ENCODING, the image-level embeddings it
ranks by (a caption's embedding is not the image's look); fts needs none: it searches any
caption, imported ones too. Features: the documented "text search of images" names (captions,
semantic, labels search), and for fts and visual search the names the local server gives them,
so that each is refused only where an answer names its feature and turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["LABEL_FILTERS", "ModeNeeds", "mode_needs"]


@dataclass(frozen=True, slots=True)
class ModeNeeds:
    """`what` a search is, the enrichments any one of which serves it, the features it uses."""

    what: str
    enrichments: tuple[str, ...]
    features: tuple[str, ...]


_CAPTION: Final = ModeNeeds(
    "caption search", ("CAPTION_IMAGES",), ("captions_search", "caption_search")
)
_SEMANTIC: Final = ModeNeeds(
    "semantic search", ("CAPTION_IMAGES", "MULTIMODEL_IMAGE_ENCODING"), ("semantic_search",)
)
_FTS: Final = ModeNeeds("full-text search", (), ("full_text_search", "fts_search"))
_VISUAL: Final = ModeNeeds("visual search", ("MULTIMODEL_IMAGE_ENCODING",), ("visual_search",))
LABEL_FILTERS: Final = ModeNeeds(
    "label filters", ("IMAGE_TAGGING",), ("labels_search", "label_search")
)


def mode_needs(via: str, op: str | None) -> ModeNeeds:
    """What a mode sent `via` caption, vql (with `op` fts or semantic) or anchor needs."""
    if via == "caption":
        return _CAPTION
    if via == "anchor":
        return _VISUAL
    return _SEMANTIC if op == "semantic" else _FTS
