"""The README's "Submission rules" table is the verifier's ``RULES``: every ID, in order, with its clause
and statement, so the documentation cannot drift from what intake, ``audit`` and ``check-submission`` run."""

from __future__ import annotations

import re
from pathlib import Path

from verifier.cpl_verify import MAX_SIGNING_SKEW, RULES

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = "| ID | clause | what it requires |"


def expected_table() -> str:
    """The table as the README must hold it (paste this when a rule changes)."""
    rows = [f"| `{r.id}` | {r.clause} | {r.statement} |" for r in RULES]
    return "\n".join([HEADER, "| --- | --- | --- |", *rows])


def rules_section() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^### Submission rules\n(.*?)(?=^##)", text, re.S | re.M)
    assert match, "README.md has no '### Submission rules' section"
    return match.group(1)


def table_rows(section: str) -> list[tuple[str, str, str]]:
    lines = section.splitlines()
    assert HEADER in lines, f"no rules table with the header {HEADER!r}"
    rows = []
    for line in lines[lines.index(HEADER) + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, line
        rule_id = cells[0].strip("`")
        rows.append((rule_id, cells[1], cells[2]))
    return rows


def test_the_readme_lists_every_rule_in_order_with_its_clause() -> None:
    rows = table_rows(rules_section())
    assert [r[0] for r in rows] == [r.id for r in RULES], f"expected:\n{expected_table()}"
    assert [(r[0], r[1]) for r in rows] == [(r.id, r.clause) for r in RULES], f"expected:\n{expected_table()}"
    assert rows == [(r.id, r.clause, r.statement) for r in RULES], f"expected:\n{expected_table()}"


def test_the_readme_states_the_signing_skew_limit_of_the_rules() -> None:
    limit = int(MAX_SIGNING_SKEW.total_seconds())
    section = " ".join(rules_section().split())
    assert "signing_time_skew_seconds" in section
    assert f"at most {limit} s" in section
    assert "MAX_SIGNING_SKEW" in section
