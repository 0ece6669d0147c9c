"""How a suite's queries are sent: its modes, and the sweep of settings they are asked at.

Mode(via="vql", op="semantic").kind      # "semantic": the sweep list and request it uses
BUILTIN_MODES["visual"].sends            # "anchor": what of a query the mode sends
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from pydantic import field_validator, model_validator

from runner.suite.fields import Granularity, SuiteModel, Unit, fail, one_or_many

__all__ = ["BUILTIN_MODES", "TEXT_MODES", "Mode", "Sweep"]


class Mode(SuiteModel):
    """How a query is sent: `via: caption` (`?caption=`), `via: vql` with `op: fts|semantic`, or
    `via: anchor` (visual search: `?anchor_media_id=<the query's anchor>&anchor_type=MEDIA`).

    Text modes send a query's `text`, anchor modes its `anchor`; each asks the queries that
    give what it sends.
    """

    via: Literal["caption", "vql", "anchor"]
    op: Literal["fts", "semantic"] | None = None

    @model_validator(mode="after")
    def _op_fits_via(self) -> Mode:
        if self.via in ("caption", "anchor") and self.op is not None:
            sends = "?caption=..." if self.via == "caption" else "?anchor_media_id=..."
            raise fail(f"via {self.via} takes no op (it sends {sends})", "op")
        if self.via == "vql" and self.op is None:
            raise fail("via vql needs op: fts or semantic", "op")
        return self

    @property
    def kind(self) -> Literal["caption", "fts", "semantic", "anchor"]:
        """caption, fts, semantic or anchor: which sweep list applies, how a request is built."""
        if self.via == "anchor":
            return "anchor"
        return "caption" if self.op is None else self.op

    @property
    def sends(self) -> Literal["text", "anchor"]:
        """What of a query this mode sends."""
        return "anchor" if self.via == "anchor" else "text"


BUILTIN_MODES: Final[Mapping[str, Mode]] = {
    "caption": Mode(via="caption"),
    "fts": Mode(via="vql", op="fts"),
    "semantic": Mode(via="vql", op="semantic"),
    "visual": Mode(via="anchor"),
}
# The modes of a suite that names none: the text modes, and `visual` when a query has an anchor.
TEXT_MODES: Final = ("caption", "fts", "semantic")


class Sweep(SuiteModel):
    """Values tried one by one, each a separate setting of the modes that use it.

    An empty list sends no such parameter (the server's default cut-off, setting `default`);
    an empty `granularity` uses `defaults.granularity`.
    """

    textual_similarity_threshold: tuple[Unit, ...] = ()  # caption modes
    semantic_threshold: tuple[Unit, ...] = ()  # vql semantic modes
    granularity: tuple[Granularity, ...] = ()  # every mode

    @field_validator("*", mode="before")
    @classmethod
    def _listify(cls, value: object) -> object:
        return one_or_many(value)

    @model_validator(mode="after")
    def _no_repeats(self) -> Sweep:
        for name in ("textual_similarity_threshold", "semantic_threshold", "granularity"):
            values: tuple[float, ...] = getattr(self, name)
            for i, value in enumerate(values):
                if value in values[:i]:
                    raise fail(f"{value!r} is listed twice", name, i)
        return self
