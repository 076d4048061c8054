"""An evaluation's tables as one self-contained HTML page for the Snakemake report (which shows HTML in the page
and offers CSV files only as downloads): each table sortable by a click on its header, structure names beside
their colour."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vecset.atomic import write_bytes_atomic

_SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((th) => th.addEventListener("click", () => {
  const table = th.closest("table"), body = table.tBodies[0], column = th.cellIndex;
  const ascending = th.dataset.order !== "ascending";
  table.querySelectorAll("th").forEach((other) => delete other.dataset.order);
  th.dataset.order = ascending ? "ascending" : "descending";
  const key = (row) => {
    const text = row.cells[column].dataset.value ?? row.cells[column].textContent;
    const number = parseFloat(text);
    return Number.isNaN(number) ? text : number;
  };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === "" || y === "") return (x === "") - (y === "");  // empty cells last either way
    if (typeof x === "number" && typeof y === "number") return ascending ? x - y : y - x;
    return ascending ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));
  });
  body.append(...rows);
}));
"""

_STYLE = """
body { font: 13px sans-serif; margin: 10px; }
table { border-collapse: collapse; margin-bottom: 18px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; cursor: pointer; position: sticky; top: 0; }
th[data-order="ascending"]::after { content: " \\25B2"; }
th[data-order="descending"]::after { content: " \\25BC"; }
td.text { text-align: left; white-space: nowrap; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
p.caption { color: #444; max-width: 60em; }
"""


@dataclass(frozen=True)
class Section:
    """One table on the page: a heading, a sentence on what it shows, the table."""

    title: str
    caption: str
    table: pd.DataFrame


def _cell(value: object, colours: dict[str, str]) -> str:
    if isinstance(value, float | np.floating):
        number = float(value)
        if np.isnan(number):
            return '<td data-value="">—</td>'
        shown = f"{number:.4g}" if abs(number) < 1e4 else f"{number:.0f}"  # volumes in mm³ as whole numbers
        return f'<td data-value="{number!r}">{shown}</td>'
    if isinstance(value, int | np.integer):
        return f"<td>{value}</td>"
    text = html.escape(str(value))
    swatch = f'<span class="swatch" style="background:{colours[str(value)]}"></span>' if str(value) in colours else ""
    return f'<td class="text" data-value="{text}">{swatch}{text}</td>'


def table_html(table: pd.DataFrame, colours: dict[str, str]) -> str:
    """One sortable table; cells naming a structure get its colour swatch."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = ["<tr>" + "".join(_cell(v, colours) for v in row) + "</tr>" for row in table.itertuples(index=False)]
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def tables_page(title: str, sections: list[Section], colours: dict[str, str]) -> str:
    """The page: every section's heading, caption and table, and the sorting script, nothing fetched."""
    body = "".join(
        f"<h2>{html.escape(s.title)}</h2><p class='caption'>{html.escape(s.caption)}</p>{table_html(s.table, colours)}"
        for s in sections
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}<script>{_SORT_SCRIPT}</script>"
        "</body></html>"
    )


def write_tables_page(path: str | Path, title: str, sections: list[Section], colours: dict[str, str]) -> None:
    """Write :func:`tables_page` to ``path`` atomically."""
    write_bytes_atomic(Path(path), tables_page(title, sections, colours).encode("utf-8"))
