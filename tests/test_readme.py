"""The README quotes figures only as links to the metric they come from, and each agrees with it."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from advdenoise.core.io import flatten, read_json

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# [shown figure](file "metric key"): keys (space-separated, one per number shown) of a JSON
# file's flattened metrics, or a seeds summary's `figure` row, whose mean (and sd, for
# "mean ± sd") the text shows
SOURCE = re.compile(r'\[([^\]]+)\]\(((?:metrics|bench/results)/[^ )]+) "([^"]+)"\)')
LINKS = SOURCE.findall(README)


def source_values(path: Path, key: str) -> tuple[float, ...]:
    if path.suffix == ".csv":
        rows = {r["figure"]: r for r in csv.DictReader(path.open(encoding="utf-8"))}
        return (float(rows[key]["mean"]), float(rows[key]["sd"]))
    flat = flatten(read_json(path))
    values = [flat[k] for k in key.split()]
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values), key
    return tuple(float(v) for v in values)


def agrees(shown: str, values: tuple[float, ...]) -> bool:
    """Each number of `shown` (x 100 where it says %) is its value rounded to the digits shown."""
    numbers = re.findall(r"-?\d+(?:\.\d+)?", shown)
    if not numbers or len(numbers) > len(values):
        return False
    scale = 100.0 if shown.rstrip().endswith("%") else 1.0
    for number, value in zip(numbers, values, strict=False):
        decimals = len(number.split(".")[1]) if "." in number else 0
        if abs(float(number) - scale * value) > 0.5 * 10**-decimals + 1e-9:
            return False
    return True


def test_the_readme_quotes_figures_from_the_metrics_and_stays_short():
    assert len(LINKS) >= 20
    assert len(README.splitlines()) <= 200


@pytest.mark.parametrize(("shown", "file", "key"), LINKS, ids=[k for _, _, k in LINKS])
def test_a_readme_figure_agrees_with_its_metric(shown, file, key):
    path = ROOT / file
    assert path.is_file(), f"README links a figure to {file}, which does not exist"
    values = source_values(path, key)
    assert agrees(shown, values), f"README says {shown} for {file}:{key}; the file holds {values}"


def test_no_findings_figure_without_its_source():
    findings = README.split("## Findings", 1)[1].split("\n## ", 1)[0]
    bare = re.findall(r"\d+\.\d+ ?[%\]]|\d+\.\d+ ± |\d+\.\d+–", SOURCE.sub("", findings))
    assert not bare, f"figures in the README's Findings that link to no metric: {bare}"


def test_the_check_fires_on_a_figure_that_disagrees():
    assert agrees("87.4%", (0.874031,)) and not agrees("87.5%", (0.874031,))
    assert agrees("58.3 ± 12.3%", (0.5833, 0.1228)) and not agrees("58.3 ± 12.4%", (0.5833, 0.1228))
    assert agrees("0.0625", (0.0625,)) and agrees("436", (436.42,)) and not agrees("4", (5.0,))
    assert agrees("77.5–84.2%", (0.7751, 0.8419))  # a confidence interval: two keys
    assert not agrees("no figure", (1.0,)) and not agrees("1 and 2", (1.0,))


@pytest.mark.parametrize(
    "page", ["README.md", *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
)
def test_every_relative_link_of_the_documentation_resolves(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)(?: \"[^\"]*\")?\)", text)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and t.split("#")[0]]
    assert local or page != "README.md"
    missing = [t for t in local if not (ROOT / page).parent.joinpath(t).exists()]
    assert not missing, f"{page} links to missing files: {missing}"
