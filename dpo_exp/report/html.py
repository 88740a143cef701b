"""`report.html`: the comparison as one self-contained page (tables and plots inside it), to share.

Each group gets a section: its title, what its runs share, a table of what differs and how each
run ended (each run a link to its folder), and its plots, embedded as PNG data. No script, no
stylesheet or image from elsewhere.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

from dpo_exp.report.plots import short, value_text
from dpo_exp.report.runs import RunGroup

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1400px; color: #222; }
h1 { font-size: 20px; margin-bottom: 4px; } h2 { font-size: 16px; margin: 28px 0 4px; }
p.meta, p.shared { color: #555; margin: 2px 0 8px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; white-space: normal; max-width: 8em; vertical-align: bottom; }
td.text, th.text { text-align: left; } td.path { white-space: normal; overflow-wrap: anywhere; }
div.table { overflow-x: auto; }
tr.failed td { color: #b00020; } tr.incomplete td { color: #8a6d00; }
img { display: block; max-width: 100%; height: auto; margin: 8px 0 16px; }
"""


def cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def breakable(name: str) -> str:
    """A column name that may wrap after each "/" (`val/rewards/accuracy`)."""
    return html.escape(name).replace("/", "/<wbr>")


def cell_html(column: str, value: Any, links: dict[str, str]) -> str:
    """A cell's text; a run's name as a link to its folder (or page) where it has one."""
    text = html.escape(cell(value))
    href = links.get(str(value)) if column == "run" else None
    return f'<a href="{html.escape(href)}">{text}</a>' if href else text


def table_html(table: pd.DataFrame, links: dict[str, str] | None = None) -> str:
    """The table, numbers right-aligned, a failed or incomplete run's row coloured by its status, each
    run's name a link (`links`: run name -> href)."""
    text_columns = {
        column
        for column in table.columns
        if not pd.api.types.is_numeric_dtype(table[column]) and not table[column].isna().all()
    }
    head = "".join(
        f'<th class="{"text" if column in text_columns else "num"}">{breakable(str(column))}</th>'
        for column in table.columns
    )
    rows = []
    for row in table.to_dict(orient="records"):
        cells = "".join(
            f'<td class="{"text" if column in text_columns else "num"}{" path" if column == "run" else ""}">'
            f"{cell_html(column, row[column], links or {})}</td>"
            for column in table.columns
        )
        rows.append(f'<tr class="{html.escape(str(row.get("status", "")))}">{cells}</tr>')
    body = "".join(rows)
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def image_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def shared_text(shared: dict[str, Any]) -> str:
    return ", ".join(f"{short(key)}={value_text(value)}" for key, value in shared.items())


def write_report(
    path: Path,
    root: str,
    groups: list[RunGroup],
    tables: dict[int, pd.DataFrame],
    plots: dict[int, list[Path]],
    everywhere: dict[str, Any],
    folded: dict[int, pd.DataFrame] | None = None,
    links: dict[str, str] | None = None,
) -> None:
    """One page: a header, then per group its shared settings, table (each run linked, `links`; and
    `folded`: its mean ± sd over seeds) and plots."""
    runs = sum(len(group.runs) for group in groups)
    failed = sum(run.status == "failed" for group in groups for run in group.runs)
    parts = [
        f"<h1>{runs} runs under {html.escape(root)}</h1>",
        f'<p class="meta">{len(groups)} group(s), {failed} failed. Made by dpo-exp compare.</p>',
    ]
    if everywhere:
        parts.append(f'<p class="shared">Every run: {html.escape(shared_text(everywhere))}</p>')
    for group in groups:
        parts.append(f"<section><h2>{group.number}. {html.escape(group.title)}</h2>")
        if group.shared:
            parts.append(f'<p class="shared">Shared: {html.escape(shared_text(group.shared))}</p>')
        parts.append(table_html(tables[group.number], links))
        if folded and group.number in folded:
            parts.append('<p class="shared">Seeds folded: mean ± sd over each setting\'s finished runs</p>')
            parts.append(table_html(folded[group.number]))
        parts += [image_html(plot) for plot in plots.get(group.number, [])]
        parts.append("</section>")
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>dpo-exp compare: {html.escape(root)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
