"""Stage train_ae_gauss: the Gaussian denoiser of denoised smoothing (Salman et al. 2020).

train_ae's architecture, trained to remove Gaussian noise of every sigma in certify.sigmas (one
blind denoiser, fresh noise per batch); the certify stage puts it in front of the frozen CNN.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from advdenoise import cli
from advdenoise.data import load_splits
from advdenoise.errors import entrypoint
from advdenoise.figures import training as figs
from advdenoise.gaussian_denoiser import train_gaussian_denoiser
from advdenoise.io import save_figure, write_csv, write_json
from advdenoise.models import MODEL_FILE, load_classifier, save_model
from advdenoise.training import write_live


@entrypoint
def main(argv: Sequence[str] | None = None) -> None:
    args = cli.parse_paths(__doc__, argv, "--data", "--classifier", "--out", "--metrics", "--plots")
    params, device = cli.start(args)
    cfg = params.train_ae_gauss
    splits = load_splits(args.data)
    cnn = load_classifier(args.classifier / MODEL_FILE, device, splits.image_size)
    run = train_gaussian_denoiser(
        cnn, splits, params.certify.sigmas, channels=params.train_ae.channels,
        latent_channels=params.train_ae.latent_channels, epochs=cfg.epochs, lr=cfg.lr,
        batch_size=cfg.batch_size, stability_weight=cfg.stability_weight, seed=params.seed,
        device=device, eval_batch_size=cli.EVAL_BATCH,
    )  # fmt: skip

    save_model(run.model, args.out / MODEL_FILE)
    write_csv(args.plots / "history.csv", pd.DataFrame(run.fit.history))
    write_live(run.fit.history, args.plots / "live")
    save_figure(
        args.plots / "training_curves.png",
        figs.training_curves(run.fit.history, run.fit.best_epoch, "Gaussian denoiser"),
    )
    write_json(args.metrics, run.metrics)


if __name__ == "__main__":
    raise SystemExit(main())
