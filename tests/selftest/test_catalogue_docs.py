"""docs/checks.md is the public definition of every column: it and the registry must agree."""
from __future__ import annotations

import re
from pathlib import Path

from grl_conformance import checks as catalogue

DOC = Path(__file__).resolve().parents[2] / "docs" / "checks.md"
HEADING = re.compile(r"^### `([^`]+)`\s*$", re.MULTILINE)


def documented_ids() -> list[str]:
    return HEADING.findall(DOC.read_text())


def test_the_parser_finds_headings():
    """Guards the markup itself: a changed heading style would make both checks below vacuous."""
    assert len(documented_ids()) >= 20


def test_every_registered_check_is_documented():
    missing = [c.id for c in catalogue.all_checks() if c.id not in documented_ids()]
    assert not missing, f"checks without a '### `id`' section in docs/checks.md: {missing}"


def test_every_documented_check_is_registered():
    registered = {c.id for c in catalogue.all_checks()}
    ids = documented_ids()
    unknown = [i for i in ids if i not in registered]
    assert not unknown, f"docs/checks.md documents checks that do not exist: {unknown}"
    assert len(ids) == len(set(ids)), "a check is documented twice"


def test_documented_in_catalogue_order():
    """The page reads in report column order, so a reader finds a column where the report has it."""
    assert documented_ids() == [c.id for c in catalogue.all_checks()]


def test_no_citation_of_a_file_outside_the_repository():
    """Code, docs and generated reports once cited DESIGN.md, which is not in the repository."""
    root = DOC.parents[1]
    offenders = [str(p.relative_to(root)) for folder in ("harness", "impls", "tests", "docs")
                 for p in (root / folder).rglob("*") if p.suffix in (".py", ".md")
                 and p.name != Path(__file__).name and "DESIGN" + ".md" in p.read_text()]
    assert not offenders, offenders


QUESTION = re.compile(r"^Question: (.+)$", re.MULTILINE)


def test_each_columns_text_is_written_once():
    """docs/checks.md is the one source of a column's question: another page links to it instead
    of copying it (docs/contexts.md once repeated eight of them word for word)."""
    root = DOC.parents[1]
    questions = [q[:60] for q in QUESTION.findall(DOC.read_text()) if len(q) >= 60]
    assert len(questions) >= 20
    pages = [p for p in (*(root / "docs").rglob("*.md"), root / "README.md") if p != DOC]
    copied = sorted({f"{p.relative_to(root)}: {q}" for p in pages for q in questions
                     if q in p.read_text()})
    assert not copied, "column text copied from docs/checks.md (link to it instead):\n" + "\n".join(copied)
