"""Render the report's sections through jinja2 templates: HTML with every PNG embedded, and Markdown.

The HTML is self-contained (figures as data URIs); the Markdown links the figures by a path relative
to the folder report.md is written to, so it reads on a git host. Both come from the same sections.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Sequence
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from advdenoise.report.document import Bullets, Details, Image, Paragraph, Section, Table

TITLE = "Adversarial robustness through autoencoder denoising: run report"


def _inline_html(text: str) -> Markup:
    """Escape, then render the two inline marks sections use: **bold** and `code`."""
    escaped = str(escape(text))
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", escaped))


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("advdenoise.report", "templates"),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    for name, kind in (
        ("paragraph", Paragraph),
        ("bullets", Bullets),
        ("table", Table),
        ("image", Image),
        ("details", Details),
    ):
        env.tests[name] = lambda block, kind=kind: isinstance(block, kind)
    return env


def render_html(sections: Sequence[Section]) -> str:
    env = _environment(autoescape=True)
    env.filters.update(inline=_inline_html, data_uri=_data_uri)
    return env.get_template("report.html.j2").render(title=TITLE, sections=sections)


def render_markdown(sections: Sequence[Section], out_dir: Path, title: str = TITLE) -> str:
    """Markdown with figures linked relative to `out_dir` (where report.md is written)."""

    def relative(path: Path) -> str:
        return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()

    env = _environment(autoescape=False)
    env.filters.update(
        cell=lambda text: text.replace("|", "\\|").replace("\n", " "), relative=relative
    )
    return env.get_template("report.md.j2").render(title=title, sections=sections)
