"""CSV export of dashboard tables: UTF-8 with BOM (Excel opens Chinese) and formula-injection safe."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

# A cell starting with one of these is a formula (or becomes one) in Excel / LibreOffice / Sheets.
DANGEROUS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """The cell as text; one that could be read as a formula gets a leading apostrophe.

    Numbers are written as numbers (a negative amount keeps its sign), only text is neutralised.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, int | float | Decimal):
        return str(value)
    text = str(value)
    if text.startswith(DANGEROUS):
        return "'" + text
    return text


def to_csv(head: list[str], rows: list[list]) -> bytes:
    """The table as CSV bytes with a UTF-8 byte-order mark."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in head])
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")
