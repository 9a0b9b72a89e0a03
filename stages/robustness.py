"""Stage robustness: every defence under oblivious, adaptive and gradient-free attacks, with checks.

Oblivious = the attack stage's sets (crafted against the bare CNN) through defence + CNN; adaptive =
FGSM, PGD, APGD-CE and Square on Sequential(defence, CNN) end to end (BPDA for JPEG and feature
squeezing); the reconstruction-error detector under oblivious and detector-aware PGD.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

import sys
from collections.abc import Sequence
from dataclasses import asdict

import pandas as pd

from advdenoise import cli
from advdenoise import robustness as rob
from advdenoise.errors import entrypoint
from advdenoise.figures import robustness as figs
from advdenoise.io import save_figure, write_csv
from advdenoise.verdicts import verdicts

AUTOENCODERS = {"ae": "autoencoder", "ae_adv": "ae_adv", "ae_guided": "ae_guided"}


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(
        __doc__, argv, "--data", "--classifier", "--autoencoder", "--ae-adv", "--ae-guided",
        "--adversarial", "--metrics", "--plots",
    )  # fmt: skip
    params, device = cli.start(args)
    cfg = params.robustness
    paths = rob.InputPaths(
        args.data, args.classifier,
        tuple((name, getattr(args, arg)) for name, arg in AUTOENCODERS.items()), args.adversarial,
    )  # fmt: skip
    inputs = rob.load_inputs(paths, params, device)
    x, y, oblivious = inputs.x, inputs.y, inputs.oblivious

    def log(msg: str) -> None:
        print(f"robustness: {msg}", file=sys.stderr)

    if cfg.workers > 1:
        results = rob.evaluate_in_processes(paths, params, log)
    else:
        results = rob.evaluate_defences(
            cfg, inputs.autoencoders, inputs.cnn, x, y, oblivious, params.attack,
            seed=params.seed, device=device, nb_classes=inputs.nb_classes, log=log,
        )  # fmt: skip
    scores = rob.robustness_metrics(results)
    scores.update(
        rob.evaluate_detector(
            inputs.autoencoders["ae"], inputs.cnn, x, y, oblivious, params.attack, cfg,
            seed=params.seed, device=device,
        )
    )  # fmt: skip
    table = rob.robustness_table(results)
    curves = rob.robustness_curves(results)

    write_csv(args.plots / "robustness.csv", table)
    write_csv(args.plots / "curves.csv", curves)
    for view in rob.VIEWS:
        write_csv(args.plots / f"curves_{view}.csv", rob.wide_curves(curves, view))
    write_csv(args.plots / "verdict.csv", pd.DataFrame([asdict(v) for v in verdicts(scores)]))
    save_figure(args.plots / "robustness.png", figs.table_figure(table, cfg.eps))
    save_figure(args.plots / "curves.png", figs.curves_figure(curves, cfg.eps))
    cli.write_metrics(args.metrics, scores, device)


if __name__ == "__main__":
    raise SystemExit(main())
