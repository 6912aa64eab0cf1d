"""One self-contained HTML file: inline CSS, figures as base64 PNG data URIs, no external URL."""
from __future__ import annotations

import base64
import html

from .doc import Code, Document, Heading, Image, Table, Text

__all__ = ["render_html"]

CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;color:#1f2933;margin:0;background:#f7f9fb;font-size:14px;line-height:1.45}
main{max-width:1200px;margin:0 auto;padding:24px 36px 60px 36px;background:white}
h1{font-size:26px;margin:8px 0 4px 0}
h2{font-size:21px;margin:34px 0 8px 0;padding-top:10px;border-top:2px solid #d9e2ec}
h3{font-size:17px;margin:24px 0 6px 0;color:#243b53}
h4{font-size:15px;margin:16px 0 4px 0;color:#334e68}
.subtitle{color:#52606d;margin-bottom:12px}
p.note{color:#52606d;font-size:13px}
p.warn{background:#fff7e6;border-left:4px solid #E69F00;padding:6px 10px}
nav.toc{background:#f0f4f8;padding:10px 18px;border-radius:6px;font-size:13px;columns:2}
nav.toc a{color:#0b5394;text-decoration:none}
nav.toc .l3{margin-left:16px}
.tablewrap{overflow-x:auto;margin:6px 0 4px 0}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e4e7eb;padding:3px 9px;text-align:right;white-space:nowrap}
th{background:#f0f4f8;border-bottom:2px solid #bcccdc;position:sticky;top:0}
td:first-child,th:first-child,td.txt,th.txt{text-align:left}
td.txt{white-space:normal;min-width:4em}
tr:hover td{background:#f7fbff}
.caption{font-size:12.5px;color:#52606d;margin:2px 0 12px 0}
figure{margin:10px 0 16px 0}
figure img{max-width:100%;height:auto;border:1px solid #e4e7eb}
figcaption{font-size:12.5px;color:#52606d}
details{margin:6px 0 10px 0}
summary{cursor:pointer;color:#0b5394}
pre{background:#f0f4f8;padding:8px 10px;font-size:12px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
"""


TXT = ' class="txt"'
NL = "\n"


def _numeric(s: str) -> bool:
    """Right-align numbers (and the – of a missing one); text cells go left."""
    if s == "–":
        return True
    s = s.lstrip("+-−")
    head = s.split()[0] if s.split() else ""
    return head[:1].isdigit() and not any(ch.isalpha() and ch != "e" for ch in head)


def _table(t: Table) -> str:
    df = t.frame
    first = [str(v) for v in df.iloc[0]] if len(df) else [""] * len(df.columns)
    head = "".join(f"<th{'' if _numeric(v) else TXT}>{html.escape(str(c))}</th>" for c, v in zip(df.columns, first))
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            s = str(v)
            attr = "" if _numeric(s) else TXT
            cells.append(f"<td{attr}>{html.escape(s).replace(NL, '<br>')}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    out = (f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
           + (f'<div class="caption">{html.escape(t.caption)}</div>' if t.caption else ""))
    if t.collapsed:
        return f"<details><summary>{html.escape(t.caption or 'table')}</summary>{out}</details>"
    return out


def render_html(doc: Document) -> str:
    parts = [f"<h1>{html.escape(doc.title)}</h1>"]
    if doc.subtitle:
        parts.append(f'<div class="subtitle">{html.escape(doc.subtitle)}</div>')
    toc = doc.toc()
    if toc:
        items = "".join(f'<div class="l{h.level}"><a href="#{h.anchor}">{html.escape(h.text)}</a></div>'
                        for h in toc if h.level in (2, 3))
        parts.append(f'<nav class="toc"><b>Contents</b>{items}</nav>')
    for b in doc.blocks:
        if isinstance(b, Heading):
            lvl = min(max(b.level, 2), 4)
            parts.append(f'<h{lvl} id="{b.anchor}">{html.escape(b.text)}</h{lvl}>')
        elif isinstance(b, Text):
            cls = "" if b.kind == "p" else f' class="{b.kind}"'
            parts.append(f"<p{cls}>{html.escape(b.text)}</p>")
        elif isinstance(b, Table):
            parts.append(_table(b))
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            cap = f"<figcaption>{html.escape(b.caption)}</figcaption>" if b.caption else ""
            parts.append(f'<figure><img alt="{html.escape(b.caption or b.name)}" '
                         f'src="data:image/png;base64,{data}">{cap}</figure>')
        elif isinstance(b, Code):
            pre = f"<pre>{html.escape(b.text)}</pre>"
            parts.append(f"<details><summary>{html.escape(b.caption or 'details')}</summary>{pre}</details>"
                         if b.collapsed else (f'<div class="caption">{html.escape(b.caption)}</div>' if b.caption else "") + pre)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(doc.title)}</title>"
            f"<style>{CSS}</style></head><body><main>\n" + "\n".join(parts) + "\n</main></body></html>\n")
