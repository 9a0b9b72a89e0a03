"""Stage robustness: every defence under oblivious, adaptive and gradient-free attacks, with checks.

Oblivious = the attack stage's sets (crafted against the bare CNN) through defence + CNN; adaptive =
FGSM, PGD and APGD-CE on Sequential(defence, CNN) end to end (BPDA for JPEG and feature squeezing),
and the gradient-free Square on its own; L2 APGD-CE at certify.radii; the reconstruction-error
detector under oblivious and detector-aware PGD. With data.external set, the same at robustness.eps
on another site's images (metrics external.*; refused if it shares an image with data.source).
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

import sys
from collections.abc import Sequence

from advdenoise.core import cli
from advdenoise.core.errors import entrypoint
from advdenoise.core.io import save_figure, write_csv
from advdenoise.data import sources
from advdenoise.data.splits import load_splits
from advdenoise.evaluation.detector import evaluate_detector
from advdenoise.evaluation.robustness.evaluation import evaluate_defences
from advdenoise.evaluation.robustness.external import evaluate_external
from advdenoise.evaluation.robustness.processes import (
    InputPaths,
    evaluate_in_processes,
    load_inputs,
)
from advdenoise.evaluation.robustness.summary import plot_tables, robustness_metrics
from advdenoise.figures import robustness as figs

AUTOENCODERS = {"ae": "autoencoder", "ae_adv": "ae_adv", "ae_guided": "ae_guided"}


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(
        __doc__, argv, "--data", "--classifier", "--autoencoder", "--ae-adv", "--ae-guided",
        "--adversarial", "--metrics", "--plots",
    )  # fmt: skip
    params, device = cli.start(args)
    cfg = params.robustness
    paths = InputPaths(
        args.data, args.classifier,
        tuple((name, getattr(args, arg)) for name, arg in AUTOENCODERS.items()), args.adversarial,
    )  # fmt: skip
    external = sources.load_external(params.data, params.threads)
    if external is not None:
        sources.check_disjoint(external, load_splits(args.data))
    inputs = load_inputs(paths, params, device)
    x, y, oblivious = inputs.x, inputs.y, inputs.oblivious

    def log(msg: str) -> None:
        print(f"robustness: {msg}", file=sys.stderr)

    if cfg.workers > 1:
        results = evaluate_in_processes(paths, params, log)
    else:
        results = evaluate_defences(
            cfg, inputs.autoencoders, inputs.cnn, x, y, oblivious, params.attack,
            seed=params.seed, device=device, nb_classes=inputs.nb_classes,
            l2_radii=params.certify.radii, log=log,
        )  # fmt: skip
    scores = robustness_metrics(results, cfg)
    scores.update(
        evaluate_detector(
            inputs.autoencoders["ae"], inputs.cnn, x, y, oblivious, params.attack, cfg,
            seed=params.seed, device=device,
        )
    )  # fmt: skip
    if external is not None:
        scores.update(evaluate_external(params, inputs, external, device=device, log=log))
    tables = plot_tables(results, scores, cfg.defences)
    for name, table in tables.items():
        write_csv(args.plots / name, table)
    for name, figure in figs.stage_figures(tables, cfg.eps).items():
        save_figure(args.plots / name, figure)
    cli.write_metrics(args.metrics, scores, device)


if __name__ == "__main__":
    raise SystemExit(main())
