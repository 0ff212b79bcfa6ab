"""HTML pieces the stats pages share: the single-process page (stats_page.py) and the
supervisor's merged one (aggregate.py) look the same because they are built of these."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

Cell = tuple[str, str]      # (label, inner HTML)
BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")

CSS = """
:root{--up:#1b873f;--down:#c62828;--drain:#d9730d;--maint:#6b7280;--checking:#b08800;
--bg:#f4f5f7;--line:#e1e4e8;--ink:#1f2933;--dim:#5f6b7a}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:var(--ink)}
header{background:var(--ink);color:#fff;padding:10px 14px;display:flex;flex-wrap:wrap;
gap:2px 14px;align-items:baseline}
header h1{font-size:18px;margin:0}
header span{color:#c5ccd6;font-size:13px}
header a{color:#9ecbff;margin-right:8px}
main{padding:10px;display:grid;gap:12px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;overflow:hidden}
h2{font-size:15px;margin:0;padding:8px 12px;border-bottom:1px solid var(--line);display:flex;
flex-wrap:wrap;gap:4px 10px;align-items:center}
h2 small{color:var(--dim);font-weight:normal;font-size:13px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:5px;text-align:right;white-space:nowrap;border-bottom:1px solid var(--line)}
th{background:#eef1f4;font-size:12px;font-weight:600;color:#3e4c59}
th:first-child,td:first-child{text-align:left}
td small{display:block;color:var(--dim);font-size:12px}
th.text,td.text{text-align:left}
tr.total td{font-weight:600;background:#f8f9fa}
tr.s-DOWN{background:#fdecea}tr.s-DRAIN{background:#fff3e0}tr.s-MAINT{background:#f0f1f3}
tr.s-CHECKING{background:#fff8db}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;
font-weight:600;letter-spacing:.02em}
.UP,.OPEN{background:var(--up)}.DOWN,.STOP{background:var(--down)}
.DRAIN,.FULL{background:var(--drain)}.MAINT{background:var(--maint)}
.CHECKING{background:var(--checking)}
form.ctl{display:flex;gap:4px}
form.ctl input{width:4em}
form.ctl *{font:inherit;font-size:12px;padding:2px 4px}
form.ctl button{padding:2px 10px;border:1px solid #9aa5b1;border-radius:4px;background:#fff;
cursor:pointer}
footer{padding:4px 14px 16px;color:var(--dim);font-size:12px}
@media (max-width:760px){
thead{display:none}
table,tbody{display:block}
tr{display:grid;grid-template-columns:1fr 1fr;column-gap:12px;padding:6px 10px;
border-bottom:6px solid var(--bg)}
td{display:flex;justify-content:space-between;align-items:baseline;gap:6px;padding:3px 0;
white-space:normal;text-align:right}
td::before{content:attr(data-label);color:var(--dim);font-size:12px;text-align:left}
td:first-child{grid-column:1/-1;font-size:15px;font-weight:600}
td:first-child::before{content:none}
td.text{grid-column:1/-1}
td small{display:inline;margin-left:6px}
}
"""

def table_section(kind: str, name: str, status: str, summary: str, headers: Sequence[str],
                  rows: Sequence[str]) -> list[str]:
    """The section's HTML in parts: a table of thousands of rows is not joined into one
    string of megabytes (the answer is written part by part, lbproxy/admin/base.py)."""
    head = "".join(f"<th{td_class(h)}>{escape(h)}</th>" for h in headers)
    return [(f'<section><h2><span>{kind} {escape(name)}</span>'
             f'<span class="badge {status}">{status}</span><small>{summary}</small></h2>'
             f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>'),
            *rows, "</tbody></table></div></section>"]


def table_row(cells: Sequence[Cell], css: str = "") -> str:
    tds = "".join(f'<td data-label="{label}"{td_class(label)}>{html}</td>'
                  for label, html in cells)
    return f'<tr class="{css}">{tds}</tr>' if css else f"<tr>{tds}</tr>"


def td_class(label: str) -> str:
    """Free text reads left-aligned; on a phone it gets a card line of its own."""
    return ' class="text"' if label in ("Check", "Admin") else ""


def badge(state: str) -> str:
    return f'<span class="badge {state}">{state}</span>'


def integer(n: int) -> str:
    return f"{n:,}"


def byte_count(n: int) -> str:
    """1023 B, 1.5 KiB, 2.0 MiB...: readable, with the exact count on hover."""
    value, unit = float(n), 0
    while value >= 1024 and unit < len(BYTE_UNITS) - 1:
        value /= 1024
        unit += 1
    shown = f"{n} B" if unit == 0 else f"{value:.1f} {BYTE_UNITS[unit]}"
    return f'<span title="{n:,} bytes">{shown}</span>'
