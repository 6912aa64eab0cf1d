"""``python -m segunc report``: regenerate a self-contained HTML and a Markdown report from the store.

    python -m segunc report --split test --out report/ [--cache DIR] [--backend unet,litemedsam]

writes ``report.html`` (one file, figures embedded as PNG data URIs), ``report.md`` with its PNG
figures, and the review queues as CSV into ``--out``. Exit 2 (with what to run) when the store
has no results for the split.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from .build import NoResultsError, ReportOptions, build_report, select_results
from .doc import Document
from .html import render_html
from .markdown import render_markdown

__all__ = ["ReportOptions", "NoResultsError", "build_report", "select_results", "write_report", "render_html",
           "render_markdown", "Document"]


def write_report(doc: Document, out: Path | str, attachments: dict[str, bytes] | None = None) -> tuple[Path, Path]:
    """Write ``report.html``, ``report.md`` (+ its PNGs, each with an SVG and a PDF beside it) and the
    attachments into ``out``; returns the two paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render_html(doc), encoding="utf-8")
    md_path.write_text(render_markdown(doc, out), encoding="utf-8")
    for name, data in (attachments or {}).items():
        (out / name).write_bytes(data)
    return html_path, md_path
