"""Stage report: report/index.html (self-contained) and report/report.md from earlier stages' outputs."""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

from collections.abc import Sequence

from advdenoise import report
from advdenoise.core import cli
from advdenoise.core.errors import entrypoint
from advdenoise.core.io import atomic_path
from advdenoise.core.params import load_params


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(__doc__, argv, "--metrics", "--plots", "--out")
    params = load_params(args.params)
    inputs = report.load_inputs(params, args.metrics, args.plots)
    sections = report.build_report(inputs)
    page = report.render_html(sections)
    markdown = report.render_markdown(sections, args.out)
    missing = [s for s in report.STAGES if inputs.metrics[s] is None]

    for name, text in (("index.html", page), ("report.md", markdown)):
        with atomic_path(args.out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    figures = sum(len(v) for v in inputs.figures.values())
    print(
        f"report: {args.out / 'index.html'} ({len(page) / 1e6:.1f} MB, {figures} figures) and "
        f"{args.out / 'report.md'}" + (f"; not run: {', '.join(missing)}" if missing else "")
    )


if __name__ == "__main__":
    raise SystemExit(main())
