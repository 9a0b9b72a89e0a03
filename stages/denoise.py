"""Stage denoise: clean and adversarial test sets through the autoencoder, then the CNN.

Writes metrics/denoise.json (accuracies and the "resilience analysis" at the headline eps) and, under
plots/denoise/, the data and PNGs of the paper's Figs. 3, 4, 5 and 7.
"""

from __future__ import annotations

import advdenoise.portable  # noqa: F401 - loads first: pins the CPU kernels (see its docstring)

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from advdenoise import cli, metrics
from advdenoise.adversarial import load_adversarial
from advdenoise.data import load_splits, to_float
from advdenoise.errors import entrypoint
from advdenoise.figures import denoise as figs
from advdenoise.io import save_figure, write_csv
from advdenoise.models import load_autoencoder, load_classifier, predict_logits, reconstruct


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

    ae_x = denoise(x)
    pred_x, pred_ae_x = predict(x), predict(ae_x)
    clean_acc, den_clean_acc = metrics.accuracy(y, pred_x), metrics.accuracy(y, pred_ae_x)
    result: dict[str, float] = {
        "eps": eps, "clean_accuracy": clean_acc, "denoised_clean_accuracy": den_clean_acc,
        "recon.clean.mse": metrics.mse(x, ae_x), "recon.clean.psnr": metrics.psnr(x, ae_x),
    }  # fmt: skip
    acc_tables, recon_tables, heat_rows, adv_at, den_at = {}, {}, [], {}, {}
    examples = figs.example_indices(y, params.denoise.examples_per_class, len(splits.classes))
    for m in sets.methods:
        acc_rows, recon_rows = [], []
        for e, adv in zip(sets.eps, sets.images[m], strict=True):
            den = denoise(adv)
            pred_adv, pred_den = predict(adv), predict(den)
            acc_rows.append((e, clean_acc, metrics.accuracy(y, pred_adv),
                             metrics.accuracy(y, pred_den), den_clean_acc))  # fmt: skip
            recon_rows.append((e, result["recon.clean.mse"], metrics.mse(x, den)))
            if abs(e - eps) < 1e-12:
                adv_at[m], den_at[m] = adv, den
                flipped = (pred_x == y) & (pred_adv != y)
                result.update({
                    f"{m}.adversarial_accuracy": acc_rows[-1][2],
                    f"{m}.denoised_accuracy": acc_rows[-1][3],
                    f"{m}.recovered_rate": float(np.mean(pred_den[flipped] == y[flipped]))
                    if flipped.any() else 0.0,
                    f"{m}.recon.mse": recon_rows[-1][2],
                    f"{m}.recon.psnr": metrics.psnr(x, den),
                })  # fmt: skip
                heat_rows += figs.heatmap_rows(
                    m, examples, x, adv, den, y, (pred_x, pred_adv, pred_den), splits.classes
                )
        acc_tables[m] = pd.DataFrame(
            acc_rows, columns=["eps", "clean", "adversarial", "denoised", "denoised_clean"]
        )
        recon_tables[m] = pd.DataFrame(recon_rows, columns=["eps", "clean_mse", "adversarial_mse"])
    intensity = figs.intensity_table(x, adv_at, den_at)
    heat_rows.sort(key=lambda r: examples.index(r.index))  # images together, methods beside

    for m in sets.methods:
        write_csv(args.plots / f"accuracy_{m}.csv", acc_tables[m])
        write_csv(args.plots / f"recon_{m}.csv", recon_tables[m])
    write_csv(args.plots / "intensity.csv", intensity)
    save_figure(args.plots / "fig3_accuracy_vs_eps.png", figs.accuracy_figure(acc_tables, eps))
    save_figure(args.plots / "fig4_heatmaps.png", figs.heatmap_figure(heat_rows, eps))
    save_figure(
        args.plots / "fig5_intensity.png", figs.intensity_figure(intensity, sets.methods, eps)
    )
    save_figure(args.plots / "fig7_recon_loss.png", figs.recon_figure(recon_tables, eps))
    cli.write_metrics(args.metrics, result, device)


if __name__ == "__main__":
    raise SystemExit(main())
