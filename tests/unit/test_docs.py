"""User docs and library docstrings state rules, not working notes."""

from __future__ import annotations

import re

from _helpers.paths import REPO_ROOT as ROOT

#: References to documents users do not have: a brief's sections, issue / item numbers of a tracker,
#: and verification diary phrases. The rule such a note stands for belongs in the text instead.
WORKING_NOTE = re.compile(r"brief §|issue \d+|item \d+ |could not be run here", re.IGNORECASE)


def _user_facing_files():
    yield from sorted((ROOT / "trtopt").rglob("*.py"))
    yield from sorted(p for p in (ROOT / "docs").rglob("*.md") if "dev" not in p.relative_to(ROOT / "docs").parts)
    yield ROOT / "README.md"
    for folder in ("bench", "examples", "tests"):  # scripts, committed results and tests are read by users too
        yield from sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".toml", ".sh")
                          and p.name != "test_docs.py" and ".venv" not in p.parts and "runs" not in p.parts)


def test_contributor_notes_are_not_user_docs():
    """No working notes in trtopt/, docs/ (docs/dev/ aside), README.md, bench/, examples/ or tests/."""
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in _user_facing_files()
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if WORKING_NOTE.search(line)]
    assert not found, "working notes in user-facing text:\n" + "\n".join(found)
