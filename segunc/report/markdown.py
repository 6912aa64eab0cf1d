"""Markdown report: ``report.md`` plus one PNG file per figure in the same folder."""
from __future__ import annotations

from pathlib import Path

from .doc import Code, Document, Heading, Image, Table, Text

__all__ = ["render_markdown"]


def _cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> str:
    df = t.frame
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(_cell(c) for c in cols) + " |",
             "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(cols))) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    cap = f"\n\n*{t.caption}*" if t.caption else ""
    return "\n".join(lines) + cap


def render_markdown(doc: Document, out: Path) -> str:
    """The Markdown text; every :class:`Image` is written to ``out/<name>`` (``out`` must exist)."""
    out = Path(out)
    parts = [f"# {doc.title}"]
    if doc.subtitle:
        parts.append(doc.subtitle)
    toc = [h for h in doc.toc() if h.level in (2, 3)]
    if toc:
        parts.append("\n".join(f"{'  ' * (h.level - 2)}- [{h.text}](#{h.anchor})" for h in toc))
    for b in doc.blocks:
        if isinstance(b, Heading):
            parts.append(f'<a id="{b.anchor}"></a>\n\n{"#" * min(max(b.level, 2), 4)} {b.text}')
        elif isinstance(b, Text):
            parts.append(f"> {b.text}" if b.kind == "warn" else (f"*{b.text}*" if b.kind == "note" else b.text))
        elif isinstance(b, Table):
            parts.append(_table(b))
        elif isinstance(b, Image):
            (out / b.name).write_bytes(b.png)
            for fmt in ("svg", "pdf"):  # vector copies beside the PNG, when the figure has them
                if getattr(b.png, fmt, b""):
                    (out / b.name).with_suffix(f".{fmt}").write_bytes(getattr(b.png, fmt))
            parts.append(f"![{b.caption or b.name}]({b.name})" + (f"\n\n*{b.caption}*" if b.caption else ""))
        elif isinstance(b, Code):
            parts.append((f"**{b.caption}**\n\n" if b.caption else "") + f"```json\n{b.text}\n```")
    return "\n\n".join(parts) + "\n"
