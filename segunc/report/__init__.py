"""``python -m segunc report``: regenerate a self-contained HTML and a Markdown report from the store.

    python -m segunc report --split test --out report/ [--cache DIR] [--backend unet,litemedsam]

writes ``report.html`` (one file, figures embedded as PNG data URIs), ``report.md`` with its PNG
figures, and the review queues as CSV into ``--out``. Exit 2 (with what to run) when the store
has no results for the split.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

#: public name → the submodule that defines it, imported on first use (PEP 562): the app's pages import
#: ``segunc.report.export`` / ``.overview`` without loading the report builder (matplotlib, the analyses)
_EXPORTS = {"ReportOptions": "build", "NoResultsError": "build", "build_report": "build", "select_results": "build",
            "Document": "doc", "render_html": "html", "render_markdown": "markdown"}
__all__ = [*_EXPORTS, "write_report"]

if TYPE_CHECKING:
    from .build import NoResultsError, ReportOptions, build_report, select_results  # noqa: F401
    from .doc import Document
    from .html import render_html  # noqa: F401
    from .markdown import render_markdown  # noqa: F401


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def write_report(doc: Document, out: Path | str, attachments: dict[str, bytes] | None = None) -> tuple[Path, Path]:
    """Write ``report.html``, ``report.md`` (+ its PNGs, each with an SVG and a PDF beside it) and the
    attachments into ``out``; returns the two paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from .html import render_html
    from .markdown import render_markdown

    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render_html(doc), encoding="utf-8")
    md_path.write_text(render_markdown(doc, out), encoding="utf-8")
    for name, data in (attachments or {}).items():
        (out / name).write_bytes(data)
    return html_path, md_path
