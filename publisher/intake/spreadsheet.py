"""Reading a CPL submission spreadsheet (.xlsx or .csv) safely into rows. No files: bytes in, rows out.

Columns (header row, any order, case and spaces ignored): manufacturer_id,
manufacturer_name, model_id, hardware_version, firmware_version,
device_type, smets_version, image_hash. Nothing is ever evaluated: a formula
cell is refused, and text that starts with ``=``, ``+``, ``-`` or ``@`` stays
plain text (reports quote it).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from verifier.cpl_verify import (
    CELL_BOOL,
    CELL_ERROR,
    CELL_FORMULA,
    CELL_NUMBER,
    CELL_TEXT,
    DEVICE_TYPES,
    MAX_UNZIPPED,
    xlsx_table,
)
from verifier.cpl_verify import SHEET_COLUMNS as COLUMNS
from verifier.cpl_verify import SheetError as VerifierSheetError
from verifier.cpl_verify import clean_cell as clean
from verifier.cpl_verify import header_key as _header_key

__all__ = ["COLUMNS", "MAX_SHEET_BYTES", "Problem", "Row", "SheetError", "clean", "read_rows", "shown"]

SMETS_VERSIONS = frozenset({"SMETS1", "SMETS2"})
MAX_ROWS = 1000
MAX_LENGTH = {"manufacturer_name": 128}  # others: 64
MAX_SHEET_BYTES = 5 * 1024 * 1024
# .xlsx is a zip: bound what it may expand to before any XML parser sees it.
MAX_RATIO = 100
MAX_MEMBERS = 200
FORMULA_PREFIXES = ("=", "+", "-", "@")
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_PLAIN_INTEGER = re.compile(r"0|[1-9][0-9]{0,17}")


class SheetError(ValueError):
    """The file as a whole cannot be read as a submission spreadsheet."""

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(message)


@dataclass(frozen=True)
class Problem:
    """A failed check on one row (``row`` is the spreadsheet's row number)."""

    check: str
    row: int
    message: str


@dataclass(frozen=True)
class Row:
    """One association the submission asks for."""

    row: int
    manufacturer_id: str
    manufacturer_name: str
    model_id: str
    hardware_version: str
    firmware_version: str
    device_type: str
    smets_version: str
    image_hash: str  # lowercase hex

    @property
    def device_model(self) -> tuple[str, str, str, str]:
        """The CPL device model key: manufacturer, model, hardware version, firmware version."""
        return (self.manufacturer_id, self.model_id, self.hardware_version, self.firmware_version)


def shown(value: str) -> str:
    """A value as reports show it: quoted, so spreadsheet-formula-like text stays inert."""
    return repr(value) if value.startswith(FORMULA_PREFIXES) else f"'{value}'"


def _check_zip(data: bytes) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise SheetError("spreadsheet format", "the .xlsx file is not a valid zip archive") from exc
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise SheetError("zip bomb", f"the .xlsx archive has {len(members)} members")
    total = 0
    for m in members:
        total += m.file_size
        if m.file_size > MAX_UNZIPPED or total > MAX_UNZIPPED:
            raise SheetError("zip bomb", f"the .xlsx archive expands to more than {MAX_UNZIPPED} bytes")
        if m.compress_size and m.file_size / m.compress_size > MAX_RATIO and m.file_size > 1024 * 1024:
            raise SheetError("zip bomb", f"member {m.filename!r} compresses {m.file_size // m.compress_size}:1")
        if m.filename.endswith((".xml", ".rels")):
            try:
                head = archive.read(m)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, ValueError, zlib.error) as exc:
                raise SheetError("spreadsheet format", f"member {m.filename!r} cannot be read ({exc})") from exc
            if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
                raise SheetError("XML entities", f"member {m.filename!r} declares a DTD or entities")


def _xlsx_rows(data: bytes) -> Iterable[tuple[int, list[str], list[str]]]:
    """(row number, cell texts as stored, cell kinds) of the first worksheet, read by the verifier's reader."""
    _check_zip(data)
    try:
        table = xlsx_table(data)
    except VerifierSheetError as exc:
        raise SheetError("spreadsheet format", str(exc)) from exc
    for number, cells in table:
        yield number, [text for _, text in cells], [kind for kind, _ in cells]


def _csv_rows(data: bytes) -> Iterable[tuple[int, list[str], list[str]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SheetError("spreadsheet format", "the .csv file is not UTF-8") from exc
    if "\x00" in text:
        raise SheetError("spreadsheet format", "the .csv file contains NUL bytes; is it really CSV?")
    try:
        for number, fields in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
            yield number, list(fields), [CELL_TEXT] * len(fields)
    except csv.Error as exc:
        raise SheetError("spreadsheet format", f"the .csv file is malformed: {exc}") from exc


def _text(value: str, kind: str, column: str, row: int) -> tuple[str, Problem | None]:
    """A cell's text as logged (the stored text, cleaned), or why the cell cannot be used."""
    if kind == CELL_FORMULA:
        return "", Problem("formula cell", row, f"{column} is a formula; submit values only")
    if kind in (CELL_BOOL, CELL_ERROR):
        return "", Problem("cell type", row, f"{column} is a {kind} cell; format the column as text")
    if kind == CELL_NUMBER and not _PLAIN_INTEGER.fullmatch(value):
        # 1.50 shows as typed but is stored as 1.5, and 0001 as 1: only a plain integer reads the same
        return "", Problem("cell type", row, f"{column} is the number {value}; format the column as text")
    return clean(value), None


def read_rows(data: bytes, filename: str) -> tuple[list[Row], list[Problem]]:
    """Parse and check a spreadsheet; returns the good rows and every problem found."""
    if len(data) > MAX_SHEET_BYTES:
        raise SheetError("file size", f"the spreadsheet is {len(data)} bytes; the limit is {MAX_SHEET_BYTES}")
    lower = filename.lower()
    if lower.endswith(".xlsx"):
        if not data.startswith(b"PK"):
            raise SheetError("spreadsheet format", "the .xlsx file is not a spreadsheet (no zip signature)")
        source = _xlsx_rows(data)
    elif lower.endswith(".csv"):
        source = _csv_rows(data)
    else:
        raise SheetError("spreadsheet format", f"{filename}: the spreadsheet must be .xlsx or .csv")

    header: dict[str, int] | None = None
    rows: list[Row] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    data_rows = 0
    for number, values, kinds in source:
        if all(not v.strip() for v in values):
            continue
        if header is None:
            keys = [_header_key(v) for v in values]
            missing = [c for c in COLUMNS if c not in keys]
            if missing:
                raise SheetError("columns", f"row {number} must be the header; missing columns: {', '.join(missing)}")
            header = {c: keys.index(c) for c in COLUMNS}
            continue
        data_rows += 1
        if data_rows > MAX_ROWS:
            raise SheetError("row count", f"more than {MAX_ROWS} rows")
        fields: dict[str, str] = {}
        row_problems: list[Problem] = []
        for column, index in header.items():
            value = values[index] if index < len(values) else ""
            text, problem = _text(value, kinds[index] if index < len(kinds) else CELL_TEXT, column, number)
            if problem:
                row_problems.append(problem)
            limit = MAX_LENGTH.get(column, 64)
            if len(text) > limit:
                row_problems.append(Problem("length", number, f"{column} is longer than {limit} characters"))
            elif not text and not problem:
                row_problems.append(Problem("missing value", number, f"{column} is empty"))
            fields[column] = text
        image_hash = fields["image_hash"].lower()
        if fields["image_hash"] and not _HASH_RE.fullmatch(image_hash):
            row_problems.append(
                Problem("hash format", number, f"image_hash {shown(fields['image_hash'])} is not 64 hex digits")
            )
        device_type = fields["device_type"].upper()
        if fields["device_type"] and device_type not in DEVICE_TYPES:
            row_problems.append(Problem("device type", number, f"unknown device type {shown(fields['device_type'])}"))
        smets = fields["smets_version"].upper().replace(" ", "")
        if fields["smets_version"] and smets not in SMETS_VERSIONS:
            row_problems.append(
                Problem("SMETS version", number, f"{shown(fields['smets_version'])} is not SMETS1 or SMETS2")
            )
        if row_problems:
            problems.extend(row_problems)
            continue
        row = Row(
            number,
            fields["manufacturer_id"],
            fields["manufacturer_name"],
            fields["model_id"],
            fields["hardware_version"],
            fields["firmware_version"],
            device_type,
            smets,
            image_hash,
        )
        if row.device_model in seen:
            first = seen[row.device_model]
            problems.append(Problem("duplicate row", number, f"repeats the device model of row {first}"))
            continue
        seen[row.device_model] = number
        rows.append(row)
    if header is None:
        raise SheetError("columns", "the spreadsheet is empty (no header row)")
    if not rows and not problems:
        raise SheetError("row count", "the spreadsheet has a header but no rows")
    return rows, problems
