"""Intake and ``audit`` read a signed spreadsheet the same way: one reader, one cleaning.

Hypothesis writes worksheets cell by cell (shared strings with rich-text and phonetic runs, inline
strings, numbers stored in any form, booleans, errors, formulas) and drives every row intake accepts
through both paths: intake's log entry (as canonical JSON, read back) and the row ``audit`` recovers
from that entry must be exactly a row the reader gives for the signed file, so an honest log never
fails its audit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import zipfile
from xml.sax.saxutils import escape

from hypothesis import event, given, settings
from hypothesis import strategies as st

from publisher.entries import association_entry, canonical_json
from publisher.intake.submission import SubmissionFiles
from verifier.cpl_verify import SHEET_COLUMNS as COLUMNS
from verifier.cpl_verify import Association, Party, Request, SheetError, read_sheet, row_of_entry

NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"

# A cell: (kind, text). Kinds: shared string (with optional phonetic run), inline string, number as
# stored, boolean, error, formula with a cached value.
texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12
)
numbers = st.from_regex(r"[+-]?[0-9]{1,6}(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?", fullmatch=True)
cells = st.one_of(
    st.tuples(st.just("s"), texts),
    st.tuples(st.just("rph"), texts),
    st.tuples(st.just("inline"), texts),
    st.tuples(st.just("n"), numbers),
    st.tuples(st.just("b"), st.sampled_from(["0", "1"])),
    st.tuples(st.just("e"), st.just("#N/A")),
    st.tuples(st.just("f"), texts),
)
valid = {
    "device_type": st.sampled_from(["ESME", "esme", " GSME ", "CHF", "ihd"]).map(lambda v: ("s", v)),
    "smets_version": st.sampled_from(["SMETS2", "smets 1", "SMETS1"]).map(lambda v: ("inline", v)),
    "image_hash": st.from_regex(r"[0-9a-fA-F]{64}", fullmatch=True).map(lambda v: ("s", v)),
}


def _xml_text(text: str) -> str:
    return f'<t xml:space="preserve">{escape(text)}</t>'


def xlsx(rows: list[list[tuple[str, str]]]) -> bytes:
    """A minimal .xlsx whose cells are stored exactly as given."""
    shared: list[str] = []
    sheet_rows_xml = []
    for r, row in enumerate(rows, 1):
        cells_xml = []
        for c, (kind, text) in enumerate(row):
            ref = f"{chr(65 + c)}{r}"
            if kind in ("s", "rph"):
                phonetic = f'<rPh sb="0" eb="1"><t>{escape("ruby")}</t></rPh>' if kind == "rph" else ""
                shared.append(f"<si><r>{_xml_text(text)}</r>{phonetic}</si>")
                cells_xml.append(f'<c r="{ref}" t="s"><v>{len(shared) - 1}</v></c>')
            elif kind == "inline":
                cells_xml.append(f'<c r="{ref}" t="inlineStr"><is>{_xml_text(text)}</is></c>')
            elif kind == "n":
                cells_xml.append(f'<c r="{ref}"><v>{text}</v></c>')
            elif kind in ("b", "e"):
                cells_xml.append(f'<c r="{ref}" t="{kind}"><v>{escape(text)}</v></c>')
            else:
                cells_xml.append(f'<c r="{ref}" t="str"><f>CONCAT("a")</f><v>{escape(text)}</v></c>')
        sheet_rows_xml.append(f'<row r="{r}">{"".join(cells_xml)}</row>')
    files = {
        "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>',
        "xl/workbook.xml": f'<workbook xmlns="{NS}" xmlns:r="{REL}"><sheets>'
        '<sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
        "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{NS}"><sheetData>{"".join(sheet_rows_xml)}</sheetData>'
        "</worksheet>",
        "xl/sharedStrings.xml": f'<sst xmlns="{NS}">{"".join(shared)}</sst>',
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


# Cells intake should accept: text with something printable in it (leading zeros, signs, bidi and
# control characters, non-ASCII), or a plain integer.
good_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"), max_size=10
).map(lambda t: "0" + t if not t.strip() or not t.isprintable() else t)
good = st.one_of(
    st.tuples(st.sampled_from(["s", "rph", "inline"]), good_text),
    st.tuples(st.just("n"), st.from_regex(r"0|[1-9][0-9]{0,5}", fullmatch=True)),
)


@st.composite
def sheets(draw: st.DrawFn) -> list[list[tuple[str, str]]]:
    header = [("inline", c) for c in COLUMNS]
    # Mostly acceptable cells (so rows are accepted and compared), sometimes anything at all.
    row = [draw(valid.get(c, good)) if draw(st.integers(0, 9)) < 9 else draw(cells) for c in COLUMNS]
    return [header, row]


MAKER = Party("Acme", "1001", "Manufacturer", "aa" * 32)
SUPPLIER = Party("Power Co", "2001", "Supplier", "bb" * 32)


@settings(max_examples=400, deadline=None)
@given(sheets())
def test_every_row_intake_logs_is_the_row_audit_reads(table: list[list[tuple[str, str]]]) -> None:
    data = xlsx(table)
    try:
        accepted, _ = read_sheet(data, "sheet.xlsx")
    except SheetError:
        return
    event("accepted" if accepted else "refused")
    files = SubmissionFiles("s", "sheet.xlsx", data, {"m.p7s": b""}, b"{}")
    request = Request("sub", "panel", {})
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    audited = {dataclasses.replace(r, row=0) for r in read_sheet(data)[0]}  # audit reads the evidence bytes
    for r in accepted:
        entry = association_entry(Association(r, MAKER, SUPPLIER), at, request, files, files.digests())
        logged = json.loads(canonical_json(entry))
        assert row_of_entry(logged) in audited, (logged, audited)


@given(st.sampled_from(["0001", "+5", "-0", "1.50", "1E3", "007"]))
def test_numbers_that_would_not_read_back_as_typed_are_refused(stored: str) -> None:
    table = [[("inline", c) for c in COLUMNS], [("s", "1001"), ("s", "Acme"), ("n", stored), ("s", "1"), ("s", "1"),
             ("s", "ESME"), ("s", "SMETS2"), ("s", "ab" * 32)]]  # fmt: skip
    rows, problems = read_sheet(xlsx(table), "sheet.xlsx")
    assert not rows and [p.rule for p in problems] == ["Z4.2-row-values"]
    assert f"model_id is the number {stored}; format the column as text" in problems[0].message


def test_a_plain_integer_cell_and_phonetic_runs_read_alike() -> None:
    table = [[("inline", c) for c in COLUMNS], [("n", "1001"), ("rph", "Acme"), ("s", "M1"), ("s", "1"), ("s", "1"),
             ("s", "ESME"), ("s", "SMETS2"), ("s", "AB" * 32)]]  # fmt: skip
    (row,), problems = read_sheet(xlsx(table), "sheet.xlsx")
    assert not problems and row.manufacturer_id == "1001" and row.manufacturer_name == "Acme"


def test_the_file_name_must_agree_with_the_bytes() -> None:
    table = [[("inline", c) for c in COLUMNS], [("s", "1001"), ("s", "Acme"), ("s", "M1"), ("s", "1"), ("s", "1"),
             ("s", "ESME"), ("s", "SMETS2"), ("s", "ab" * 32)]]  # fmt: skip
    data = xlsx(table)
    assert read_sheet(data)[0] == read_sheet(data, "Sheet.XLSX")[0]
    for name in ("sheet.csv", "sheet.txt"):
        try:
            read_sheet(data, name)
        except SheetError as exc:
            assert exc.rule == "Z4.2-spreadsheet"
        else:
            raise AssertionError(f"an .xlsx named {name} was read")


def test_unreadable_xlsx_is_refused() -> None:
    try:
        read_sheet(b"PK\x03\x04 not a zip")
    except SheetError as exc:
        assert exc.rule == "Z4.2-spreadsheet" and "cannot be read" in str(exc)
    else:
        raise AssertionError("a broken .xlsx was read")
