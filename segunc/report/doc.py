"""The report as a list of blocks, rendered to HTML (:mod:`.html`) and Markdown (:mod:`.markdown`).

Blocks hold plain text (no markup): renderers escape it. Tables arrive already formatted as
strings (:func:`fmt_table`), so both renderers print the same digits.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

import pandas as pd

__all__ = ["Heading", "Text", "Table", "Image", "Code", "Document", "fmt_table", "fmt_num", "fmt_p", "slug"]


@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Text:
    text: str
    kind: str = "p"  # p | note | warn


@dataclass
class Table:
    frame: pd.DataFrame  # every cell a string
    caption: str = ""
    collapsed: bool = False  # HTML: inside <details>


@dataclass
class Image:
    name: str  # file name in the Markdown folder (…png)
    png: bytes
    caption: str = ""


@dataclass
class Code:
    text: str
    caption: str = ""
    collapsed: bool = True


@dataclass
class Document:
    title: str
    subtitle: str = ""
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> "Document":
        self.blocks.extend(blocks)
        return self

    def heading(self, level: int, text: str, anchor: str | None = None) -> None:
        self.blocks.append(Heading(level, text, anchor or slug(text)))

    def toc(self) -> list[Heading]:
        return [b for b in self.blocks if isinstance(b, Heading) and b.level <= 3]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def fmt_num(v, digits: int = 4) -> str:
    """Floats to ``digits`` significant digits (fixed notation for ordinary magnitudes), ints as ints, NaN as –."""
    if v is None or v is pd.NA or v is pd.NaT:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu"):
        return f"{int(v):,}"
    if isinstance(v, float) or hasattr(v, "dtype"):
        v = float(v)
        if not math.isfinite(v):
            return "–"
        if v == 0:
            return "0"
        if 1e-3 <= abs(v) < 1e5:
            dec = max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))
            return f"{v:.{dec}f}"
        return f"{v:.{digits - 1}e}"
    return str(v)


def fmt_p(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(v):
        return "–"
    if v == 0:
        return "0"
    return f"{v:.2e}" if v < 1e-3 else f"{v:.4f}"


def fmt_table(df: pd.DataFrame, formats: Mapping[str, Callable] | None = None, rename: Mapping[str, str] | None = None,
              digits: int = 4) -> pd.DataFrame:
    """Every cell as a string: ``formats[col](value)`` or :func:`fmt_num`; columns renamed after formatting."""
    formats = dict(formats or {})
    out = pd.DataFrame(index=range(len(df)))
    for c in df.columns:
        f = formats.get(c, lambda v: fmt_num(v, digits))
        out[str(c)] = [f(v) if not isinstance(v, str) else v for v in df[c].tolist()]
    return out.rename(columns=dict(rename or {}))
