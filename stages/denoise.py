"""Stage denoise: clean and adversarial test sets through the autoencoder, then the CNN.

Writes metrics/denoise.json (accuracies and the "resilience analysis" at the headline eps) and, under
plots/denoise/, the data and PNGs of the paper's Figs. 3, 4, 5 and 7.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: the optional CPU kernel pin (see its docstring)

from collections.abc import Sequence

import numpy as np
import torch

from advdenoise.attacks.sets import load_adversarial
from advdenoise.core import cli
from advdenoise.core.errors import entrypoint
from advdenoise.core.io import save_figure, write_csv
from advdenoise.data.splits import load_splits, to_float
from advdenoise.evaluation.denoise import analyse
from advdenoise.figures import denoise as figs
from advdenoise.models.files import load_autoencoder, load_classifier
from advdenoise.models.inference import predict_logits, reconstruct


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(
        __doc__,
        argv,
        "--data",
        "--classifier",
        "--autoencoder",
        "--adversarial",
        "--metrics",
        "--plots",
    )
    params, device = cli.start(args)
    bs, eps = params.denoise.batch_size, params.attack.eps
    splits = load_splits(args.data)
    cnn = load_classifier(args.classifier, device, splits.image_size)
    ae = load_autoencoder(args.autoencoder, device, splits.image_size)
    x, y = to_float(splits.test.x).numpy(), splits.test.y
    sets = load_adversarial(args.adversarial, x)
    for m in sets.methods:
        sets.get(m, eps)  # fail early, naming the eps, if the headline set is missing

    def denoise(a: np.ndarray) -> np.ndarray:
        return reconstruct(ae, torch.from_numpy(a), bs, device).numpy()

    def predict(a: np.ndarray) -> np.ndarray:
        return predict_logits(cnn, torch.from_numpy(a), bs, device).argmax(1).numpy()

    examples = figs.example_indices(y, params.denoise.examples_per_class, len(splits.classes))
    out = analyse(x, y, sets, eps, denoise, predict, examples, splits.classes)

    for m in sets.methods:
        write_csv(args.plots / f"accuracy_{m}.csv", out.accuracy[m])
        write_csv(args.plots / f"recon_{m}.csv", out.recon[m])
    write_csv(args.plots / "intensity.csv", out.intensity)
    save_figure(args.plots / "fig3_accuracy_vs_eps.png", figs.accuracy_figure(out.accuracy, eps))
    save_figure(args.plots / "fig4_heatmaps.png", figs.heatmap_figure(out.heat_rows, eps))
    save_figure(
        args.plots / "fig5_intensity.png", figs.intensity_figure(out.intensity, sets.methods, eps)
    )
    save_figure(args.plots / "fig7_recon_loss.png", figs.recon_figure(out.recon, eps))
    cli.write_metrics(args.metrics, out.metrics, device)


if __name__ == "__main__":
    raise SystemExit(main())
