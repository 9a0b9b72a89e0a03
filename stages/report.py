"""Stage report: report/index.html (self-contained), report/report.md and results.md (the headline
tables) from earlier stages' outputs."""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

from collections.abc import Sequence

from advdenoise import report
from advdenoise.core import cli
from advdenoise.core.errors import entrypoint
from advdenoise.core.io import atomic_path, save_figure
from advdenoise.core.params import load_params


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(__doc__, argv, "--metrics", "--plots", "--out", "--results")
    params = load_params(args.params)
    inputs = report.load_inputs(params, args.metrics, args.plots)
    figure = report.headline_figure(inputs)
    headline = None
    if figure is not None:
        headline = args.out / "headline.png"
        save_figure(headline, figure)  # first: the page embeds it
    sections = report.build_report(inputs, headline)
    page = report.render_html(sections)
    markdown = report.render_markdown(sections, args.out)
    results = report.render_markdown(
        report.results_sections(inputs), args.results.parent, report.RESULTS_TITLE
    )
    missing = [s for s in report.STAGES if inputs.metrics[s] is None]
    for path, text in (
        (args.out / "index.html", page),
        (args.out / "report.md", markdown),
        (args.results, results),
    ):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    figures = sum(len(v) for v in inputs.figures.values())
    print(
        f"report: {args.out / 'index.html'} ({len(page) / 1e6:.1f} MB, {figures} figures), "
        f"{args.out / 'report.md'} and {args.results}"
        + (f"; not run: {', '.join(missing)}" if missing else "")
    )


if __name__ == "__main__":
    raise SystemExit(main())
