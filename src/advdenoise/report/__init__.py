"""The run report: one self-contained HTML page and a Markdown twin, built from stage outputs only."""

# The report computes nothing new. It reads params.yaml, metrics/<stage>.json and plots/<stage>/*.png
# (`inputs`), phrases conclusions from those numbers with the explicit thresholds of `rules`, builds one
# document model (`document`: the sections of `paper`, `robustness` and `conclusions`) and renders it
# twice through jinja2 templates (`render`). Output is deterministic: fixed section order, sorted keys,
# no timestamps.

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from advdenoise.report.conclusions import conclusions
from advdenoise.report.document import Image, Section
from advdenoise.report.inputs import STAGES, Inputs, load_inputs
from advdenoise.report.l2 import l2_section
from advdenoise.report.paper import (
    attacks_section,
    clean_models,
    configuration,
    denoise_section,
    embed_section,
    paper_vs_run,
)
from advdenoise.report.render import render_html, render_markdown
from advdenoise.report.results import TITLE as RESULTS_TITLE
from advdenoise.report.results import results_sections
from advdenoise.report.robustness import certify_section, external_section, robustness_section
from advdenoise.report.summary import headline_figure, summary

__all__ = [
    "RESULTS_TITLE",
    "STAGES",
    "Inputs",
    "build_report",
    "headline_figure",
    "load_inputs",
    "render_html",
    "render_markdown",
    "results_sections",
]


def other_figures(inputs: Inputs, shown: Iterable[Path]) -> Section | None:
    """PNGs of stages this report has no section for (none today; kept so nothing is hidden)."""
    seen = set(shown)
    rest = [img for s in STAGES for img in inputs.figures[s] if img.path not in seen]
    return Section("Other figures", list(rest)) if rest else None


def build_report(inputs: Inputs, headline: Path | None = None) -> list[Section]:
    """The report's sections; `headline` is the PNG of `headline_figure`, shown on the first screen."""
    found = [
        summary(inputs, headline),
        conclusions(inputs),
        paper_vs_run(inputs),
        configuration(inputs),
        clean_models(inputs),
        attacks_section(inputs),
        denoise_section(inputs),
        embed_section(inputs),
        robustness_section(inputs),
        external_section(inputs),
        certify_section(inputs),
        l2_section(inputs),
    ]
    sections = [s for s in found if s is not None]
    shown = [b.path for s in sections for b in s.blocks if isinstance(b, Image)]
    extra = other_figures(inputs, shown)
    return sections + ([extra] if extra else [])
