"""Stage robustness: every defence under oblivious and adaptive FGSM/PGD, with the sanity checks.

Oblivious = the attack stage's sets (crafted against the bare CNN) through defence + CNN; adaptive =
white-box attacks on Sequential(defence, CNN) end to end (BPDA for JPEG and feature squeezing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from advdenoise import defences as dfn
from advdenoise import runtime
from advdenoise.adversarial import load_adversarial
from advdenoise.data import load_splits, to_float
from advdenoise.errors import entrypoint
from advdenoise.figures import robustness as figs
from advdenoise.io import save_figure, write_csv, write_json
from advdenoise.models import MODEL_FILE, load_autoencoder, load_classifier
from advdenoise.params import load_params

ARGS = ("--params", "--data", "--classifier", "--autoencoder", "--ae-adv", "--ae-guided")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    for name in (*ARGS, "--adversarial", "--metrics", "--plots"):
        p.add_argument(name, required=True, type=Path)
    return p.parse_args(argv)


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    params = load_params(args.params)
    cfg, attack = params.robustness, params.attack
    device = runtime.setup(params.seed, params.threads, params.device)
    splits = load_splits(args.data)
    cnn = load_classifier(args.classifier / MODEL_FILE, device)
    x, y = to_float(splits.test.x).numpy(), splits.test.y
    oblivious = load_adversarial(args.adversarial, x)
    dfn.check_oblivious_sets(oblivious, cfg.eps_grid, str(args.adversarial))
    subset = dfn.evaluation_subset(y, cfg.max_images, params.seed)
    x, y, oblivious = x[subset], y[subset], oblivious.take(subset)
    ae_dirs = {"ae": args.autoencoder, "ae_adv": args.ae_adv, "ae_guided": args.ae_guided}
    autoencoders = {}
    for name in (n for n in cfg.defences if n in ae_dirs):
        autoencoders[name] = load_autoencoder(ae_dirs[name] / MODEL_FILE, device, splits.image_size)
    results = dfn.evaluate_defences(
        cfg, autoencoders, cnn, x, y, oblivious, attack,
        seed=params.seed, device=device, nb_classes=len(splits.classes),
        log=lambda msg: print(f"robustness: {msg}", file=sys.stderr),
    )  # fmt: skip
    scores = dfn.robustness_metrics(results, cfg.eps)
    table = dfn.robustness_table(results, cfg.eps)
    curves = dfn.robustness_curves(results)

    write_csv(args.plots / "robustness.csv", table)
    write_csv(args.plots / "curves.csv", curves)
    for threat in dfn.THREATS:
        for method in dfn.METHODS:
            wide = dfn.wide_curves(curves, threat, method)
            write_csv(args.plots / f"curves_{threat}_{method}.csv", wide)
    write_csv(args.plots / "verdict.csv", dfn.verdicts(results, cfg.eps, attack.pgd_steps))
    save_figure(args.plots / "robustness.png", figs.table_figure(table, cfg.eps))
    save_figure(args.plots / "curves.png", figs.curves_figure(curves, cfg.eps))
    write_json(args.metrics, scores)


if __name__ == "__main__":
    raise SystemExit(main())
