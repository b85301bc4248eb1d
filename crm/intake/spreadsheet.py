"""Reading and writing spreadsheets safely: .xlsx (openpyxl) and .csv.

- A file is checked before openpyxl touches it: it must be a real xlsx (a zip with the workbook parts),
  and its zip members may not expand past ``MAX_UNCOMPRESSED`` in total or by more than ``MAX_RATIO``:1
  (a zip bomb is refused from the zip directory alone, nothing is inflated). Old .xls and anything else
  are refused with a clear reason. CSV is decoded as UTF-8 (with or without BOM) or GB18030 (what Excel
  on Chinese Windows writes).
- ``safe_cell`` escapes values a spreadsheet would run as a formula (=, +, -, @, tab, CR: OWASP "CSV
  injection"), so an error file never hands ``=cmd|…`` back to Excel. Other features exporting customer
  data should use it too.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

from flask_babel import gettext as _

MAX_ROWS = 50_000
PROGRESS_ROWS = 1000
MAX_UNCOMPRESSED = 200 * 1024 * 1024
MAX_RATIO = 100
MAX_MEMBERS = 5_000
XLSX_PARTS = {"[Content_Types].xml", "xl/workbook.xml"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?[\d\s().\-]+$")


class SpreadsheetError(ValueError):
    """The file cannot be read; ``message`` says why in words a user understands."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def kind_of(filename: str, head: bytes) -> str:
    """``xlsx`` or ``csv`` from the name and the first bytes; refuses the rest."""
    name = (filename or "").lower()
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise SpreadsheetError("xls", _("这是旧版 .xls 文件,请在 Excel 中另存为 .xlsx 或 .csv 后再导入。"))
    if head.startswith(b"PK\x03\x04") or name.endswith((".xlsx", ".xlsm")):
        return "xlsx"
    if name.endswith((".csv", ".txt")):
        return "csv"
    raise SpreadsheetError("not_spreadsheet", _("只支持 .xlsx 和 .csv 文件。"))


def check(path: Path, kind: str) -> None:
    """Refuse what is not a spreadsheet, and zip bombs, before any parser opens the file."""
    if kind == "csv":
        with open(path, "rb") as fh:
            head = fh.read(65536)
        if b"\x00" in head:
            raise SpreadsheetError("not_spreadsheet", _("文件不是文本格式的 CSV。"))
        return
    if not zipfile.is_zipfile(path):
        raise SpreadsheetError("not_spreadsheet", _("文件不是有效的 Excel (.xlsx) 文件。"))
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SpreadsheetError("not_spreadsheet", _("文件不是有效的 Excel (.xlsx) 文件。")) from exc
    if len(infos) > MAX_MEMBERS:
        raise SpreadsheetError("zip_bomb", _("文件结构异常 (包含过多部件),已拒绝。"))
    total = 0
    for info in infos:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if total > MAX_UNCOMPRESSED or (info.file_size > 1024 * 1024 and ratio > MAX_RATIO):
            raise SpreadsheetError(
                "zip_bomb", _("文件解压后异常巨大 (疑似压缩炸弹),已拒绝。请检查文件来源。")
            )
    names = {info.filename for info in infos}
    if not names.issuperset(XLSX_PARTS):
        raise SpreadsheetError("not_spreadsheet", _("文件不是有效的 Excel (.xlsx) 文件。"))


def _cell_text(value) -> str | int | float | datetime | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 13800138000.0 from a numeric phone column
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day)
    return value


def read(
    path: Path, kind: str, progress: Callable[[int], None] | None = None
) -> tuple[list[str], list[tuple[int, list]]]:
    """Headers and (row number, values) of the first sheet; empty rows skipped; at most ``MAX_ROWS``.
    ``progress(rows read)`` is called every ``PROGRESS_ROWS`` rows (a background task's heartbeat)."""
    raw_rows = _read_xlsx(path) if kind == "xlsx" else _read_csv(path)
    headers: list[str] | None = None
    rows: list[tuple[int, list]] = []
    for number, values in raw_rows:
        if progress is not None and number % PROGRESS_ROWS == 0:
            progress(len(rows))
        values = [_cell_text(v) for v in values]
        if not any(v not in (None, "") for v in values):
            continue
        if headers is None:
            headers = [str(v).strip() if v is not None else "" for v in values]
            continue
        if len(rows) >= MAX_ROWS:
            raise SpreadsheetError(
                "too_many_rows", _("一次最多导入 %(n)s 行,请拆分文件后分批导入。", n=MAX_ROWS)
            )
        rows.append((number, values))
    if headers is None:
        raise SpreadsheetError("empty", _("文件是空的,没有找到表头。"))
    width = len(headers)
    while width and not headers[width - 1]:
        width -= 1
    headers = headers[:width]
    return headers, [(n, (v + [None] * width)[:width]) for n, v in rows]


def head(path: Path, kind: str, samples: int = 3) -> tuple[list[str], list[list], int | None]:
    """Headers, the first ``samples`` rows and the row count as the file states it (xlsx: the sheet's
    dimension; csv: its line count), without reading the whole file: the upload answers at once and the
    preview (a background task) reads every row."""
    headers: list[str] | None = None
    first: list[list] = []
    raw_rows = None
    if kind == "xlsx":
        try:
            raw_rows = iter(_xlsx_head(path, samples))
        except Exception:  # an unusual layout: openpyxl reads it (slower: all shared strings first)
            raw_rows = None
    if raw_rows is None:
        raw_rows = _read_xlsx(path, want_size=True) if kind == "xlsx" else _read_csv(path)
    stated: int | None = None
    for number, values in raw_rows:
        if number == 0:  # the xlsx reader's first item is the sheet's stated size
            stated = values[0]
            continue
        values = [_cell_text(v) for v in values]
        if not any(v not in (None, "") for v in values):
            continue
        if headers is None:
            headers = [str(v).strip() if v is not None else "" for v in values]
            header_row = number
            continue
        first.append(values)
        if len(first) >= samples:
            break
    if hasattr(raw_rows, "close"):
        raw_rows.close()
    if headers is None:
        raise SpreadsheetError("empty", _("文件是空的,没有找到表头。"))
    width = len(headers)
    while width and not headers[width - 1]:
        width -= 1
    if kind == "csv":
        with open(path, "rb") as fh:
            stated = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
    estimate = max(0, stated - header_row) if stated else None
    if estimate is not None and estimate > MAX_ROWS:
        raise SpreadsheetError("too_many_rows", _("一次最多导入 %(n)s 行,请拆分文件后分批导入。", n=MAX_ROWS))
    return headers[:width], [(v + [None] * width)[:width] for v in first], estimate


def _read_xlsx(path: Path, want_size: bool = False):
    from openpyxl import load_workbook

    # A file object, not the path: openpyxl judges paths by their extension, and uploads have none.
    with open(path, "rb") as fh:
        try:
            workbook = load_workbook(fh, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many kinds for a broken file
            raise SpreadsheetError("not_spreadsheet", _("无法读取该 Excel 文件,文件可能已损坏。")) from exc
        try:
            sheet = workbook.worksheets[0]
            if want_size:
                yield 0, [sheet.max_row or _count_rows(path, getattr(sheet, "_worksheet_path", ""))]
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                yield number, list(values)
        finally:
            workbook.close()


_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_CELL_REF = re.compile(r"([A-Z]+)(\d+)")


def _column(letters: str) -> int:
    index = 0
    for ch in letters:
        index = index * 26 + ord(ch) - 64
    return index - 1


def _xlsx_head(path: Path, samples: int) -> list[tuple[int, list]]:
    """The sheet's stated size and its first rows, read straight from the zip: the first sheet's XML up to
    the rows wanted and the shared strings up to the highest one they use (openpyxl would parse every
    shared string of a 50,000-row file first). Yields what ``_read_xlsx(want_size=True)`` does."""
    from xml.etree.ElementTree import iterparse

    with zipfile.ZipFile(path) as zf:
        from xml.etree.ElementTree import fromstring

        workbook = fromstring(zf.read("xl/workbook.xml"))
        first_sheet = workbook.find(f"{_NS}sheets/{_NS}sheet")
        rel_id = first_sheet.get(f"{_REL_NS}id")
        rels = fromstring(zf.read("xl/_rels/workbook.xml.rels"))
        target = next(r.get("Target") for r in rels if r.get("Id") == rel_id)
        member = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
        rows: list[tuple[int, list]] = []
        stated = None
        wanted = samples + 1
        with zf.open(member) as fh:
            for _event, element in iterparse(fh, events=("end",)):
                tag = element.tag
                if tag == f"{_NS}dimension":
                    ref = element.get("ref", "").split(":")[-1]
                    found = _CELL_REF.fullmatch(ref)
                    stated = int(found.group(2)) if found else None
                elif tag == f"{_NS}row":
                    cells: dict[int, tuple[str | None, str | None]] = {}
                    for position, c in enumerate(element.iter(f"{_NS}c")):
                        found = _CELL_REF.fullmatch(c.get("r") or "")
                        col = _column(found.group(1)) if found else position
                        kind = c.get("t")
                        if kind == "inlineStr":
                            text = "".join(t.text or "" for t in c.iter(f"{_NS}t"))
                        else:
                            v = c.find(f"{_NS}v")
                            text = v.text if v is not None else None
                        cells[col] = (kind, text)
                    number = int(element.get("r") or len(rows) + 1)
                    element.clear()
                    if any(text not in (None, "") for _k, text in cells.values()):
                        rows.append((number, cells))
                        if len(rows) >= wanted:
                            break
        needed = {int(text) for _n, cells in rows for kind, text in cells.values() if kind == "s" and text}
        strings: list[str] = []
        if needed:
            with zf.open("xl/sharedStrings.xml") as fh:
                top = max(needed)
                for _event, element in iterparse(fh, events=("end",)):
                    if element.tag == f"{_NS}si":
                        strings.append("".join(t.text or "" for t in element.iter(f"{_NS}t")))
                        element.clear()
                        if len(strings) > top:
                            break
    if stated is None:
        stated = _count_rows(path, member)
    out: list[tuple[int, list]] = [(0, [stated])]
    for number, cells in rows:
        width = max(cells) + 1
        values: list = [None] * width
        for col, (kind, text) in cells.items():
            if kind == "s":
                values[col] = strings[int(text)]
            elif kind in ("str", "inlineStr"):
                values[col] = text
            elif kind == "b":
                values[col] = text == "1"
            elif text is not None:
                number_value = float(text)
                values[col] = int(number_value) if number_value.is_integer() else number_value
        out.append((number, values))
    return out


_ROW_TAG = re.compile(rb"<(?:\w+:)?row[\s>/]")


def _count_rows(path: Path, member: str) -> int | None:
    """The number of row elements of a sheet that states no size (written by streaming writers): the
    sheet's XML scanned in blocks, nothing parsed."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(member.lstrip("/")) as fh:
            count, tail = 0, b""
            for block in iter(lambda: fh.read(1 << 20), b""):
                data = tail + block
                count += len(_ROW_TAG.findall(data))
                tail = data[-16:]
                count -= len(_ROW_TAG.findall(tail))  # counted again with the next block
            return count + len(_ROW_TAG.findall(tail))
    except (KeyError, OSError, zipfile.BadZipFile):
        return None


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise SpreadsheetError("encoding", _("无法识别 CSV 文件的编码,请另存为 UTF-8 编码后再导入。"))


def _read_csv(path: Path):
    text = _decode(path.read_bytes())
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",\t;")
    except csv.Error:
        dialect = csv.excel
    yield from enumerate(csv.reader(io.StringIO(text), dialect), start=1)


def safe_cell(value):
    """A value that a spreadsheet shows as text: formula-looking strings get a leading apostrophe."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        if value[0] in "+-" and _PLAIN_NUMBER.match(value):
            return value
        return "'" + value
    return value


def write(headers: list[str], rows: list[list], fmt: str) -> bytes:
    """An .xlsx or .csv (UTF-8 with BOM, so Excel reads the Chinese) of ``rows``, every cell escaped."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([safe_cell(h) for h in headers])
        for row in rows:
            writer.writerow([safe_cell("" if v is None else v) for v in row])
        return ("\ufeff" + buffer.getvalue()).encode("utf-8")
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append([_as_text(h) for h in headers])
    for row in rows:
        sheet.append([_as_text(v) for v in row])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _as_text(value):
    """An xlsx cell value that openpyxl stores as a string, never as a formula."""
    if value is None:
        return None
    if isinstance(value, int | float | datetime):
        return value
    return safe_cell(str(value))
