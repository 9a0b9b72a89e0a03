"""LICENSE and CITATION.cff: present, consistent with pyproject, and valid CFF 1.2.0 in the keys
the format requires (cffconvert's schema asks for the same ones)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject(key: str) -> str:
    """A top-level value of pyproject's [project] table, as written (Python 3.10 has no tomllib)."""
    found = re.search(rf"^{key} = (.+)$", (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert found, key
    return found.group(1).strip()


def _person_or_entity(author: dict) -> bool:
    return bool(author.get("name") or author.get("family-names") or author.get("given-names"))


def test_license_is_the_mit_text_pyproject_names() -> None:
    assert _pyproject("license") == '{ text = "MIT" }'
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted" in text


def test_citation_cff_has_what_the_format_requires() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["message"] and cff["title"]
    assert cff["type"] == "software" and cff["license"] == "MIT"
    assert f'"{cff["version"]}"' == _pyproject("version")
    assert cff["authors"] and all(_person_or_entity(a) for a in cff["authors"])
    (paper,) = [r for r in cff["references"] if "Autoencoder-Based Denoising" in r["title"]]
    assert paper["type"] == "article" and paper["year"] == 2024
    assert [a["family-names"] for a in paper["authors"]] == ["Ghosh", "Chatterjee"]
