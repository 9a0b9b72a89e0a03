"""The report's document model (paragraphs, bullets, tables, images, sections) and number formats.

Sections are built once from these blocks and rendered twice (HTML and Markdown, see `render`), so the
two documents cannot say different things.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Paragraph:
    text: str  # plain text; **bold** is the only markup


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    path: Path
    caption: str


@dataclass(frozen=True)
class Details:
    """A table folded under a one-line summary (<details>): raw metric dumps a reader opens on demand."""

    summary: str
    table: Table


Block = Paragraph | Bullets | Table | Image | Details


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return slug(self.title)


def slug(title: str) -> str:
    """GitHub-style heading anchor, also used as the HTML id so both TOCs link the same way."""
    text = re.sub(r"[^a-z0-9 _-]", "", title.lower())
    return text.strip().replace(" ", "-")


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def share(m: Mapping[str, float | bool], key: str) -> str:
    """A metric as a percentage, '-' where it is absent (or not a number)."""
    value = m.get(key)
    return "-" if value is None or isinstance(value, bool) else pct(float(value))


def num(value: float | bool) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def config_text(config: Any) -> str:
    if isinstance(config, (tuple, list)):
        return ", ".join(config_text(v) for v in config)
    if isinstance(config, dict):
        return ", ".join(f"{k}: {config_text(v)}" for k, v in config.items())
    if isinstance(config, float):
        return f"{config:g}"
    return str(config)


def metrics_table(metrics: Mapping[str, float | bool]) -> Table:
    return Table(("metric", "value"), tuple((k, num(v)) for k, v in metrics.items()))


def metrics_dump(source: str, metrics: Mapping[str, float | bool]) -> Details:
    return Details(f"All {len(metrics)} metrics of {source}", metrics_table(metrics))


def pivot(
    metrics: Mapping[str, float | bool], axis: str, rows: tuple[str, ...] = ()
) -> dict[str, Table]:
    """Keys `<row>.<axis>_<value>.<quantity>` as one table per quantity: a row per `<row>`, a column
    per value of the axis (e.g. method x eps), so a per-eps sweep reads as a grid, not a list.

    `rows` orders the rows (others follow in key order); accuracies and rates print as percentages.
    """
    number = r"\d+(?:\.\d+)?(?:e-?\d+)?"
    pattern = re.compile(rf"^(?P<row>.+?)\.{re.escape(axis)}_(?P<value>{number})\.(?P<q>.+)$")
    cells: dict[str, dict[str, dict[str, float | bool]]] = {}
    for key, value in metrics.items():
        match = pattern.match(key)
        if match:
            cells.setdefault(match["q"], {}).setdefault(match["row"], {})[match["value"]] = value
    tables = {}
    for quantity, by_row in cells.items():
        values = sorted({v for row in by_row.values() for v in row}, key=float)
        order = [r for r in rows if r in by_row] + [r for r in by_row if r not in rows]
        share = quantity.endswith(("accuracy", "rate"))
        tables[quantity] = Table(
            ("", *(f"{axis} {v}" for v in values)),
            tuple((r, *(_cell(by_row[r].get(v), share) for v in values)) for r in order),
        )
    return tables


def _cell(value: float | bool | None, share: bool) -> str:
    """A grid cell: '-' where the metric is absent, a percentage for a share, else the number."""
    if value is None:
        return "-"
    return pct(float(value)) if share and not isinstance(value, bool) else num(value)
