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


Block = Paragraph | Bullets | Table | Image


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
