"""Stage certify: certified L2 accuracy by randomized smoothing, plain and denoised (ART).

Each model of certify.models (the CNN; the paper's AE + CNN; the Gaussian denoiser + CNN) is
smoothed at every sigma of certify.sigmas and certified by CERTIFY (Cohen et al. 2019) on a seeded
class-stratified subset of the test split; a few certificates are then attacked (L2 PGD + EOT), and
every image at every radius of certify.radii: certified (lower) vs attacked (upper) accuracy.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

import sys
import time
from collections.abc import Sequence

from torch import nn

from advdenoise.core import cli
from advdenoise.core.errors import entrypoint
from advdenoise.core.io import save_figure, write_csv
from advdenoise.data.splits import evaluation_subset, load_splits, to_float
from advdenoise.evaluation import certify as cert
from advdenoise.evaluation.smoothed import SMOOTHED
from advdenoise.figures import certify as figs
from advdenoise.models.files import MODEL_FILE, load_autoencoder, load_classifier


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(
        __doc__, argv, "--data", "--classifier", "--autoencoder", "--ae-gauss", "--metrics",
        "--plots",
    )  # fmt: skip
    params, device = cli.start(args)
    cfg = params.certify
    splits = load_splits(args.data)
    cnn = load_classifier(args.classifier / MODEL_FILE, device, splits.image_size)
    x, y = to_float(splits.test.x).numpy(), splits.test.y
    subset = evaluation_subset(y, cfg.max_images, params.seed, cert.SUBSET_STREAM)
    x, y = x[subset], y[subset]
    models: dict[str, nn.Module] = {}
    for name in cfg.models:
        denoiser = SMOOTHED[name].denoiser
        models[name] = cnn
        if denoiser is not None:
            ae = load_autoencoder(getattr(args, denoiser) / MODEL_FILE, device, splits.image_size)
            models[name] = nn.Sequential(ae, cnn).eval()
    results, attacked, empirical = [], {}, {}
    common = {"nb_classes": len(splits.classes), "seed": params.seed, "device": device}
    for name in cfg.models:
        for sigma in cfg.sigmas:
            start = time.perf_counter()
            c = cert.certify_model(name, models[name], x, y, sigma, cfg, **common)
            attacked[(name, sigma)] = cert.attack_certificates(c, models[name], x, cfg, **common)
            if cfg.l2_steps:
                empirical[(name, sigma)] = cert.attack_radii(c, models[name], x, cfg, **common)
            results.append(c)
            print(
                f"certify: {name} sigma={sigma:g}: {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
            )
    pixels = int(x[0].size)
    scores = cert.certify_metrics(results, attacked, empirical, cfg, pixels)
    curves = cert.certify_curves(results, max(cfg.radii))

    write_csv(args.plots / "certified_accuracy.csv", curves)
    write_csv(args.plots / "curves.csv", cert.wide_curves(curves))
    save_figure(
        args.plots / "certified_accuracy.png", figs.certified_accuracy_figure(curves, pixels)
    )
    if empirical:
        bounds = {m: cert.bounds_table(empirical, m) for m in cfg.models}
        for model, table in bounds.items():
            write_csv(args.plots / f"bounds_{model}.csv", table)
        save_figure(args.plots / "bounds.png", figs.bounds_figure(bounds))
    cli.write_metrics(args.metrics, scores, device)


if __name__ == "__main__":
    raise SystemExit(main())
