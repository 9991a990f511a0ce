"""Every test the README's guarantees table names exists (a rename left one pointing nowhere)."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CITED = re.compile(r"(test_\w+\.py)::(test_\w+)")


def test_every_test_the_readme_names_exists() -> None:
    cited = set(CITED.findall((REPO / "README.md").read_text()))
    assert len(cited) > 50
    missing = []
    for file, name in sorted(cited):
        sources = list((REPO / "tests").rglob(file))
        if not any(re.search(rf"def {name}\(", s.read_text()) for s in sources):
            missing.append(f"{file}::{name}")
    assert missing == []
